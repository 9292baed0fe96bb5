"""Checkpoint files (save / load / resume) and small model helpers."""

import os.path as osp
import pickle
import shutil
import warnings
from collections import OrderedDict

import torch
import torch.nn as nn

from dassl.engine.run_dir import (BEST_CHECKPOINT, EPOCH_CHECKPOINT, EPOCH_CHECKPOINT_PREFIX, checkpoint_epochs,
                                  checkpoint_file)

from .tools import atomic_write, mkdir_if_missing

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "resume_from_checkpoint",
    "restore_checkpoint",
    "checkpoint_epochs",
    "CheckpointError",
    "load_pretrained_weights",
    "count_num_param",
]

CHECKPOINT_POINTER = "checkpoint"  # text file naming the most recently saved epoch checkpoint (the resume point)

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


def _strip_module_prefix(state_dict):
    """Remove the ``module.`` prefix that ``nn.DataParallel`` adds to keys."""
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    """Save a checkpoint dict to ``save_dir``; an epoch file also becomes the target of ``save_dir/checkpoint``.

    Every file is written atomically (temporary file, fsync, rename): a kill or a full disk at any point leaves the
    previous files intact and no partial file. Unlike Dassl, saving ``model-best.pth.tar`` does not move the
    ``checkpoint`` pointer (which names the newest epoch file, the resume point).

    Args:
        state (dict): ``{"state_dict", "epoch", "optimizer", "scheduler", "val_result"}`` (+ optional entries such
            as ``"run_state"``); only tensors and plain Python values are accepted.
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
        model_name = checkpoint_file(state["epoch"])
    fpath = osp.join(save_dir, model_name)
    atomic_write(fpath, lambda tmp: torch_save(state, tmp))
    print(f"Checkpoint saved to {fpath}")

    if EPOCH_CHECKPOINT.match(model_name):
        def write_pointer(tmp):
            with open(tmp, "w") as f:
                f.write(f"{model_name}\n")

        atomic_write(osp.join(save_dir, CHECKPOINT_POINTER), write_pointer)

    if is_best:
        best_fpath = osp.join(save_dir, BEST_CHECKPOINT)
        atomic_write(best_fpath, lambda tmp: shutil.copyfile(fpath, tmp))
        print(f'Best checkpoint saved to "{best_fpath}"')
    return fpath


def torch_save(state, fpath):
    """``torch.save`` through a Python file object, so that a full disk raises ``OSError(ENOSPC)`` (given a path,
    torch's own writer fails with an opaque "[enforce fail at inline_container.cc] unexpected pos" instead)."""
    with open(fpath, "wb") as f:
        torch.save(state, f)


def _torch_load(fpath, map_location):
    """``torch.load(weights_only=True)``, retried with latin1 for checkpoints pickled by Python 2."""
    try:
        return torch.load(fpath, map_location=map_location, weights_only=True)
    except UnicodeDecodeError:
        return torch.load(fpath, map_location=map_location, weights_only=True, encoding="latin1")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely or is incomplete; the message says what to do."""


def load_checkpoint(fpath):
    """Load a checkpoint, mapped to CPU when CUDA is absent, without ever executing code stored in it.

    The file is read with ``torch.load(weights_only=True)`` only: tensors and plain Python values. A file holding
    pickled objects — e.g. a checkpoint written by Dassl, whose warm-up scheduler state holds its successor
    scheduler object (the released MaPLe, PromptSRC and BMIP weights) — is refused with :class:`CheckpointError`
    naming what it holds and the one way to convert a file you trust:
    ``python -m dassl.utils.convert_checkpoint --trust IN OUT`` (docs/ENGINE.md).

    Raises:
        FileNotFoundError: ``fpath`` does not exist.
        CheckpointError: the file holds other pickled objects, or is not a checkpoint at all.
    """
    if fpath is None:
        raise ValueError("load_checkpoint() got fpath=None; pass the path of a checkpoint file")
    if not osp.exists(fpath):
        raise FileNotFoundError(f'Checkpoint file not found at "{fpath}"')
    map_location = None if torch.cuda.is_available() else "cpu"
    try:
        return _torch_load(fpath, map_location)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_unsafe_checkpoint_message(fpath, err)) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(
            f'"{fpath}" is not a readable checkpoint ({type(err).__name__}: {str(err).splitlines()[0]}); '
            "it is truncated or not a torch checkpoint: re-create it, or point to the right file"
        ) from None


def _unsafe_checkpoint_message(fpath, err):
    try:
        unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(fpath))  # torch returns a set's order
    except Exception:  # not a zip checkpoint: its globals cannot be listed without unpickling
        unsafe = []
    held = ", ".join(unsafe[:8]) + (", ..." if len(unsafe) > 8 else "") if unsafe else "not only tensors"
    return (
        f'"{fpath}" holds pickled Python objects ({held}) that loading could execute, so it was not loaded '
        "(Dassl-written checkpoints, e.g. released MaPLe/PromptSRC/BMIP weights, are like this). If you trust the "
        f"file, convert it once: python -m dassl.utils.convert_checkpoint --trust {fpath} CONVERTED.pth.tar"
    )


def _read_pointer(fdir):
    """The file named by ``fdir/checkpoint``, or None when the pointer is missing or names no existing file."""
    pointer = osp.join(fdir, CHECKPOINT_POINTER)
    if not osp.exists(pointer):
        return None
    with open(pointer, "r") as f:
        name = f.readline().strip()
    return name if name and osp.isfile(osp.join(fdir, name)) else None


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    """Restore model / optimizer / scheduler from the checkpoint named by ``fdir/checkpoint`` (the newest
    ``model.pth.tar-N`` when the pointer is missing, e.g. after a kill during the first save).

    Returns:
        int: the stored epoch (number of finished epochs), i.e. the epoch to start from.
    """
    name = _read_pointer(fdir)
    if name is None:
        epochs = checkpoint_epochs(fdir)
        if not epochs:
            raise FileNotFoundError(
                f'No checkpoint to resume from in "{fdir}" (no "{CHECKPOINT_POINTER}" pointer and no '
                f"{EPOCH_CHECKPOINT_PREFIX}N file)"
            )
        name = checkpoint_file(epochs[-1])
    fpath = osp.join(fdir, name)
    print(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    restore_checkpoint(checkpoint, model, optimizer, scheduler)
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def restore_checkpoint(checkpoint, model, optimizer=None, scheduler=None):
    """Load a checkpoint dict's model, optimizer and scheduler states (those present) into the live objects."""
    model.load_state_dict(checkpoint["state_dict"])
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")


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
