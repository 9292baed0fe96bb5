"""Split files, generated splits, and where a split's paths may point.

* split files: `read_split` / `save_split` (the ecosystem's `split_zhou_<Name>.json` format:
  `{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}`);
* generated splits: `split_trainval` (per-class 80/20) and `split_class_folders` /
  `read_and_split_data` (per-class 50/20/30 over a folder-per-class tree), always with
  `GENERATED_SPLIT_SEED`;
* confinement (docs/DATASETS.md, "Where the images may be"): every path read from a split, few-shot or
  listing file must name a file inside the folder its paths are relative to (`path_inside`: no absolute
  path, no `..`), and every image a run uses must really lie inside the dataset's image folder once
  symbolic links are resolved (`to_datums`).

Items travel as `Entry` tuples (no file access) through `datasets.fewshot` and `datasets.label_spaces`;
they become `Datum` objects once, in `to_datums`, which reports every missing file at once.
"""

import json
import os
import random
from collections import defaultdict
from typing import NamedTuple

from dassl.data.datasets import Datum
from dassl.utils import write_json

SPLIT_KEYS = ("train", "val", "test")
FEWSHOT_DIRNAME = "split_fewshot"  # the few-shot cache's folder inside a dataset folder (never a class folder)
GENERATED_SPLIT_SEED = 0  # seed of every split this project generates (independent of cfg.SEED)
MAX_LISTED_PROBLEMS = 10  # how many offending paths an error message lists
DOCS_HINT = "see docs/DATASETS.md, and run `python -m datasets.verify --root $DATA` to check the data"


class Entry(NamedTuple):
    """One split item before it becomes a `Datum`: absolute image path, label, class name."""

    impath: str
    label: int
    classname: str


# -- paths and files ---------------------------------------------------------------------------


def relative_to(path, root):
    """`path` relative to `root` (fast prefix cut when `path` lies under `root`)."""
    prefix = root.rstrip(os.sep) + os.sep
    if path.startswith(prefix):
        return path[len(prefix):]
    return os.path.relpath(path, root)


def read_json_file(filepath, what):
    """Load a JSON file; a syntax error names the file and what it should contain."""
    try:
        with open(filepath) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{filepath} is not valid JSON ({err}); it should be {what}. "
            "Delete it to regenerate it, or download it again (python -m datasets.download)"
        ) from err


def class_folders(image_dir, ignored=()):
    """Sorted names of the non-hidden sub-directories of `image_dir`, minus `ignored`."""
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Image folder {image_dir} does not exist; {DOCS_HINT}")
    names = (
        entry.name
        for entry in os.scandir(image_dir)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    return sorted(name for name in names if name not in ignored and name != FEWSHOT_DIRNAME)


def image_files(folder):
    """Sorted names of the non-hidden files in `folder`."""
    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file() and not entry.name.startswith(".")
    )


def path_inside(folder, relpath, source):
    """`folder/relpath` for a path read from the file `source`; a path that is absolute or has a `..` part is
    refused (ValueError naming `source` and the entry). String checks only: no file is touched."""
    if os.path.isabs(relpath) or (".." in relpath and ".." in relpath.split(os.sep)):
        raise ValueError(
            f"{source} lists {relpath!r}, a path outside the folder its paths are relative to ({folder}); such "
            "files hold paths inside that folder (no leading '/', no '..'). The file is damaged or crafted: delete "
            f"it to regenerate it, or download it again; {DOCS_HINT}"
        )
    return os.path.join(folder, relpath)


def first_path_outside(paths, image_dir):
    """`(path, where it leads)` for the first of `paths` whose real location (symbolic links resolved) is not
    inside the real `image_dir`; None when every path is inside. Each folder is resolved once and a file only
    when it is itself a link, so a split costs one `lstat` per image and one `realpath` per folder."""
    real_root = os.path.join(os.path.realpath(image_dir), "")  # with a trailing separator
    real_folders = {}
    for path in paths:
        folder, name = os.path.split(path)
        real_folder = real_folders.get(folder)
        if real_folder is None:
            real_folder = real_folders[folder] = os.path.join(os.path.realpath(folder), "")
        real = os.path.realpath(path) if os.path.islink(path) else real_folder + name
        if not real.startswith(real_root):
            return path, real
    return None


def to_datums(entries, dataset_name, image_dir):
    """Turn entries into `Datum` objects; every missing image is reported in one error, and an image that is not
    inside `image_dir` (also through a symbolic link) is refused (ValueError)."""
    datums, missing = [], []
    for entry in entries:
        try:
            datums.append(Datum(impath=entry.impath, label=entry.label, classname=entry.classname))
        except FileNotFoundError:
            missing.append(entry.impath)
    if missing:
        listed = "\n  ".join(missing[:MAX_LISTED_PROBLEMS])
        more = len(missing) - MAX_LISTED_PROBLEMS
        raise FileNotFoundError(
            f"{dataset_name}: {len(missing)} image(s) listed in the split do not exist:\n  {listed}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + f"\nRestore the files, or delete the split file to regenerate it; {DOCS_HINT}"
        )
    outside = first_path_outside((datum.impath for datum in datums), image_dir)
    if outside:
        raise ValueError(
            f"{dataset_name}: the split lists {outside[0]}, which leads to {outside[1]}, outside the image folder "
            f"{image_dir}; a split's images must lie inside that folder. Replace the link by the files, or link the "
            "whole dataset folder or its image folder instead (docs/DATASETS.md, \"Where the images may be\")"
        )
    return datums


