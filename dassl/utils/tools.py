"""File-system, JSON, image, seeding and name-lookup helpers."""

import difflib
import errno
import json
import os
import os.path as osp
import random
import warnings

import numpy as np
import PIL
import torch
from PIL import Image

__all__ = [
    "mkdir_if_missing",
    "check_isfile",
    "read_json",
    "write_json",
    "set_random_seed",
    "collect_env_info",
    "listdir_nohidden",
    "get_most_similar_str_to_a_from_b",
    "check_availability",
    "tolist_if_not",
    "read_image",
    "atomic_write",
    "remove_stale_temp_files",
    "DiskFull",
    "is_disk_full",
]

TEMP_MARKER = ".tmp-"  # atomic_write's temporary files are named <file>.tmp-<pid>


def mkdir_if_missing(dirname):
    """Create ``dirname`` (and parents) unless it already exists."""
    if not osp.exists(dirname):
        try:
            os.makedirs(dirname)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise


def check_isfile(fpath):
    """Return True if ``fpath`` is an existing file; warn (naming the path) otherwise."""
    isfile = osp.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"')
    return isfile


def read_json(fpath):
    """Load a JSON file."""
    with open(fpath, "r") as f:
        return json.load(f)


def write_json(obj, fpath):
    """Write ``obj`` as indented JSON, atomically, creating the parent folder if needed."""
    mkdir_if_missing(osp.dirname(osp.abspath(fpath)))

    def write(tmp_path):
        with open(tmp_path, "w") as f:
            json.dump(obj, f, indent=4, separators=(",", ": "))

    atomic_write(fpath, write)


def _fsync_dir(dirname):
    """Make a rename in ``dirname`` durable (best effort: some file systems cannot open folders)."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DiskFull(OSError):
    """The device (or the user's quota) ran out of space while a file was written; the message names the file and
    the fix. Every file a run writes is written atomically, so re-running the same command resumes the run."""

    def __init__(self, path):
        super().__init__(errno.ENOSPC, f"no space left on the device while writing {path}; free space and re-run "
                                       "the same command to resume")

    def __str__(self):
        return self.strerror


def is_disk_full(error):
    """Whether ``error`` says the device or the quota is full."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def atomic_write(fpath, write_fn):
    """Create or replace ``fpath`` all at once: ``write_fn(tmp_path)`` writes a temporary file beside it, which is
    flushed to disk and renamed onto ``fpath``. A crash, a kill or a full disk at any point leaves either the old
    file or the new one, never a partial file; on an exception the temporary file is removed and the error raised
    (a full disk as :class:`DiskFull`, naming ``fpath``).
    """
    tmp_path = f"{fpath}{TEMP_MARKER}{os.getpid()}"
    try:
        write_fn(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, fpath)
    except OSError as error:
        if is_disk_full(error) and not isinstance(error, DiskFull):
            raise DiskFull(fpath) from error
        raise
    finally:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
    _fsync_dir(osp.dirname(osp.abspath(fpath)))


def remove_stale_temp_files(dirname):
    """Delete the temporary files that a killed ``atomic_write`` left in ``dirname`` and its subfolders (a run
    folder's checkpoint folders); return their paths relative to ``dirname``.

    Only call this while owning the folder (holding the output-folder lock): a live writer's file would go too.
    """
    if not osp.isdir(dirname):
        return []
    folders = [""] + [d for d in os.listdir(dirname) if osp.isdir(osp.join(dirname, d))]  # not deeper: no other run
    stale = sorted(osp.join(d, f) for d in folders for f in os.listdir(osp.join(dirname, d))
                   if TEMP_MARKER in f and osp.isfile(osp.join(dirname, d, f)))
    for name in stale:
        os.remove(osp.join(dirname, name))
    return stale


def set_random_seed(seed):
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def collect_env_info():
    """The versions and devices a result depends on, printed under ``** System info **``.

    Unlike Dassl (torch's ``collect_env``: ~100-400 lines, a second of subprocesses, CPU vulnerability flags), this
    reads only what is already loaded: Python, OS, PyTorch and its CUDA/cuDNN builds, the GPUs, NumPy and Pillow.
    """
    import platform
    import sys

    lines = [
        f"Python: {sys.version.split()[0]} ({platform.python_implementation()})",
        f"OS: {platform.platform()}",
        f"PyTorch: {torch.__version__} (CUDA {torch.version.cuda or 'none'}, "
        f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'none'})",
        f"CPU threads: {torch.get_num_threads()}",
    ]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"GPUs: {', '.join(names)}")
    else:
        lines.append("GPUs: none visible")
    lines.append(f"NumPy: {np.__version__}; Pillow: {PIL.__version__}")
    return "\n".join(lines)


def listdir_nohidden(path, sort=False):
    """List the entries of ``path`` that do not start with a dot, optionally sorted."""
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    if sort:
        items.sort()
    return items


def get_most_similar_str_to_a_from_b(a, b):
    """Return the string in ``b`` most similar to ``a``: the one equal to it but for letter case if there is one
    (``Coop`` -> ``CoOp``), else the best difflib ratio; None when ``b`` is empty."""
    for candidate in b:
        if candidate.lower() == a.lower():
            return candidate
    best_ratio, best = 0.0, None
    for candidate in b:
        ratio = difflib.SequenceMatcher(None, a, candidate).ratio()
        if best is None or ratio > best_ratio:
            best_ratio, best = ratio, candidate
    return best


def check_availability(requested, available):
    """Raise Dassl's ``ValueError`` (with a "do you mean" hint) if ``requested`` is not in ``available``."""
    if requested not in available:
        suggestion = get_most_similar_str_to_a_from_b(requested, available)
        raise ValueError(
            f"The requested one is expected to belong to {available}, "
            f"but got [{requested}] (do you mean [{suggestion}]?)"
        )


def tolist_if_not(x):
    """Wrap ``x`` in a list unless it already is one."""
    if not isinstance(x, list):
        x = [x]
    return x


def read_image(path):
    """Read an image as a PIL RGB image.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the image has more pixels than PIL's safety limit (``Image.MAX_IMAGE_PIXELS``), above which
            PIL refuses to decode it (a possible decompression bomb).
        OSError: the file exists but cannot be decoded as an image.
    """
    if not osp.exists(path):
        raise FileNotFoundError(
            f'No image file at "{path}". Check DATASET.ROOT and that the dataset folder matches '
            "the layout in DATASETS.md."
        )
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Image.DecompressionBombError as e:
        raise ValueError(
            f'Image "{path}" is larger than PIL\'s safety limit of {2 * Image.MAX_IMAGE_PIXELS} pixels ({e}): '
            "resize it, or remove it from the split."
        ) from e
    except OSError as e:
        raise OSError(
            f'Cannot decode image "{path}" ({e}). The file is corrupt or not an image: '
            "re-download it, or remove it from the split."
        ) from e
