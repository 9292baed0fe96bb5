"""The config of a run, from train.py's flags: the parser, then the merge.

Merge order: Dassl defaults -> keys declared by trainers/ and datasets/ -> --dataset-config-file -> --config-file ->
CLI flags -> trailing KEY VALUE pairs. Config files are plain YAML (read with ``yaml.safe_load``), never Python.
"""
import argparse
import difflib

from dassl.cli import OneLineArgumentParser
from runs.errors import TRACEBACK_ENV, UsageError

DESCRIPTION = ("Train or evaluate a CLIP prompt learner — the CoOp-ecosystem command line (Dassl's tools/train.py) "
               "plus --device.")  # (the first line of train.py's docstring)


def build_parser():
    parser = OneLineArgumentParser(description=DESCRIPTION)
    parser.add_argument("--root", type=str, default="", help="path to the datasets ($DATA)")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory to resume from (default: the output directory)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (>= 0 fixes it; 0 works)")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to the method's config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to the dataset's config file")
    parser.add_argument("--trainer", type=str, default="", help="name of the trainer (e.g. CoOp, MaPLe, BMIP)")
    parser.add_argument("--backbone", type=str, default="", help="name of the CNN/CLIP backbone")
    parser.add_argument("--head", type=str, default="", help="name of the head")
    parser.add_argument("--device", type=str, default="", help='"cpu", "cuda" or "cuda:N" (default: cuda if available)')
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load the model from this directory for eval-only")
    parser.add_argument("--load-epoch", type=int, help="load the weights of this epoch (default: model-best)")
    parser.add_argument("--best", action="store_true", help="eval-only: load model-best.pth.tar, ignoring --load-epoch (released BMIP flag)")
    parser.add_argument("--draw", action="store_true", help="eval-only: also write the analysis report of the model (docs/ANALYSIS.md)")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--accept-config-change", action="store_true",
                        help="continue the run stored in --output-dir although its config differs from this one")
    parser.add_argument("--traceback", action="store_true",
                        help=f"on an error, print the full traceback (also: {TRACEBACK_ENV}=1)")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="modify config options: KEY VALUE ...")
    return parser


def reset_cfg(cfg, args):
    """Apply the CLI flags that map onto config keys (only those the user gave)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head
    if args.device:
        cfg.DEVICE = args.device


def _all_keys(node, prefix=""):
    for key, value in node.items():
        if hasattr(value, "items"):
            yield from _all_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _merge(cfg, merge, source):
    """Run a yacs merge; an unknown key becomes an error naming the key, its source and close matches."""
    try:
        merge()
    except (KeyError, AssertionError) as err:  # yacs: KeyError from files, AssertionError from lists
        message = str(err.args[0]) if err.args else str(err)
        if "Non-existent" not in message:
            raise
        bad = message.split(":")[-1].strip()
        close = difflib.get_close_matches(bad, list(_all_keys(cfg)), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"{message} (in {source}).{hint}") from None


def _ints_as_floats(cfg, node):
    """``node`` (a loaded YAML config) with integers turned into floats where ``cfg`` holds a float (``LR: 1``)."""
    for key, value in node.items():
        current = cfg.get(key) if hasattr(cfg, "get") else None
        if hasattr(value, "items") and hasattr(current, "items"):
            _ints_as_floats(current, value)
        elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            node[key] = float(value)
    return node


def _merge_file(cfg, path):
    """Merge a YAML config file into ``cfg``. It is read with ``yaml.safe_load`` (plain data: no tag builds an object
    or runs code), never with yacs's ``load_cfg``, which executes ``.py`` files."""
    cfg.merge_from_other_cfg(_ints_as_floats(cfg, _read_yaml_config(path)))


def _read_yaml_config(path):
    """The ``CfgNode`` of a plain YAML mapping; anything else is a one-line ``UsageError`` naming the file."""
    import yaml
    from yacs.config import CfgNode

    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err)
            raise UsageError(f"{path} is not plain YAML ({problem}{where}): a config file holds KEY: value lines of "
                             "numbers, strings and lists only, no !!python tags; fix that line") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{path} holds a YAML {type(data).__name__}, not a mapping of config keys: write it as "
                         "KEY: value lines (see configs/trainers/CoOp/*.yaml)")
    try:
        return CfgNode(data)
    except AssertionError as err:  # yacs: "Key K with value <type> is not a valid type; valid types: {...}"
        raise UsageError(f"{path}: {str(err).split(';')[0]}: config values are numbers, strings, booleans, lists or "
                         "null; quote it to make it a string") from None


def _opts_ints_as_floats(cfg, opts):
    """KEY VALUE pairs with an integer VALUE written as a float where the key holds a float (``OPTIM.LR 1``)."""
    from yacs.config import CfgNode

    fixed = list(opts)
    for i in range(0, len(fixed) - 1, 2):
        node = cfg
        for part in fixed[i].split("."):
            node = node.get(part) if hasattr(node, "get") else None
        value = CfgNode._decode_cfg_value(fixed[i + 1])
        if isinstance(node, float) and isinstance(value, int) and not isinstance(value, bool):
            fixed[i + 1] = repr(float(value))
    return fixed


def setup_cfg(args):
    import datasets  # noqa: F401  (registers every dataset and its config keys)
    import trainers  # noqa: F401  (registers every trainer and its config keys)
    from dassl.config import extend_cfg, get_cfg_default

    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        _merge(cfg, lambda: _merge_file(cfg, args.dataset_config_file), args.dataset_config_file)
    if args.config_file:
        _merge(cfg, lambda: _merge_file(cfg, args.config_file), args.config_file)
    reset_cfg(cfg, args)
    opts = _opts_ints_as_floats(cfg, args.opts or [])
    _merge(cfg, lambda: cfg.merge_from_list(opts), "the command-line options")
    _merge(cfg, lambda: cfg.merge_from_list(_dataset_overrides(cfg, opts)), "the trainer's per-dataset settings")
    cfg.freeze()
    return cfg


def _dataset_overrides(cfg, opts):
    """The trainer's per-dataset settings (its class's ``dataset_overrides(cfg)`` -> [key, value, ...], e.g. MMRL's and
    CoPrompt's), between the config files and the command-line options: they win over the YAML files, and a key the
    options set keeps the options' value."""
    from dassl.engine import TRAINER_REGISTRY

    if cfg.TRAINER.NAME not in TRAINER_REGISTRY.registered_names():
        return []
    overrides = getattr(TRAINER_REGISTRY.get(cfg.TRAINER.NAME), "dataset_overrides", None)
    pairs = overrides(cfg) if overrides is not None else []
    given = set(opts[0::2])
    return [item for key, value in zip(pairs[0::2], pairs[1::2]) if key not in given for item in (key, value)]
