"""What the analysis command lines share: train.py's flags build the model, ``--model-dir`` loads its weights.

Every tool accepts train.py's flags (``--root``, ``--config-file``, ``--dataset-config-file``, ``--trainer``,
``--model-dir``, ``--load-epoch``, trailing ``KEY VALUE`` pairs, ...) plus its own, which go before the
``KEY VALUE`` pairs. The model is built exactly as for ``train.py --eval-only``; nothing is written to the
model's folder except the tool's own outputs (no log file). Bad input ends a tool in one line on stderr, exit
status 2 (:func:`fail`).

The tools import torch, CLIP and the trainers only after their arguments are parsed and checked, so ``--help`` and
argument errors answer at once.
"""
import contextlib
import os
import sys

from dassl.engine.run_dir import deployed_epoch
from runs.checks import check_trailing_opts
from runs.config import build_parser as run_parser
from runs.config import setup_cfg
from runs.errors import UsageError, error_text


def fail(message):
    """End the tool for bad input: ``error: <message>`` on stderr (one line: what is wrong and the fix), exit 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def build_parser(prog, description):
    """train.py's parser, renamed; tools add their flags to it."""
    parser = run_parser()
    parser.prog, parser.description = prog, description
    return parser


def load_trained(args, require_model=True):
    """The trainer of train.py's flags with the weights of ``--model-dir`` loaded: ``--load-epoch N``, or by default
    the model the training run deployed (``model-best.pth.tar`` if it saved one, else the newest
    ``model.pth.tar-N``, as the protocol scripts choose). Build messages go to stderr, so a tool's stdout holds only
    its report; a bad flag or a missing checkpoint ends the tool with one line.
    """
    try:
        check_trailing_opts(args.opts or [])
    except UsageError as err:
        fail(str(err))
    if require_model and not args.model_dir:
        fail("pass --model-dir (the training run's --output-dir) to load the trained model")
    if args.model_dir and not os.path.isdir(args.model_dir):
        fail(f"--model-dir {args.model_dir} is not a directory (the training run's --output-dir)")
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    try:
        epoch = args.load_epoch
        if args.model_dir and epoch is None:
            epoch = deployed_epoch(args.model_dir, require_finished=False)
        cfg = setup_cfg(args)
        with contextlib.redirect_stdout(sys.stderr):
            if cfg.SEED >= 0:
                set_random_seed(cfg.SEED)
            trainer = build_trainer(cfg)
            trainer.load_model(args.model_dir, epoch=epoch)
    except (FileNotFoundError, KeyError, ValueError) as err:  # (NoDeployedModel is a FileNotFoundError)
        fail(error_text(err))
    return trainer


def default_out_dir(args):
    """Where reports go by default: ``<model-dir>/analysis`` (next to the model), else ``<output-dir>/analysis``."""
    return os.path.join(args.model_dir or args.output_dir or "output", "analysis")


def report_stem(cfg, split):
    """File-name stem of a report: ``<dataset>_<split>`` (+ ``_<base|new>`` for a class subset)."""
    stem = f"{cfg.DATASET.NAME}_{split}"
    subsample = cfg.DATASET.SUBSAMPLE_CLASSES
    return stem if subsample == "all" else f"{stem}_{subsample}"
