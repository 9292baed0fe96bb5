"""The CoOp dataset protocols, in one place.

Every dataset file is a thin layer over this module:

* split files: `read_split` / `save_split` (the ecosystem's `split_zhou_<Name>.json` format:
  `{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}`);
* generated splits: `split_trainval` (per-class 80/20) and `read_and_split_data` (per-class
  50/20/30 over a folder-per-class tree);
* label spaces: `subsample_classes` (base = first ceil(n/2) sorted labels, new = the rest) and
  the open-world ratio space (`open_world_counts`, `sample_open_world_labels`);
* the few-shot cache (`load_or_sample_fewshot`): relative paths, invalidated when the split
  changes, and able to read the ecosystem's pickles without rewriting them.

Inside this module items travel as `Entry` tuples (no file access); they become `Datum` objects
once, in `to_datums`, which reports every missing file at once.

Confinement (docs/DATASETS.md, "Where the images may be"): every path read from a split, few-shot or
listing file must name a file inside the folder its paths are relative to (`path_inside`: no absolute
path, no `..`), and every image a run uses must really lie inside the dataset's image folder once
symbolic links are resolved (`to_datums`).
"""

import hashlib
import json
import math
import os
import random
from collections import defaultdict
from typing import NamedTuple

from dassl.config import register_config
from dassl.data.datasets import Datum
from dassl.utils import write_json
from dassl.utils.safe_pickle import ForbiddenPickleContent, restricted_pickle_load

SPLIT_KEYS = ("train", "val", "test")
SUBSAMPLE_CHOICES = ("all", "base", "new")
FEWSHOT_DIRNAME = "split_fewshot"
FEWSHOT_CACHE_VERSION = 1
GENERATED_SPLIT_SEED = 0  # seed of every split this project generates (independent of cfg.SEED)
MAX_LISTED_PROBLEMS = 10  # how many offending paths an error message lists
DOCS_HINT = "see docs/DATASETS.md, and run `python -m datasets.verify --root $DATA` to check the data"
# What an ecosystem pickle (few-shot `shot_K-seed_S.pkl`, ImageNet's `preprocessed.pkl`) holds besides dicts and
# lists: Dassl's Datum (pickled by its class path).
LEGACY_DATUM_GLOBALS = {("dassl.data.datasets.base_dataset", "Datum")}


@register_config
def add_dataset_protocol_config(cfg):
    """Config keys of the label-space protocols (base/new and open-world ratio)."""
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # label space: "all" | "base" (first ceil(n/2) labels) | "new" (the rest)
    cfg.DATASET.USE_RATIO = False  # open-world test: ceil(n/2) classes, SUBSAMPLE_RATIO % of them base (needs SUBSAMPLE_CLASSES "all")
    cfg.DATASET.SUBSAMPLE_RATIO = 100  # open-world r: percent (0-100) of the evaluated label space taken from base classes


class Entry(NamedTuple):
    """One split item before it becomes a `Datum`: absolute image path, label, class name."""

    impath: str
    label: int
    classname: str


