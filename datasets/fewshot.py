"""The few-shot protocol's cache, and the ecosystem's pickles.

`load_or_sample_fewshot` gives K shots per class of train (min(K, 4) of val) and caches them in
`<dataset_dir>/split_fewshot/shot_K-seed_S.json`: paths relative to the dataset folder, plus a SHA-256
fingerprint of the split they were drawn from, so a moved `$DATA` keeps its cache and a changed split
redraws it. The ecosystem's `shot_K-seed_S.pkl` is read (never rewritten) when it matches the current
split; `read_legacy_pickle` reads such pickles (also ImageNet's `preprocessed.pkl`) without running code.
"""

import hashlib
import os

from dassl.data.datasets import Datum
from dassl.utils import write_json
from dassl.utils.safe_pickle import ForbiddenPickleContent, restricted_pickle_load

from .splits import FEWSHOT_DIRNAME, Entry, path_inside, read_json_file, relative_to

FEWSHOT_CACHE_VERSION = 1
# What an ecosystem pickle (few-shot `shot_K-seed_S.pkl`, ImageNet's `preprocessed.pkl`) holds besides dicts and
# lists: Dassl's Datum (pickled by its class path).
LEGACY_DATUM_GLOBALS = {("dassl.data.datasets.base_dataset", "Datum")}


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
