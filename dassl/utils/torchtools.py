"""Checkpoint files (save / load / resume) and small model helpers."""

import os
import os.path as osp
import pickle
import shutil
import warnings
from collections import OrderedDict

import torch
import torch.nn as nn

from .tools import mkdir_if_missing

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "resume_from_checkpoint",
    "load_pretrained_weights",
    "count_num_param",
]

CHECKPOINT_POINTER = "checkpoint"  # text file naming the most recently saved checkpoint
BEST_CHECKPOINT = "model-best.pth.tar"

# What torch.load(weights_only=True) reads back. Exact types on purpose: subclasses such as
# numpy.float64 (a float subclass) pickle as foreign objects and would break weights_only loading.
_PLAIN_SCALAR_TYPES = (str, bytes, int, float, complex, bool, type(None))
_PLAIN_TORCH_TYPES = (torch.Tensor, torch.dtype, torch.device)
_PLAIN_DICT_TYPES = (dict, OrderedDict)
_PLAIN_SEQUENCE_TYPES = (list, tuple, set, torch.Size)


def _check_plain(value, where):
    """Raise TypeError if ``value`` holds anything but tensors and plain Python values."""
    if type(value) in _PLAIN_SCALAR_TYPES or isinstance(value, _PLAIN_TORCH_TYPES):
        return
    if type(value) in _PLAIN_DICT_TYPES:
        for key, item in value.items():
            _check_plain(key, f"{where} key")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in _PLAIN_SEQUENCE_TYPES:
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"Checkpoint entry {where} is a {type(value).__name__}; checkpoints may hold only tensors and "
        "plain Python values (so torch.load(weights_only=True) reads them). Store its state_dict() or "
        "convert it with float()/int()/.tolist()."
    )


def _atomic_write(fpath, write_fn):
    """Call ``write_fn(tmp_path)`` then move the result onto ``fpath`` (no half-written file on a crash)."""
    tmp_path = f"{fpath}.tmp-{os.getpid()}"
    try:
        write_fn(tmp_path)
        os.replace(tmp_path, fpath)
    finally:
        if osp.exists(tmp_path):
            os.remove(tmp_path)


def _strip_module_prefix(state_dict):
    """Remove the ``module.`` prefix that ``nn.DataParallel`` adds to keys."""
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    """Save a checkpoint dict to ``save_dir`` and point ``save_dir/checkpoint`` at it.

    Args:
        state (dict): ``{"state_dict", "epoch", "optimizer", "scheduler", "val_result"}``;
            only tensors and plain Python values are accepted.
        save_dir (str): folder (created if missing).
        is_best (bool): also copy the file to ``model-best.pth.tar``.
        remove_module_from_keys (bool): strip ``module.`` from the state-dict keys.
        model_name (str): file name; default ``model.pth.tar-<epoch>``.

    Returns:
        str: the path written.
    """
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state = dict(state, state_dict=_strip_module_prefix(state["state_dict"]))
    _check_plain(state, "state")

    if not model_name:
        model_name = f"model.pth.tar-{state['epoch']}"
    fpath = osp.join(save_dir, model_name)
    _atomic_write(fpath, lambda tmp: torch.save(state, tmp))
    print(f"Checkpoint saved to {fpath}")

    def write_pointer(tmp):
        with open(tmp, "w") as f:
            f.write(f"{osp.basename(fpath)}\n")

    _atomic_write(osp.join(save_dir, CHECKPOINT_POINTER), write_pointer)

    if is_best:
        best_fpath = osp.join(save_dir, BEST_CHECKPOINT)
        _atomic_write(best_fpath, lambda tmp: shutil.copyfile(fpath, tmp))
        print(f'Best checkpoint saved to "{best_fpath}"')
    return fpath


def _torch_load(fpath, map_location, weights_only):
    """torch.load with a latin1 retry for checkpoints pickled by Python 2."""
    try:
        return torch.load(fpath, map_location=map_location, weights_only=weights_only)
    except UnicodeDecodeError:
        return torch.load(fpath, map_location=map_location, weights_only=weights_only, encoding="latin1")


def load_checkpoint(fpath):
    """Load a checkpoint, mapped to CPU when CUDA is absent.

    The file is first read with ``torch.load(weights_only=True)``, which is how every checkpoint this
    project writes loads. Checkpoints written by old Dassl contain pickled Python objects (the warm-up
    scheduler's ``successor``) and fail that way; for those a one-line notice is printed and the file is
    read again with ``weights_only=False``, which executes pickled code: only load files you trust.

    Raises:
        FileNotFoundError: ``fpath`` does not exist.
    """
    if fpath is None:
        raise ValueError("load_checkpoint() got fpath=None; pass the path of a checkpoint file")
    if not osp.exists(fpath):
        raise FileNotFoundError(f'Checkpoint file not found at "{fpath}"')
    map_location = None if torch.cuda.is_available() else "cpu"
    try:
        return _torch_load(fpath, map_location, weights_only=True)
    except pickle.UnpicklingError:
        print(
            f'Note: "{fpath}" holds pickled Python objects (written by old Dassl); '
            "loading it with weights_only=False (only do this for files you trust)"
        )
        return _torch_load(fpath, map_location, weights_only=False)


def _read_pointer(fdir):
    pointer = osp.join(fdir, CHECKPOINT_POINTER)
    if not osp.exists(pointer):
        raise FileNotFoundError(
            f'No "{CHECKPOINT_POINTER}" pointer file in "{fdir}"; it is written by save_checkpoint() '
            "next to the checkpoints. Delete the folder to train from scratch."
        )
    with open(pointer, "r") as f:
        return f.readline().strip()


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    """Restore model / optimizer / scheduler from the checkpoint named by ``fdir/checkpoint``.

    Returns:
        int: the stored epoch (number of finished epochs), i.e. the epoch to start from.
    """
    fpath = osp.join(fdir, _read_pointer(fdir))
    print(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    model.load_state_dict(checkpoint["state_dict"])
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def load_pretrained_weights(model, weight_path):
    """Copy every tensor of ``weight_path`` whose key and shape match ``model``; report the rest.

    Accepts a checkpoint dict (with ``state_dict``) or a bare state dict.
    """
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint)
    state_dict = _strip_module_prefix(state_dict)
    model_dict = model.state_dict()

    matched, discarded = OrderedDict(), []
    for key, value in state_dict.items():
        if key in model_dict and model_dict[key].size() == value.size():
            matched[key] = value
        else:
            discarded.append(key)
    model_dict.update(matched)
    model.load_state_dict(model_dict)

    if not matched:
        warnings.warn(
            f'Cannot load "{weight_path}": no key/shape matches the model; check that the weights '
            "belong to this architecture"
        )
        return
    print(f'Successfully loaded pretrained weights from "{weight_path}"')
    if discarded:
        print(f"Layers discarded due to unmatched keys or size: {discarded}")


def count_num_param(model=None, params=None):
    """Number of scalars in ``model`` (an ``nn.Module``) or in an iterable of tensors ``params``."""
    if model is not None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"count_num_param(model=...) expects an nn.Module, got {type(model).__name__}")
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        return sum(p.numel() for p in params)
    raise ValueError("count_num_param() needs model or params")
