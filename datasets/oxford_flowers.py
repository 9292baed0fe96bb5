"""Oxford Flowers-102: `oxford_flowers/{jpg/, imagelabels.mat, cat_to_name.json,
split_zhou_OxfordFlowers.json}`."""

import json
import os
from collections import defaultdict

from dassl.data.datasets import DATASET_REGISTRY

from .base import PublicFile, SplitDataset
from .splits import Entry


@DATASET_REGISTRY.register()
class OxfordFlowers(SplitDataset):
    """102 flowers; names from cat_to_name.json; generated split 50/20/30 per class."""

    dataset_dir = "oxford_flowers"
    image_subdir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    raw_paths = ("imagelabels.mat", "cat_to_name.json")
    extra_paths = ("cat_to_name.json",)
    public_files = (
        PublicFile("split_zhou_OxfordFlowers.json", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
        PublicFile("cat_to_name.json", "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"),
        PublicFile("102flowers.tgz", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz", "jpg"),
        PublicFile("imagelabels.mat", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat"),
    )

    def build_split(self):
        from scipy.io import loadmat

        labels = loadmat(os.path.join(self.dataset_dir, "imagelabels.mat"))["labels"][0]
        with open(os.path.join(self.dataset_dir, "cat_to_name.json")) as f:
            label_to_name = json.load(f)
        by_label = defaultdict(list)
        for index, label in enumerate(labels):
            by_label[int(label)].append(os.path.join(self.image_dir, f"image_{index + 1:05d}.jpg"))
        print("Splitting data into 50% train, 20% val, and 30% test")
        rng = self.split_rng()
        train, val, test = [], [], []
        for label, impaths in by_label.items():
            rng.shuffle(impaths)
            n_train, n_val = round(len(impaths) * 0.5), round(len(impaths) * 0.2)
            if n_train < 1 or n_val < 1 or len(impaths) - n_train - n_val < 1:
                raise ValueError(f"Flower class {label} has {len(impaths)} image(s): too few for a 50/20/30 split")
            name = label_to_name[str(label)]
            parts = (impaths[:n_train], impaths[n_train:n_train + n_val], impaths[n_train + n_val:])
            for split, paths in zip((train, val, test), parts):
                split.extend(Entry(path, label - 1, name) for path in paths)
        return train, val, test
