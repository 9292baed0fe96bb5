"""Oxford-IIIT Pets: `oxford_pets/{images/, annotations/, split_zhou_OxfordPets.json}`.

Also the ecosystem's home of the split helpers: `OxfordPets.read_split`, `save_split`,
`split_trainval` and `subsample_classes` stay reachable here as static methods.
"""

import os

from dassl.data.datasets import DATASET_REGISTRY

from . import label_spaces, splits
from .base import PublicFile, SplitDataset
from .splits import Entry


@DATASET_REGISTRY.register()
class OxfordPets(SplitDataset):
    """37 pet breeds; class name = the image-name prefix in lower case ("american_bulldog")."""

    dataset_dir = "oxford_pets"
    image_subdir = "images"
    split_file = "split_zhou_OxfordPets.json"
    raw_paths = ("annotations/trainval.txt", "annotations/test.txt")
    public_files = (
        PublicFile("split_zhou_OxfordPets.json", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
        PublicFile("images.tar.gz", "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", "images"),
        PublicFile("annotations.tar.gz", "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz", "annotations"),
    )

    read_split = staticmethod(splits.read_split)
    save_split = staticmethod(splits.save_split)
    split_trainval = staticmethod(splits.split_trainval)
    subsample_classes = staticmethod(label_spaces.subsample_classes)

    def build_split(self):
        trainval = self.read_annotations("trainval.txt")
        test = self.read_annotations("test.txt")
        train, val = splits.split_trainval(trainval, rng=self.split_rng())
        return train, val, test

    def read_annotations(self, filename):
        """Entries of an `annotations/<filename>` list ("<image> <class id> <species> <breed id>")."""
        entries = []
        with open(os.path.join(self.dataset_dir, "annotations", filename)) as f:
            for line in f:
                if not line.strip() or line.startswith("#"):
                    continue
                imname, class_id = line.split()[:2]
                breed = "_".join(imname.split("_")[:-1]).lower()
                entries.append(Entry(os.path.join(self.image_dir, imname + ".jpg"), int(class_id) - 1, breed))
        return entries