# -- split files (the ecosystem's json format) -------------------------------------------------


def read_split_entries(filepath, path_prefix):
    """Read a split json into `{"train"|"val"|"test": [Entry]}`; paths are joined to `path_prefix`."""
    split = read_json_file(filepath, 'a {"train", "val", "test"} split of [relpath, label, classname]')
    missing_keys = [key for key in SPLIT_KEYS if key not in split]
    if missing_keys:
        raise ValueError(
            f"Split file {filepath} lacks the key(s) {missing_keys}; a split json holds "
            '{"train": [...], "val": [...], "test": [...]} lists of [relpath, label, classname]'
        )
    return {
        key: [
            Entry(path_inside(path_prefix, relpath, filepath), int(label), classname)
            for relpath, label, classname in split[key]
        ]
        for key in SPLIT_KEYS
    }


def read_split(filepath, path_prefix):
    """Ecosystem API: read a split json and return `(train, val, test)` lists of `Datum`."""
    print(f"Reading split from {filepath}")
    split = read_split_entries(filepath, path_prefix)
    name = os.path.basename(filepath)
    return tuple(to_datums(split[key], name, path_prefix) for key in SPLIT_KEYS)


def save_split(train, val, test, filepath, path_prefix):
    """Ecosystem API: write `(train, val, test)` (Datum or Entry lists) as a split json whose
    paths are relative to `path_prefix`."""

    def _extract(items):
        return [[relative_to(item.impath, path_prefix), item.label, item.classname] for item in items]

    write_json({"train": _extract(train), "val": _extract(val), "test": _extract(test)}, filepath)
    print(f"Saved split to {filepath}")


# -- generated splits --------------------------------------------------------------------------


def split_trainval(trainval, p_val=0.2, rng=None):
    """Ecosystem API: split every class of `trainval` into (1 - p_val) train and p_val val.

    Works on Datum or Entry lists. `rng` defaults to the global `random` module (as in the
    ecosystem); this project passes `random.Random(GENERATED_SPLIT_SEED)`.
    """
    rng = rng or random
    print(f"Splitting trainval into {1 - p_val:.0%} train and {p_val:.0%} val")
    by_label = defaultdict(list)
    for index, item in enumerate(trainval):
        by_label[item.label].append(index)
    train, val = [], []
    for label, indices in by_label.items():
        n_val = round(len(indices) * p_val)
        if n_val < 1:
            raise ValueError(
                f"Class {label} ({trainval[indices[0]].classname}) has {len(indices)} train+val "
                f"image(s): too few to hold out {p_val:.0%} for validation; add images to it"
            )
        rng.shuffle(indices)
        for position, index in enumerate(indices):
            (val if position < n_val else train).append(trainval[index])
    return train, val


def split_class_folders(image_dir, p_trn=0.5, p_val=0.2, ignored=(), rename=None, rng=None):
    """Split a folder-per-class tree per class into p_trn train / p_val val / rest test (Entries).

    Labels follow the sorted folder names. `rename(folder) -> classname` names the classes
    (identity when None). An empty class folder, or one too small to split, raises ValueError.
    """
    rng = rng or random
    p_tst = 1 - p_trn - p_val
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {p_tst:.0%} test")
    train, val, test = [], [], []
    for label, folder in enumerate(class_folders(image_dir, ignored)):
        folder_dir = os.path.join(image_dir, folder)
        impaths = [os.path.join(folder_dir, name) for name in image_files(folder_dir)]
        if not impaths:
            raise ValueError(
                f"Class folder {folder_dir} is empty; add its images or delete the folder ({DOCS_HINT})"
            )
        rng.shuffle(impaths)
        n_train = round(len(impaths) * p_trn)
        n_val = round(len(impaths) * p_val)
        if n_train < 1 or n_val < 1 or len(impaths) - n_train - n_val < 1:
            raise ValueError(
                f"Class folder {folder_dir} has {len(impaths)} image(s): too few for a "
                f"{p_trn:.0%}/{p_val:.0%}/{p_tst:.0%} split (each part needs at least one); add images"
            )
        classname = rename(folder) if rename else folder
        train.extend(Entry(path, label, classname) for path in impaths[:n_train])
        val.extend(Entry(path, label, classname) for path in impaths[n_train:n_train + n_val])
        test.extend(Entry(path, label, classname) for path in impaths[n_train + n_val:])
    return train, val, test


def read_and_split_data(image_dir, p_trn=0.5, p_val=0.2, ignored=(), new_cnames=None):
    """Ecosystem API (`DescribableTextures.read_and_split_data`): per-class 50/20/30 split of a
    folder-per-class tree with the global RNG, returned as `(train, val, test)` lists of Datum.
    `new_cnames` maps folder names to class names (missing folders keep their name)."""
    new_cnames = new_cnames or {}
    split = split_class_folders(
        image_dir, p_trn, p_val, ignored, rename=lambda folder: new_cnames.get(folder, folder)
    )
    return tuple(to_datums(items, image_dir, image_dir) for items in split)
