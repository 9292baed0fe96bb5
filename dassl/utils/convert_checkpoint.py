"""Convert a checkpoint you trust into one that loads without executing code.

    python -m dassl.utils.convert_checkpoint --trust IN.pth.tar OUT.pth.tar

``load_checkpoint`` never runs code stored in a file: it reads tensors and plain Python values only, and refuses a
file holding pickled objects (Dassl-written checkpoints hold optimizer / scheduler objects and NumPy scalars).
This command is the one explicit way past that: it reads IN with ``torch.load(weights_only=False)`` — which executes whatever the
file contains, so only use it on files whose origin you trust — turns every object that has a ``state_dict()``
(optimizers, schedulers, modules) into that state dict and NumPy scalars/arrays into Python values/tensors, and
writes OUT, which then loads normally. IN is never modified.
"""
import argparse
import sys
from collections import OrderedDict

import numpy as np
import torch

from dassl.cli import OneLineArgumentParser
from .torchtools import _check_plain, torch_save
from .tools import atomic_write


def to_plain(value):
    """``value`` with objects replaced by plain data: ``state_dict()`` of objects that have one, NumPy -> Python."""
    if isinstance(value, np.generic):  # before the Python types: numpy.float64 is a float subclass
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (torch.Tensor, str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device)):
        return value
    if isinstance(value, dict):
        plain = OrderedDict() if isinstance(value, OrderedDict) else {}
        for key, item in value.items():
            plain[to_plain(key)] = to_plain(item)
        return plain
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(item) for item in value) if type(value) in (list, tuple) else list(map(to_plain, value))
    if callable(getattr(value, "state_dict", None)):
        return to_plain(value.state_dict())
    raise TypeError(f"cannot convert a {type(value).__module__}.{type(value).__qualname__} to plain data")


def convert(src, dst):
    """Read ``src`` (executing its pickled objects), write the plain-data version to ``dst``; return the dict."""
    checkpoint = torch.load(src, map_location="cpu", weights_only=False)
    plain = to_plain(checkpoint)
    _check_plain(plain, "state")
    atomic_write(dst, lambda tmp: torch_save(plain, tmp))
    return plain


def main(argv=None):
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="checkpoint to convert (read with weights_only=False: it may execute code)")
    parser.add_argument("dst", help="where to write the converted checkpoint")
    parser.add_argument("--trust", action="store_true", help="confirm that you trust SRC (required)")
    args = parser.parse_args(argv)
    if not args.trust:
        print(f"error: reading {args.src} executes the Python objects pickled in it; pass --trust if you trust "
              "its origin", file=sys.stderr)
        return 2
    if args.src == args.dst:
        print("error: write the converted file to another path (SRC is never modified)", file=sys.stderr)
        return 2
    try:
        convert(args.src, args.dst)
    except (OSError, TypeError, RuntimeError) as err:
        print(f"error: {args.src}: {err}", file=sys.stderr)
        return 1
    print(f"Converted {args.src} -> {args.dst} (plain data; loads with weights_only=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
