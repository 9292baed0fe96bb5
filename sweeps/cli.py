"""Command-line options shared by the protocol runner and the sweep runner."""
import shlex
import sys
from pathlib import Path

from sweeps.jobs import REPO_ROOT, RunContext, data_root_from_env


def split_opts(argv):
    """Split ``argv`` at the first ``--``: (runner arguments, ``KEY VALUE`` opts passed to every train.py)."""
    if "--" in argv:
        at = argv.index("--")
        opts = argv[at + 1:]
    else:
        at, opts = len(argv), []
    if len(opts) % 2:
        raise SystemExit(f"error: the opts after `--` must be KEY VALUE pairs, got an odd count: {opts}")
    return argv[:at], opts


def add_common_options(parser):
    """Options of every runner: where things are, which interpreter, dry run."""
    parser.add_argument("--dry-run", action="store_true",
                        help="print the skip/resume/run decision and the command of every job; run nothing")
    parser.add_argument("--python", default=None,
                        help="interpreter command for train.py (default: this Python); may hold arguments")
    parser.add_argument("--train-py", type=Path, default=REPO_ROOT / "train.py",
                        help="the training script (default: the repository's train.py)")
    parser.add_argument("--configs", type=Path, default=REPO_ROOT / "configs",
                        help="folder holding datasets/<name>.yaml and trainers/<TRAINER>/<CFG>.yaml")


def context_from_args(args, opts, device=None, env=None):
    """A ``RunContext`` from parsed common options; ``$DATA`` is checked here (SetupError if bad)."""
    python = tuple(shlex.split(args.python)) if args.python else (sys.executable,)
    return RunContext(data_root=data_root_from_env(), python=python, train_py=args.train_py,
                      config_root=args.configs, device=device, extra_opts=tuple(opts), env=dict(env or {}))