# ---------------------------------------------------------------------------------------------
# Paths and files
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Split files (the ecosystem's json format)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Generated splits
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Label spaces: base/new and open-world ratio
# ---------------------------------------------------------------------------------------------


def relabel(item, label):
    """A copy of `item` (Entry or Datum) carrying `label`."""
    if isinstance(item, Entry):
        return item._replace(label=label)
    return Datum(impath=item.impath, label=label, domain=item.domain, classname=item.classname)


def keep_classes(selected, *splits):
    """Keep the items of `selected` labels in every split, relabelled 0.. in `selected` order."""
    relabeler = {label: new_label for new_label, label in enumerate(selected)}
    return [
        [relabel(item, relabeler[item.label]) for item in items if item.label in relabeler]
        for items in splits
    ]


def base_novel_labels(labels):
    """Split a label set into (base, novel): sorted, base = first ceil(n/2), novel = the rest."""
    labels = sorted(set(labels))
    num_base = math.ceil(len(labels) / 2)
    return labels[:num_base], labels[num_base:]


def subsample_classes(*args, subsample="all"):
    """Ecosystem API: restrict every list in `args` to the base or new classes of `args[0]`
    (relabelled from 0); "all" returns `args` unchanged."""
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(
            f"DATASET.SUBSAMPLE_CLASSES must be one of {list(SUBSAMPLE_CHOICES)}, got {subsample!r}"
        )
    if subsample == "all":
        return args
    base, novel = base_novel_labels(item.label for item in args[0])
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    return keep_classes(base if subsample == "base" else novel, *args)


def open_world_counts(num_classes, ratio):
    """(#base, #novel) classes of the open-world label space for n classes and ratio r (percent).

    The space has m = ceil(n/2) classes; floor(r * m / 100) are base (the released BMIP code's
    rule) and the rest novel. Clamp: when more novel classes are asked for than exist (odd n: n - m =
    m - 1 novel classes), all novel classes are taken and base classes fill the remaining slots.
    """
    if not 0 <= ratio <= 100:
        raise ValueError(f"DATASET.SUBSAMPLE_RATIO must lie in [0, 100] (percent), got {ratio}")
    m = math.ceil(num_classes / 2)
    available_novel = num_classes - m
    num_base = math.floor(ratio * m / 100 + 1e-9)  # (the epsilon keeps e.g. 29 * 100 / 100 from rounding down)
    num_novel = m - num_base
    if num_novel > available_novel:
        num_novel = available_novel
        num_base = m - num_novel
    return num_base, num_novel


def open_world_rng(classnames, ratio, seed):
    """A private RNG determined by (class names in label order, ratio, seed) only."""
    key = json.dumps([list(classnames), ratio, seed]).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def sample_open_world_labels(labels, classnames, ratio, seed):
    """The open-world label space: sorted original labels, base classes first.

    `labels` are the dataset's labels, `classnames` its names in label order. Base and novel
    classes are drawn without replacement from the base / novel halves (`base_novel_labels`)
    by `open_world_rng`, so the result is the same for the same dataset, ratio and seed and
    does not touch the global RNG. Returns `(selected_labels, num_base)`.
    """
    base, novel = base_novel_labels(labels)
    num_base, num_novel = open_world_counts(len(base) + len(novel), ratio)
    rng = open_world_rng(classnames, ratio, seed)
    chosen_base = sorted(rng.sample(base, num_base))
    chosen_novel = sorted(rng.sample(novel, num_novel))
    return chosen_base + chosen_novel, num_base


# How many leading labels of a label space are base classes, keyed by the space's class names.
# Datasets record it when they build the space; `BaseNovelClassification` reads it.
_BASE_CLASS_COUNTS = {}


def record_base_class_count(classnames, num_base):
    """Remember that the first `num_base` labels of the label space `classnames` are base."""
    _BASE_CLASS_COUNTS[tuple(classnames)] = num_base


def base_class_count(classnames):
    """How many leading labels of the space `classnames` are base: the recorded count, else
    ceil(n/2) (the base/novel rule of an "all" space)."""
    return _BASE_CLASS_COUNTS.get(tuple(classnames), math.ceil(len(classnames) / 2))


def classnames_by_label(items):
    """Class names of `items` ordered by label."""
    names = {}
    for item in items:
        names.setdefault(item.label, item.classname)
    return [names[label] for label in sorted(names)]


def select_label_space(cfg, train, val, test):
    """Apply DATASET.SUBSAMPLE_CLASSES / USE_RATIO / SUBSAMPLE_RATIO to the three splits.

    * "base" / "new": the ecosystem's `subsample_classes`.
    * "all" or "new" with USE_RATIO: the open-world ratio space (`sample_open_world_labels`, seeded
      with cfg.SEED); every test image of a selected class is kept, relabelled 0.. (base first).
      ("new" is how the released BMIP scripts ask for it: their test script passes "new".)
    * "base" with USE_RATIO trains on the base classes (the ratio applies to the evaluation).
    Records the base-class count of the resulting space for `BaseNovelClassification`.
    """
    subsample = cfg.DATASET.SUBSAMPLE_CLASSES
    if cfg.DATASET.USE_RATIO and subsample in ("all", "new"):
        classnames = classnames_by_label(train)
        selected, num_base = sample_open_world_labels(
            [item.label for item in train], classnames, cfg.DATASET.SUBSAMPLE_RATIO, cfg.SEED
        )
        print(
            f"OPEN-WORLD LABEL SPACE: {num_base} base + {len(selected) - num_base} novel classes "
            f"(ratio {cfg.DATASET.SUBSAMPLE_RATIO}%, seed {cfg.SEED})"
        )
        train, val, test = keep_classes(selected, train, val, test)
    else:
        if cfg.DATASET.USE_RATIO:
            print("DATASET.USE_RATIO: training on the base classes; the ratio applies to the evaluation")
        train, val, test = subsample_classes(train, val, test, subsample=subsample)
        num_classes = len(classnames_by_label(train))
        num_base = {"all": math.ceil(num_classes / 2), "base": num_classes, "new": 0}[subsample]
    record_base_class_count(classnames_by_label(train), num_base)
    return list(train), list(val), list(test)


# ---------------------------------------------------------------------------------------------
# Few-shot cache
# ---------------------------------------------------------------------------------------------


def split_fingerprint(dataset_dir, *splits):
    """SHA-256 of the split content (paths relative to `dataset_dir`, labels, class names)."""
    digest = hashlib.sha256()
    for items in splits:
        digest.update(b"\x00split\x00")
        for item in items:
            line = f"{relative_to(item.impath, dataset_dir)}\t{item.label}\t{item.classname}\n"
            digest.update(line.encode())
    return digest.hexdigest()


def fewshot_cache_paths(dataset_dir, num_shots, seed):
    """(this project's json cache, the ecosystem's pickle) for K shots and a seed."""
    stem = os.path.join(dataset_dir, FEWSHOT_DIRNAME, f"shot_{num_shots}-seed_{seed}")
    return stem + ".json", stem + ".pkl"


def locate_in_dataset(path, dataset_dir):
    """Path of an image relative to `dataset_dir`, also for a path recorded under an old root
    (found by the dataset folder's name); None when it cannot be placed."""
    dataset_dir = dataset_dir.rstrip(os.sep)
    if path.startswith(dataset_dir + os.sep):
        return path[len(dataset_dir) + 1:]
    marker = os.sep + os.path.basename(dataset_dir) + os.sep
    position = path.rfind(marker)
    if position < 0:
        return None
    return path[position + len(marker):]


def read_legacy_pickle(pkl_path, keys):
    """The `{key: [Datum]}` an ecosystem pickle holds (few-shot `shot_K-seed_S.pkl`, ImageNet's
    `preprocessed.pkl`), read without running code; None (and a printed reason) when the file cannot be read or
    holds something else. A file asking for any global but Datum raises ForbiddenPickleContent (never skipped:
    a file that tries to run code must be looked at)."""
    try:
        data = restricted_pickle_load(pkl_path, LEGACY_DATUM_GLOBALS)
    except ForbiddenPickleContent:
        raise
    except Exception as err:  # a foreign or truncated pickle: report and let the caller fall back
        print(f"Ignoring unreadable pickle {pkl_path} ({type(err).__name__}: {err})")
        return None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), list) and all(isinstance(item, Datum) for item in data[key]) for key in keys
    ):
        print(f"Ignoring {pkl_path}: it does not hold {list(keys)} lists of Datum")
        return None
    return data


