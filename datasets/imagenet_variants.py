"""The test-only ImageNet variants (domain-generalisation targets of an ImageNet-trained model).

Each folder holds a copy of ImageNet's `classnames.txt`; class names are taken from it, so a
model sees exactly the names it was trained with. ImageNet-A and -R have 200 wnid folders: their
labels are 0..199 in sorted-wnid order and their names the matching subset of ImageNet's names.
"""

import os

from dassl.data.datasets import DATASET_REGISTRY

from .base import PublicFile, TestOnlyDataset
from .imagenet import CLASSNAMES_GDRIVE_ID, read_classnames_file
from .splits import Entry, class_folders, image_files

CLASSNAMES_FILE = PublicFile("classnames.txt", CLASSNAMES_GDRIVE_ID)


class WnidFolderTestSet(TestOnlyDataset):
    """Images in `<image_subdir>/<wnid>/`; labels = sorted wnid folders (files such as README.txt ignored)."""

    extra_paths = ("classnames.txt",)
    public_files = (CLASSNAMES_FILE,)

    def read_test_data(self):
        classnames = read_classnames_file(os.path.join(self.dataset_dir, "classnames.txt"))
        entries = []
        for label, wnid in enumerate(class_folders(self.image_dir)):
            if wnid not in classnames:
                raise ValueError(f"Folder {os.path.join(self.image_dir, wnid)} is not a class of classnames.txt")
            folder = os.path.join(self.image_dir, wnid)
            entries.extend(Entry(os.path.join(folder, name), label, classnames[wnid]) for name in image_files(folder))
        return entries


@DATASET_REGISTRY.register()
class ImageNetV2(TestOnlyDataset):
    """ImageNet-V2 matched-frequency: folders `0`..`999` are ImageNet labels."""

    dataset_dir = "imagenetv2"
    image_subdir = "imagenetv2-matched-frequency-format-val"
    extra_paths = ("classnames.txt",)
    public_files = (CLASSNAMES_FILE,)

    def read_test_data(self):
        names = list(read_classnames_file(os.path.join(self.dataset_dir, "classnames.txt")).values())
        entries = []
        for folder_name in class_folders(self.image_dir):
            if not folder_name.isdigit() or int(folder_name) >= len(names):
                raise ValueError(f"Folder {os.path.join(self.image_dir, folder_name)} is not an ImageNet label (0..{len(names) - 1})")
            label = int(folder_name)
            folder = os.path.join(self.image_dir, folder_name)
            entries.extend(Entry(os.path.join(folder, name), label, names[label]) for name in image_files(folder))
        return sorted(entries, key=lambda entry: entry.label)


@DATASET_REGISTRY.register()
class ImageNetSketch(WnidFolderTestSet):
    """ImageNet-Sketch: 1000 wnid folders under `images/`."""

    dataset_dir = "imagenet-sketch"
    image_subdir = "images"


@DATASET_REGISTRY.register()
class ImageNetA(WnidFolderTestSet):
    """ImageNet-A: 200 wnid folders under `imagenet-a/`."""

    dataset_dir = "imagenet-adversarial"
    image_subdir = "imagenet-a"


@DATASET_REGISTRY.register()
class ImageNetR(WnidFolderTestSet):
    """ImageNet-R: 200 wnid folders under `imagenet-r/`."""

    dataset_dir = "imagenet-rendition"
    image_subdir = "imagenet-r"
