"""Describable Textures: `dtd/{images/<texture>/, split_zhou_DescribableTextures.json}`.

`DescribableTextures.read_and_split_data` stays reachable here for ecosystem code.
"""

from dassl.data.datasets import DATASET_REGISTRY

from . import splits
from .base import PublicFile, SplitDataset


@DATASET_REGISTRY.register()
class DescribableTextures(SplitDataset):
    """47 textures; class name = folder name; generated split 50/20/30 per class."""

    dataset_dir = "dtd"
    image_subdir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    raw_paths = ("images",)
    public_files = (
        PublicFile("split_zhou_DescribableTextures.json", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
        PublicFile("../dtd-r1.0.1.tar.gz", "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz", "images"),
    )

    read_and_split_data = staticmethod(splits.read_and_split_data)

    def build_split(self):
        return splits.split_class_folders(self.image_dir, rng=self.split_rng())