def read_legacy_fewshot(pkl_path, dataset_dir, splits):
    """Read an ecosystem few-shot pickle (`{"train"[, "val"]}` of pickled Datum, absolute paths).

    `splits` maps "train"/"val" to the current split entries. Returns the same keys as Entry
    lists, re-rooted under `dataset_dir`, or None when the pickle does not belong to the current
    split (an item not in it, or other labels/names) or cannot be read. Never writes the file.
    """
    data = read_legacy_pickle(pkl_path, tuple(splits))
    if data is None:
        return None
    known = {}
    for entries in splits.values():
        for entry in entries:
            known[relative_to(entry.impath, dataset_dir)] = (entry.label, entry.classname)
    result = {}
    for key in splits:
        items = []
        for datum in data[key]:
            relpath = locate_in_dataset(datum.impath, dataset_dir)
            if relpath is None or known.get(relpath) != (datum.label, datum.classname):
                return None
            items.append(Entry(os.path.join(dataset_dir, relpath), datum.label, datum.classname))
        result[key] = items
    return result


def read_fewshot_cache(json_path, dataset_dir, fingerprint):
    """Read this project's few-shot cache; None when it was made from another split."""
    cache = read_json_file(json_path, "a few-shot cache written by this project")
    if cache.get("version") != FEWSHOT_CACHE_VERSION or cache.get("split_fingerprint") != fingerprint:
        print(f"The split changed since {json_path} was written: sampling the few-shot data again")
        return None
    return {
        key: [Entry(path_inside(dataset_dir, rel, json_path), int(label), name) for rel, label, name in items]
        for key, items in cache["splits"].items()
    }


