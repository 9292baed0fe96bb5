"""Load a frozen CLIP model by backbone name: OpenAI weights, local files, shipped and random-weight backbones.

This is the ``openai`` backbone family's loader (:mod:`clip_patch.backbones.openai` wraps its models as a
``Backbone``; other families live next to it in :mod:`clip_patch.backbones`).

Names (``MODEL.BACKBONE.NAME``):

* OpenAI backbones — ``RN50, RN101, RN50x4, RN50x16, RN50x64, ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px`` —
  are downloaded from the URLs of the ``clip`` package into the cache directory (``~/.cache/clip``, or
  ``$CLIP_CACHE_DIR``), checked against the SHA-256 embedded in the URL, and reused. A verified file is recorded
  in a small ``<file>.verified`` stamp (size + mtime + hash), so it is not re-hashed at every start.
* ``MODEL.BACKBONE.PATH`` loads a local file instead (TorchScript archive or plain OpenAI-format state dict).
* Shipped backbones (``MicroViT``) are small CLIPs trained by this project; their files live in ``assets/``.
* Random-weight backbones (see :mod:`clip_patch.random_backbones`) are for tests and benchmarks only.

Every model comes back in fp32, in eval mode, with ``requires_grad`` off: trainers decide precision and device.
"""
import functools
import hashlib
import os
import os.path as osp
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile

import torch
from tqdm import tqdm

from .openai_clip import openai_clip
from .random_backbones import RANDOM_BACKBONES, build_random_clip

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHIPPED_BACKBONES = {"MicroViT": osp.join(REPO_ROOT, "assets", "micro_clip", "MicroViT.pt")}
# The OpenAI backbone names of the clip package. Hard-coded so that no name lookup imports clip (and torchvision);
# their URLs (with the SHA-256 as the second-to-last path part) come from the package: see openai_backbones().
OPENAI_BACKBONE_NAMES = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14",
                         "ViT-L/14@336px")


def __getattr__(name):  # module attribute OPENAI_BACKBONES, made on first use
    if name == "OPENAI_BACKBONES":
        return openai_backbones()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.lru_cache(maxsize=None)
def openai_backbones():
    """``{name: download URL}`` of the OpenAI backbones (one dict, so tests can patch it)."""
    return dict(openai_clip().clip._MODELS)


class WeightsNotFoundError(FileNotFoundError):
    """CLIP weights are neither cached nor downloadable (e.g. offline)."""


def default_cache_dir():
    return osp.expanduser(os.environ.get("CLIP_CACHE_DIR", "~/.cache/clip"))


def available_backbones():
    return list(OPENAI_BACKBONE_NAMES) + list(SHIPPED_BACKBONES) + list(RANDOM_BACKBONES)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path):
    st = os.stat(path)
    return f"{st.st_size} {st.st_mtime_ns}"


def verify_file(path, expected_sha256):
    """True if ``path`` hashes to ``expected_sha256``; the result is remembered in ``<path>.verified``."""
    stamp_path = path + ".verified"
    if osp.isfile(stamp_path):
        with open(stamp_path) as f:
            if f.read().strip() == f"{_stamp(path)} {expected_sha256}":
                return True
    if _sha256(path) != expected_sha256:
        return False
    with open(stamp_path, "w") as f:
        f.write(f"{_stamp(path)} {expected_sha256}\n")
    return True


def _offline_message(name, url, target):
    return (
        f"CLIP weights for backbone '{name}' are not available: {target} does not exist and downloading it "
        f"failed.\n  URL: {url}\n  Fix: download that file on a machine with internet access and copy it to "
        f"{target} (or to $CLIP_CACHE_DIR), or point MODEL.BACKBONE.PATH at a local copy."
    )


