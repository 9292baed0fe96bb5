"""UCF101 (middle video frames): `ucf101/{UCF-101-midframes/, split_zhou_UCF101.json}`
(+ `ucfTrainTestlist/` only to regenerate the split)."""

import os
import re

from dassl.data.datasets import DATASET_REGISTRY

from .base import PublicFile, SplitDataset
from .splits import Entry, split_trainval


@DATASET_REGISTRY.register()
class UCF101(SplitDataset):
    """101 actions; class name = the action's camel-case words joined by "_" ("Apply_Eye_Makeup")."""

    dataset_dir = "ucf101"
    image_subdir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    raw_paths = ("ucfTrainTestlist/classInd.txt", "ucfTrainTestlist/trainlist01.txt", "ucfTrainTestlist/testlist01.txt")
    public_files = (
        PublicFile("split_zhou_UCF101.json", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
        PublicFile("UCF-101-midframes.zip", "10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O", "UCF-101-midframes"),
    )

    def build_split(self):
        label_of = {}
        with open(os.path.join(self.dataset_dir, "ucfTrainTestlist", "classInd.txt")) as f:
            for line in f:
                if line.strip():
                    class_id, action = line.split()
                    label_of[action] = int(class_id) - 1
        trainval = self.read_list("trainlist01.txt", label_of)
        test = self.read_list("testlist01.txt", label_of)
        train, val = split_trainval(trainval, rng=self.split_rng())
        return train, val, test

    def read_list(self, filename, label_of):
        """Entries of a `ucfTrainTestlist` file ("<Action>/<video>.avi [label]" per line)."""
        entries = []
        with open(os.path.join(self.dataset_dir, "ucfTrainTestlist", filename)) as f:
            for line in f:
                if not line.strip():
                    continue
                action, video = line.split()[0].split("/")
                classname = "_".join(re.findall("[A-Z][^A-Z]*", action))
                impath = os.path.join(self.image_dir, classname, video.replace(".avi", ".jpg"))
                entries.append(Entry(impath, label_of[action], classname))
        return entries