def write_fewshot_cache(json_path, dataset_dir, fingerprint, sampled):
    """Write the few-shot cache with paths relative to `dataset_dir`."""
    write_json(
        {
            "version": FEWSHOT_CACHE_VERSION,
            "split_fingerprint": fingerprint,
            "splits": {
                key: [[relative_to(e.impath, dataset_dir), e.label, e.classname] for e in items]
                for key, items in sampled.items()
            },
        },
        json_path,
    )
    print(f"Saving preprocessed few-shot data to {json_path}")


def load_or_sample_fewshot(dataset, splits, num_shots, seed):
    """K-shot versions of `splits` (`{"train": [...]}` or `{"train": [...], "val": [...]}`).

    train gets K shots per class, val min(K, 4). Sampling uses `dataset.generate_fewshot_dataset`
    (the global RNG, as in the ecosystem). Cache, under `<dataset_dir>/split_fewshot/`:
    1. `shot_K-seed_S.json` (this project's, relative paths) when made from the same split;
    2. else the ecosystem's `shot_K-seed_S.pkl` when it matches the current split (read only);
    3. else sample and write the json. A negative seed means unseeded runs: nothing is cached.
    """
    shots = {"train": num_shots, "val": min(num_shots, 4)}

    def _sample():
        return {key: dataset.generate_fewshot_dataset(items, num_shots=shots[key]) for key, items in splits.items()}

    if seed < 0:
        print(f"SEED is {seed} (unseeded): sampling {num_shots}-shot data without caching it")
        return _sample()
    dataset_dir = dataset.dataset_dir
    json_path, pkl_path = fewshot_cache_paths(dataset_dir, num_shots, seed)
    fingerprint = split_fingerprint(dataset_dir, *splits.values())
    if os.path.isfile(json_path):
        cached = read_fewshot_cache(json_path, dataset_dir, fingerprint)
        if cached is not None and set(cached) == set(splits):
            print(f"Loading preprocessed few-shot data from {json_path}")
            return cached
    elif os.path.isfile(pkl_path):
        legacy = read_legacy_fewshot(pkl_path, dataset_dir, splits)
        if legacy is not None:
            print(f"Loading preprocessed few-shot data from {pkl_path}")
            return legacy
        print(f"{pkl_path} does not match the current split: sampling new few-shot data (the pickle is kept)")
    sampled = _sample()
    write_fewshot_cache(json_path, dataset_dir, fingerprint, sampled)
    return sampled