def download_weights(name, cache_dir=None):
    """Return the local path of an OpenAI backbone's weights, downloading and verifying them if needed."""
    url = openai_backbones()[name]
    expected = url.split("/")[-2]
    cache_dir = cache_dir or default_cache_dir()
    target = osp.join(cache_dir, osp.basename(url))
    if osp.isfile(target):
        if verify_file(target, expected):
            return target
        warnings.warn(f"{target} exists but its SHA-256 does not match; downloading it again")
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as source:
            total = int(source.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="iB", unit_scale=True, desc=f"CLIP {name}") as bar:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        os.remove(tmp)
        raise WeightsNotFoundError(_offline_message(name, url, target) + f"\n  Cause: {err}") from err
    if not verify_file(tmp, expected):
        os.remove(tmp)
        raise RuntimeError(f"Downloaded {url} but its SHA-256 does not match {expected}; try again.")
    os.replace(tmp, target)
    os.replace(tmp + ".verified", target + ".verified")
    return target


def is_torchscript(path):
    """OpenAI's release files are TorchScript archives: zip files holding a ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def read_state_dict(path):
    """OpenAI-format state dict from a TorchScript archive (OpenAI's release format) or a plain saved dict.

    Raises ``WeightsNotFoundError`` for a missing file and ``ValueError`` (naming the file) for one that is not a
    CLIP weights file; a plain file is read with ``weights_only=True`` (it never runs code).
    """
    if not osp.isfile(path):
        raise WeightsNotFoundError(f"CLIP weights file not found: {path}")
    try:
        if is_torchscript(path):
            with warnings.catch_warnings():  # torch.jit.load is deprecated, but it is the format OpenAI released
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(path, map_location="cpu").state_dict()
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors, bad zip archives, truncated files
        raise ValueError(_not_clip_message(path, f"{type(err).__name__}: {str(err).splitlines()[0]}")) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(_not_clip_message(path, "it does not hold a state dict of tensors"))
    return state


def _not_clip_message(path, why):
    return (f"{path} is not a CLIP weights file ({why}): use an OpenAI CLIP file (e.g. ViT-B-16.pt from "
            "~/.cache/clip) for MODEL.BACKBONE.PATH, or set it to '' to load MODEL.BACKBONE.NAME")


def build_from_state_dict(state_dict, source="the weights"):
    """``clip.model.build_model`` without its fp16 round trip: the weights keep the precision they were saved in."""
    try:
        model = openai_clip().model.build_model(dict(state_dict)).float()  # infers the architecture (and casts to fp16 on the way)
        metadata = ("input_resolution", "context_length", "vocab_size")
        model.load_state_dict({k: v for k, v in state_dict.items() if k not in metadata})  # exact values, fp32
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError) as err:
        detail = f"missing {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise ValueError(_not_clip_message(source, f"not a CLIP architecture: {detail}")) from None
    return model


def locate_weights(name, path="", cache_dir=None):
    """The weights file that ``load_clip(name, path, cache_dir)`` will read (downloading an OpenAI backbone now if it
    is not cached), or None for random-weight backbones. Raises the same clear errors as ``load_clip``, before any model
    is built."""
    if path:
        if not osp.isfile(path):
            raise WeightsNotFoundError(
                f"MODEL.BACKBONE.PATH points to {path}, which does not exist. Fix the path, or set it to '' to "
                f"load backbone '{name}' by name."
            )
        return path
    if name in RANDOM_BACKBONES:
        return None
    if name in SHIPPED_BACKBONES:
        return SHIPPED_BACKBONES[name]
    if name in OPENAI_BACKBONE_NAMES or name in openai_backbones():
        return download_weights(name, cache_dir)
    raise ValueError(
        f"Unknown CLIP backbone '{name}'. Set MODEL.BACKBONE.NAME to one of {available_backbones()}, "
        f"or set MODEL.BACKBONE.PATH to a local weights file."
    )


def load_clip(name, path="", cache_dir=None):
    """Frozen fp32 CLIP (``clip.model.CLIP``) for ``name``, or from ``path`` when given."""
    weights = locate_weights(name, path, cache_dir)
    model = build_random_clip(name) if weights is None else build_from_state_dict(read_state_dict(weights), weights)
    model = model.float().eval()
    model.requires_grad_(False)
    return model
