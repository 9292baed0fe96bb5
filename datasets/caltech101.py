"""Caltech-101: `caltech-101/{101_ObjectCategories/, split_zhou_Caltech101.json}`."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import PublicFile, SplitDataset
from .splits import split_class_folders

IGNORED = ("BACKGROUND_Google", "Faces_easy")  # not object classes
NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASET_REGISTRY.register()
class Caltech101(SplitDataset):
    """100 object classes (two folders dropped, four renamed); generated split 50/20/30."""

    dataset_dir = "caltech-101"
    image_subdir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    raw_paths = ("101_ObjectCategories",)
    public_files = (PublicFile("split_zhou_Caltech101.json", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),)

    def build_split(self):
        return split_class_folders(
            self.image_dir,
            ignored=IGNORED,
            rename=lambda folder: NEW_CNAMES.get(folder, folder),
            rng=self.split_rng(),
        )
