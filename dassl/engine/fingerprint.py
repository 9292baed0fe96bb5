"""What a run's result was computed with: the ``fingerprint`` stored in its ``result.json``.

Cheap by design (no image or weight is read): a few ``git`` calls, package metadata, and SHA-256 over the split
file and over the list of items the run used. Parts, each a small JSON value (``results.fingerprints`` compares
them and says which differ):

* ``code`` — ``commit`` of the git checkout holding this engine, ``dirty`` (tracked files changed since it) and
  ``diff_sha256`` (of ``git diff HEAD``, so two dirty trees with the same changes compare equal); where git cannot
  tell (no git checkout, git not installed) ``commit`` is None and ``note`` says why.
* ``packages`` — versions of python and of the installed packages that change results (absent ones left out).
* ``device`` — the device the run computed on, its name, the CPU kernel set torch dispatches to
  (``cpu_capability``: e.g. AVX2 or AVX512, which round differently), torch's CPU thread count (reductions split
  by thread round differently) and the CUDA / cuDNN versions.
* ``precision`` — the compute precision the trainer actually used (after its fallbacks, e.g. fp16 asked on a CPU
  runs fp32); None for a trainer without a precision policy.
* ``data`` — the split file (path, SHA-256 of its bytes) and, per split the run used (``train_x``, ``val``,
  ``test``), the item count and the SHA-256 of its items in order (image path relative to the dataset folder,
  label): the few-shot sample and the base/novel subsample a run actually saw.
* ``transforms`` — ``repr`` of the train and test transform pipelines the run applies (the trainer's
  ``transforms_used``).
* ``config`` — the full config.
"""
import hashlib
import importlib.metadata
import json
import os
import os.path as osp
import platform
import subprocess

FINGERPRINT_PARTS = ("code", "packages", "device", "precision", "data", "transforms", "config")
# Distributions whose version can change a result (looked up by name; those not installed are left out).
PACKAGES = ("torch", "torchvision", "numpy", "pillow", "clip-anytorch", "clip", "open_clip_torch", "scikit-learn",
            "ftfy")
CODE_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))  # the checkout holding dassl/
GIT_TIMEOUT_S = 10


def _git(*args):
    """stdout (bytes) of ``git args`` in CODE_ROOT; raises OSError / CalledProcessError / TimeoutExpired."""
    return subprocess.run(["git", "-C", CODE_ROOT, *args], capture_output=True, check=True,
                          timeout=GIT_TIMEOUT_S).stdout


def code_version():
    """``{"commit", "dirty", "diff_sha256"}`` of the checkout, or ``{"commit": None, "note"}`` without git."""
    try:
        commit = _git("rev-parse", "HEAD").decode().strip()
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no").strip())
        diff = _git("diff", "HEAD", "--binary") if dirty else b""
    except FileNotFoundError:
        return {"commit": None, "note": "git is not installed"}
    except subprocess.CalledProcessError as error:  # e.g. not a git repository, or one git refuses to read
        reason = (error.stderr or b"").decode(errors="replace").strip().splitlines()
        return {"commit": None, "note": f"git cannot read {CODE_ROOT}: {reason[0] if reason else error}"}
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"commit": None, "note": f"git failed in {CODE_ROOT}: {error}"}
    return {"commit": commit, "dirty": dirty, "diff_sha256": hashlib.sha256(diff).hexdigest() if dirty else None}


def package_versions():
    """``{name: version}`` of python and of the installed PACKAGES."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _cpu_name():
    """The CPU's model name (from /proc/cpuinfo where there is one), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device):
    """The device a run computes on: type, name, CPU kernel set and thread count, CUDA and cuDNN versions."""
    import torch

    device = torch.device(device)
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
    }


def file_sha256(path):
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _relative(impath, dataset_dir):
    """``impath`` relative to ``dataset_dir`` when it lies inside it (so a moved $DATA hashes the same)."""
    if dataset_dir and impath.startswith(dataset_dir.rstrip(os.sep) + os.sep):
        return osp.relpath(impath, dataset_dir)
    return impath


def items_digest(items, dataset_dir=""):
    """``{"n", "sha256"}`` of a list of Datum: their relative image paths and labels, in order."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{_relative(item.impath, dataset_dir)}\t{item.label}\n".encode())
    return {"n": len(items), "sha256": digest.hexdigest()}


def data_info(dataset):
    """The split file and the items of every split the run used (see the module docstring)."""
    dataset_dir = getattr(dataset, "dataset_dir", "") or ""
    split_path = getattr(dataset, "split_path", "") or ""
    try:
        split_sha256 = file_sha256(split_path) if split_path and osp.isfile(split_path) else None
    except OSError:  # read when the run started; a file made unreadable since is no reason to fail the run
        split_sha256 = None
    info = {"split_file": split_path or None, "split_file_sha256": split_sha256}
    for name in ("train_x", "val", "test"):
        items = getattr(dataset, name) or []
        info[name] = items_digest(items, dataset_dir)
    return info


def plain_config(cfg):
    """The config as plain JSON values (nested dicts; tuples become lists)."""
    return json.loads(json.dumps(cfg, default=str))


def run_fingerprint(trainer):
    """The fingerprint of ``trainer``'s run (a ``SimpleTrainer``; ``data`` is None for a trainer without the
    ``dm`` data manager of ``build_data_loader``)."""
    dm = getattr(trainer, "dm", None)
    return {
        "code": code_version(),
        "packages": package_versions(),
        "device": device_info(trainer.device),
        "precision": trainer.precision_used(),
        "data": data_info(dm.dataset) if dm is not None else None,
        "transforms": trainer.transforms_used(),
        "config": plain_config(trainer.cfg),
    }
