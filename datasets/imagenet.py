"""ImageNet: `imagenet/{images/train/<wnid>/, images/val/<wnid>/, classnames.txt}`.

The val images are the test set and also serve as val (as in the ecosystem). The folder listing
is cached in `imagenet/split_ImageNet.json` (paths relative to `images/`); an ecosystem
`preprocessed.pkl` is read (never rewritten, never allowed to run code) when that json does not exist yet.
"""

import os
from collections import OrderedDict

from dassl.data.datasets import DATASET_REGISTRY

from .base import PublicFile, SplitDataset
from .fewshot import locate_in_dataset, read_legacy_pickle
from .splits import DOCS_HINT, Entry, class_folders, image_files, path_inside

CLASSNAMES_GDRIVE_ID = "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"  # CoOp's classnames.txt (CLIP's names)


def read_classnames_file(text_file):
    """`classnames.txt` ("<wnid> <class name>" per line) as an ordered {wnid: class name}."""
    if not os.path.isfile(text_file):
        raise FileNotFoundError(
            f"{text_file} not found: copy ImageNet's classnames.txt there "
            f"(python -m datasets.download ImageNet --root $DATA fetches it); {DOCS_HINT}"
        )
    classnames = OrderedDict()
    with open(text_file) as f:
        for line in f:
            if line.strip():
                wnid, name = line.strip().split(" ", 1)
                classnames[wnid] = name
    return classnames


@DATASET_REGISTRY.register()
class ImageNet(SplitDataset):
    """1000 classes named by CLIP's classnames.txt; labels = sorted wnid folders."""

    dataset_dir = "imagenet"
    image_subdir = "images"
    split_file = "split_ImageNet.json"
    raw_paths = ("classnames.txt", "images/train", "images/val")
    extra_paths = ("classnames.txt",)
    val_is_test = True
    split_optional = True
    public_files = (PublicFile("classnames.txt", CLASSNAMES_GDRIVE_ID),)

    read_classnames = staticmethod(read_classnames_file)

    def load_split(self):
        if not os.path.isfile(self.split_path):
            legacy = self.read_legacy_preprocessed()
            if legacy is not None:
                return legacy
        return super().load_split()

    def read_legacy_preprocessed(self):
        """(train, [], test) from the ecosystem's `preprocessed.pkl` ({"train", "test"} lists of Datum), re-rooted
        here; None when absent, unreadable, or when its paths cannot be placed under this dataset folder.
        Read without running code (a file asking for more than Datum raises ForbiddenPickleContent); a path
        that climbs out of the folder raises ValueError."""
        pkl_path = os.path.join(self.dataset_dir, "preprocessed.pkl")
        if not os.path.isfile(pkl_path):
            return None
        data = read_legacy_pickle(pkl_path, ("train", "test"))
        if data is None:
            return None
        splits = []
        for key in ("train", "test"):
            entries = []
            for datum in data[key]:
                relpath = locate_in_dataset(datum.impath, self.dataset_dir)
                if relpath is None:
                    print(f"Ignoring {pkl_path}: {datum.impath} is not under an 'imagenet' folder")
                    return None
                impath = path_inside(self.dataset_dir, relpath, pkl_path)
                entries.append(Entry(impath, datum.label, datum.classname))
            splits.append(entries)
        print(f"Loading preprocessed ImageNet listing from {pkl_path}")
        return splits[0], [], splits[1]

    def build_split(self):
        classnames = read_classnames_file(os.path.join(self.dataset_dir, "classnames.txt"))
        return self.read_folder("train", classnames), [], self.read_folder("val", classnames)

    def read_folder(self, split_name, classnames):
        """Entries of `images/<split_name>/<wnid>/*` with labels in sorted-wnid order."""
        split_dir = os.path.join(self.image_dir, split_name)
        entries = []
        for label, wnid in enumerate(class_folders(split_dir)):
            if wnid not in classnames:
                raise ValueError(f"Folder {os.path.join(split_dir, wnid)} is not a class of classnames.txt")
            folder = os.path.join(split_dir, wnid)
            entries.extend(Entry(os.path.join(folder, name), label, classnames[wnid]) for name in image_files(folder))
        return entries
