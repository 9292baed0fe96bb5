"""Food-101: `food-101/{images/<dish>/, split_zhou_Food101.json}`."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import PublicFile, SplitDataset
from .splits import split_class_folders


@DATASET_REGISTRY.register()
class Food101(SplitDataset):
    """101 dishes; class name = folder name; generated split 50/20/30."""

    dataset_dir = "food-101"
    image_subdir = "images"
    split_file = "split_zhou_Food101.json"
    raw_paths = ("images",)
    public_files = (
        PublicFile("split_zhou_Food101.json", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
        PublicFile("../food-101.tar.gz", "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz", "images"),
    )

    def build_split(self):
        return split_class_folders(self.image_dir, rng=self.split_rng())
