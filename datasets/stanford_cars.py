"""Stanford Cars: `stanford_cars/{cars_train/, cars_test/, devkit/, cars_test_annos_withlabels.mat,
split_zhou_StanfordCars.json}`; split paths are relative to `stanford_cars/` itself."""

import os

from dassl.data.datasets import DATASET_REGISTRY

from .base import PublicFile, SplitDataset
from .splits import Entry, split_trainval


@DATASET_REGISTRY.register()
class StanfordCars(SplitDataset):
    """196 car models; class name "year make model" (the devkit's trailing year moved first)."""

    dataset_dir = "stanford_cars"
    image_subdir = ""
    split_file = "split_zhou_StanfordCars.json"
    raw_paths = ("devkit/cars_train_annos.mat", "devkit/cars_meta.mat", "cars_test_annos_withlabels.mat")
    extra_paths = ("cars_train", "cars_test")
    public_files = (PublicFile("split_zhou_StanfordCars.json", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),)

    def build_split(self):
        meta_file = os.path.join(self.dataset_dir, "devkit", "cars_meta.mat")
        trainval = self.read_annotations("cars_train", os.path.join(self.dataset_dir, "devkit", "cars_train_annos.mat"), meta_file)
        test = self.read_annotations("cars_test", os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat"), meta_file)
        train, val = split_trainval(trainval, rng=self.split_rng())
        return train, val, test

    def read_annotations(self, image_folder, anno_file, meta_file):
        """Entries of a devkit annotation .mat file (1-based class ids, names from cars_meta.mat)."""
        from scipy.io import loadmat

        annotations = loadmat(anno_file)["annotations"][0]
        class_names = loadmat(meta_file)["class_names"][0]
        entries = []
        for annotation in annotations:
            label = int(annotation["class"][0, 0]) - 1
            words = str(class_names[label][0]).split(" ")
            classname = " ".join([words[-1]] + words[:-1])
            impath = os.path.join(self.dataset_dir, image_folder, str(annotation["fname"][0]))
            entries.append(Entry(impath, label, classname))
        return entries
