"""FGVC-Aircraft: `fgvc_aircraft/{images/, variants.txt, images_variant_{train,val,test}.txt}`
(the archive's `data/` folder renamed). The official split files are read every run."""

import os

from dassl.data.datasets import DATASET_REGISTRY

from .base import SplitDataset
from .splits import Entry


@DATASET_REGISTRY.register()
class FGVCAircraft(SplitDataset):
    """100 aircraft variants; labels follow the order of variants.txt."""

    dataset_dir = "fgvc_aircraft"
    image_subdir = "images"
    split_file = ""
    raw_paths = ("variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt")

    def build_split(self):
        with open(os.path.join(self.dataset_dir, "variants.txt")) as f:
            variants = [line.strip() for line in f if line.strip()]
        label_of = {name: label for label, name in enumerate(variants)}
        return tuple(self.read_variant_list(f"images_variant_{part}.txt", label_of) for part in ("train", "val", "test"))

    def read_variant_list(self, filename, label_of):
        """Entries of an `images_variant_*.txt` list ("<image id> <variant name>")."""
        entries = []
        with open(os.path.join(self.dataset_dir, filename)) as f:
            for line in f:
                if not line.strip():
                    continue
                image_id, variant = line.strip().split(" ", 1)
                entries.append(Entry(os.path.join(self.image_dir, image_id + ".jpg"), label_of[variant], variant))
        return entries
