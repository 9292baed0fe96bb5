"""SUN397: `sun397/{SUN397/, ClassName.txt, Training_01.txt, Testing_01.txt,
split_zhou_SUN397.json}`."""

import os

from dassl.data.datasets import DATASET_REGISTRY

from .base import PublicFile, SplitDataset
from .splits import Entry, split_trainval


@DATASET_REGISTRY.register()
class SUN397(SplitDataset):
    """397 scenes; class name = the category path words reversed ("/a/abbey" -> "abbey",
    "/b/bedroom/indoor" style paths -> "indoor bedroom")."""

    dataset_dir = "sun397"
    image_subdir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    raw_paths = ("ClassName.txt", "Training_01.txt", "Testing_01.txt")
    public_files = (PublicFile("split_zhou_SUN397.json", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),)

    def build_split(self):
        with open(os.path.join(self.dataset_dir, "ClassName.txt")) as f:
            categories = [line.strip()[1:] for line in f if line.strip()]
        label_of = {category: label for label, category in enumerate(categories)}
        trainval = self.read_partition("Training_01.txt", label_of)
        test = self.read_partition("Testing_01.txt", label_of)
        train, val = split_trainval(trainval, rng=self.split_rng())
        return train, val, test

    def read_partition(self, filename, label_of):
        """Entries of a partition file (one "/<letter>/<category...>/<image>" per line)."""
        entries = []
        with open(os.path.join(self.dataset_dir, filename)) as f:
            for line in f:
                if not line.strip():
                    continue
                relpath = line.strip()[1:]
                category = os.path.dirname(relpath)
                classname = " ".join(category.split("/")[1:][::-1])
                entries.append(Entry(os.path.join(self.image_dir, relpath), label_of[category], classname))
        return entries
