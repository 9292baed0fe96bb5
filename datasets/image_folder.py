"""`ImageFolder`: your own data, no code needed.

Put one folder per class in a directory and name it in a dataset YAML
(see configs/datasets/image_folder.yaml):

    DATASET:
      NAME: "ImageFolder"
      IMAGE_FOLDER:
        DIR: "my_data"          # relative to DATASET.ROOT, or absolute
        SPLIT_FILE: ""          # optional split json; default <DIR>/split.json

Labels follow the sorted folder names; class names follow `datasets.naming.readable_classname`.
Without a split json a P_TRAIN / P_VAL / rest per-class split is generated with a fixed seed and
written to SPLIT_FILE; the few-shot cache goes to `<DIR>/split_fewshot/` (a folder that is never
taken for a class).
"""

import os

from yacs.config import CfgNode

from dassl.config import register_config
from dassl.data.datasets import DATASET_REGISTRY

from .base import SplitDataset
from .naming import readable_classname
from .splits import DOCS_HINT, FEWSHOT_DIRNAME, split_class_folders


@register_config
def add_image_folder_config(cfg):
    """Config keys of the generic ImageFolder dataset."""
    cfg.DATASET.IMAGE_FOLDER = CfgNode()
    cfg.DATASET.IMAGE_FOLDER.DIR = ""  # folder holding one sub-folder per class (relative to DATASET.ROOT, or absolute)
    cfg.DATASET.IMAGE_FOLDER.SPLIT_FILE = ""  # split json (relative to DIR, or absolute); "" = DIR/split.json
    cfg.DATASET.IMAGE_FOLDER.P_TRAIN = 0.5  # train fraction per class of a generated split
    cfg.DATASET.IMAGE_FOLDER.P_VAL = 0.2  # val fraction per class of a generated split (test = the rest)


@DATASET_REGISTRY.register()
class ImageFolder(SplitDataset):
    """Class folders under DATASET.IMAGE_FOLDER.DIR; split paths are relative to that folder."""

    def set_paths(self, cfg):
        options = cfg.DATASET.IMAGE_FOLDER
        if not options.DIR:
            raise ValueError(
                "ImageFolder: DATASET.IMAGE_FOLDER.DIR is empty; set it in the dataset YAML to the "
                f"folder holding one sub-folder per class ({DOCS_HINT})"
            )
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT or "."))
        self.dataset_dir = os.path.join(root, os.path.expanduser(options.DIR))
        self.image_dir = self.dataset_dir
        self.split_path = os.path.join(self.dataset_dir, options.SPLIT_FILE or "split.json")
        self.split_fewshot_dir = os.path.join(self.dataset_dir, FEWSHOT_DIRNAME)
        self.fractions = (options.P_TRAIN, options.P_VAL)

    def check_present(self, cfg):
        if not os.path.isdir(self.dataset_dir):
            raise FileNotFoundError(
                f"ImageFolder: folder {self.dataset_dir} not found (DATASET.IMAGE_FOLDER.DIR is "
                f"{cfg.DATASET.IMAGE_FOLDER.DIR!r}, DATASET.ROOT is {cfg.DATASET.ROOT!r}); {DOCS_HINT}"
            )

    def build_split(self):
        p_train, p_val = self.fractions
        return split_class_folders(
            self.image_dir, p_train, p_val, rename=readable_classname, rng=self.split_rng()
        )
