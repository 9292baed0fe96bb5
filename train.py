"""Train or evaluate a CLIP prompt learner — the CoOp-ecosystem command line (Dassl's tools/train.py) plus --device.

Config merge order: Dassl defaults -> keys declared by trainers/ and datasets/ -> --dataset-config-file ->
--config-file -> CLI flags -> trailing KEY VALUE pairs. Example:

    python train.py --root $DATA --seed 1 --trainer BMIP \\
        --dataset-config-file configs/datasets/caltech101.yaml \\
        --config-file configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml \\
        --output-dir output/base2new/train_base/caltech101/shots_16/BMIP/BMIP_ctx2_dp9_lr2/seed1 \\
        DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base
"""
import argparse
import difflib
import sys

import datasets  # noqa: F401  (registers every dataset)
import trainers  # noqa: F401  (registers every trainer)
from dassl.config import extend_cfg, get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import collect_env_info, set_random_seed, setup_logger


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
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


def setup_cfg(args):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        _merge(cfg, lambda: cfg.merge_from_file(args.dataset_config_file), args.dataset_config_file)
    if args.config_file:
        _merge(cfg, lambda: cfg.merge_from_file(args.config_file), args.config_file)
    reset_cfg(cfg, args)
    _merge(cfg, lambda: cfg.merge_from_list(args.opts or []), "the command-line options")
    cfg.freeze()
    return cfg


def print_args(args, cfg):
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__):
        print(f"{key}: {args.__dict__[key]}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = setup_cfg(args)
    setup_logger(cfg.OUTPUT_DIR)  # first, so that every line below is in log.txt
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    print_args(args, cfg)
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return trainer
    if not args.no_train:
        trainer.train()
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
