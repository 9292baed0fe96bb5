"""Frozen CLIP image features of a dataset split, extracted once and cached on disk.

Used by the linear-probe baseline (``trainers/linear_probe.py``), which fits on the features of the train and
val splits of every (dataset, shots, seed) run.

**Where.** ``$CLIP_FEATURES_DIR/<DATASET.NAME>/`` when that variable is set (e.g. when ``$DATA`` is read-only),
else ``<dataset folder>/clip_features/`` (e.g. ``$DATA/dtd/clip_features/``), else
``<DATASET.ROOT>/clip_features/<DATASET.NAME>/`` for a dataset without its own folder.

**Key.** One file per split and exact content: ``<split>-<backbone>-<key digest>.pt``, where the digest covers
the backbone name, a SHA-256 of the image encoder's weights and its dtype, the ordered image list (paths relative
to the dataset folder, labels) and the test-time transform (its ``repr``: size, interpolation, crop,
normalisation). Change any of them and a new file is written; nothing stale is ever read. Files are written
atomically (a temporary file, then a rename), so parallel runs never read half a file; a file that cannot be read
anyway (damaged on disk) is reported in one line and recomputed. Delete the folder to reclaim the space.
"""
import hashlib
import os
import sys

import torch
from torch.utils.data import SequentialSampler
from tqdm import tqdm

from dassl.utils import atomic_write
from dassl.utils.torchtools import torch_save
from datasets.splits import relative_to

FEATURES_ENV = "CLIP_FEATURES_DIR"
CACHE_VERSION = 1


def cache_folder(cfg, dataset):
    """The folder holding the feature files of ``dataset`` (see the module docstring)."""
    override = os.environ.get(FEATURES_ENV, "")
    if override:
        return os.path.join(os.path.expanduser(override), cfg.DATASET.NAME)
    dataset_dir = getattr(dataset, "dataset_dir", "")
    if dataset_dir and os.path.isabs(dataset_dir):
        return os.path.join(dataset_dir, "clip_features")
    return os.path.join(os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)), "clip_features", cfg.DATASET.NAME)


def weights_digest(module):
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes): the identity of frozen weights."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def image_list_digest(data_source, root):
    """SHA-256 of the ordered (path relative to ``root``, label) list of a split."""
    digest = hashlib.sha256()
    for item in data_source:
        path = relative_to(item.impath, root) if root else item.impath
        digest.update(f"{path}\t{item.label}\n".encode())
    return digest.hexdigest()


def extract_features(encode, loader, desc):
    """Run ``encode(images [B, 3, H, W]) -> [B, E]`` over ``loader``; returns (features [N, E] fp32 CPU, labels [N]).

    A progress bar is shown on a terminal only.
    """
    features, labels = [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="batch", file=sys.stderr, disable=None, leave=False,
                          dynamic_ncols=True):
            features.append(encode(batch["img"]).float().cpu())  # [B, E]
            labels.append(batch["label"].cpu())
    return torch.cat(features), torch.cat(labels)


def read_cache(path, key):
    """(features, labels) stored in the cache file ``path`` under ``key``; None when the file is absent, holds
    another key, or cannot be read (a warning line names it: it is recomputed and replaced)."""
    if not os.path.isfile(path):
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.get("key") != key:
            return None
        return cached["features"], cached["labels"]
    except Exception as err:  # noqa: BLE001 (truncated or foreign file: unpickling, zip and type errors alike)
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        print(f"Warning: the feature cache {path} is unreadable ({reason}); recomputing it")
        return None


def cached_image_features(encode, loader, split, folder, encoder, image_root=""):
    """Features and labels of every image of ``loader`` (a sequential loader), from the cache or extracted.

    ``encoder`` identifies the encoding: ``{"backbone": name, "weights": weights_digest(...), "dtype": ...}``;
    ``folder`` is :func:`cache_folder`; image paths are keyed relative to ``image_root`` (the dataset folder, so a
    moved ``$DATA`` keeps its cache; "" = absolute paths). Returns (features [N, E] fp32, labels [N] int64).
    """
    if not isinstance(loader.sampler, SequentialSampler):
        raise ValueError(f"Feature caching needs a sequential loader for the {split} split, got "
                         f"{type(loader.sampler).__name__}: set DATALOADER.TEST.SAMPLER SequentialSampler")
    data_source = loader.dataset.data_source
    key = {
        "version": CACHE_VERSION,
        "split": split,
        **{k: str(v) for k, v in encoder.items()},
        "images": image_list_digest(data_source, image_root),
        "num_images": str(len(data_source)),
        "transform": repr(loader.dataset.transform),
    }
    key_digest = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:16]
    backbone = str(encoder.get("backbone", "clip")).replace("/", "-").replace("@", "-")
    path = os.path.join(folder, f"{split}-{backbone}-{key_digest}.pt")
    cached = read_cache(path, key)
    if cached is not None:
        print(f"Loading cached image features of the {split} split ({len(data_source)} images) from {path}")
        return cached
    print(f"Extracting image features of the {split} split ({len(data_source)} images)")
    features, labels = extract_features(encode, loader, desc=f"Features ({split})")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda tmp: torch_save({"key": key, "features": features, "labels": labels}, tmp))
        print(f"Cached them in {path}")
    except OSError as err:
        print(f"Warning: could not cache the features in {path} ({err}); set {FEATURES_ENV} to a writable folder")
    return features, labels
