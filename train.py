"""Train or evaluate a CLIP prompt learner — the CoOp-ecosystem command line (Dassl's tools/train.py) plus --device.

Config merge order: Dassl defaults -> keys declared by trainers/ and datasets/ -> --dataset-config-file ->
--config-file -> CLI flags -> trailing KEY VALUE pairs. Example:

    python train.py --root $DATA --seed 1 --trainer BMIP \\
        --dataset-config-file configs/datasets/caltech101.yaml \\
        --config-file configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml \\
        --output-dir output/base2new/train_base/caltech101/shots_16/BMIP/BMIP_ctx2_dp9_lr2/seed1 \\
        DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base

An output folder belongs to one run (docs/ENGINE.md, "Runs"): a second run in it fails at once, a re-run of a
finished run prints its stored result and does nothing else, an unfinished run resumes exactly, and a re-run whose
config differs in a key that changes results is refused unless --accept-config-change is given.
"""
import argparse
import difflib
import sys

# Heavy modules (torch, CLIP, the trainers) are imported inside the functions that need them, so --help and
# argument errors answer at once.


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
    parser.add_argument("--best", action="store_true", help="eval-only: load model-best.pth.tar, ignoring --load-epoch (released BMIP flag)")
    parser.add_argument("--draw", action="store_true", help="eval-only: also write the analysis report of the model (docs/ANALYSIS.md)")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--accept-config-change", action="store_true",
                        help="continue the run stored in --output-dir although its config differs from this one")
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
    import datasets  # noqa: F401  (registers every dataset and its config keys)
    import trainers  # noqa: F401  (registers every trainer and its config keys)
    from dassl.config import extend_cfg, get_cfg_default

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
    """Run one command; returns the trainer, or None when the output folder already holds this finished run."""
    from dassl.engine.run_dir import OutputDirLock
    from dassl.optim import check_learning_rate

    args = build_parser().parse_args(argv)
    cfg = setup_cfg(args)
    if not args.eval_only:
        check_learning_rate(cfg.OPTIM)
    with OutputDirLock(cfg.OUTPUT_DIR):
        finished = claim_output_dir(cfg, args)
        if finished is not None:
            return None
        return run(cfg, args)


def _model_file(args):
    """The checkpoint file name an evaluation loads (None: the trainer needs none)."""
    return "model-best.pth.tar" if args.best or args.load_epoch is None else f"model.pth.tar-{args.load_epoch}"


def evaluated_models(args):
    """``{relative path: [size, mtime_ns]}`` of the files ``--model-dir`` offers for this evaluation (its identity)."""
    import glob
    import os

    if not args.model_dir:
        return {}
    found = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(args.model_dir), "*", _model_file(args)))):
        stat = os.stat(path)
        found[os.path.relpath(path, args.model_dir)] = [stat.st_size, stat.st_mtime_ns]
    return found


def claim_output_dir(cfg, args):
    """Check the output folder against this command (under its lock) and record the config.

    Returns the stored result when the folder already holds this exact run, finished (then nothing is done);
    raises ``ConfigMismatch`` when it holds another run; otherwise stores the config and returns None.
    """
    import os
    import os.path as osp

    import yaml

    from dassl.config import extend_cfg, get_cfg_default
    from dassl.engine.run_dir import (CONFIG_FILE, RESULT_FILE, ConfigMismatch, config_differences,
                                      describe_differences, flatten_config, read_config, read_result, write_config)
    from dassl.utils import checkpoint_epochs

    out = cfg.OUTPUT_DIR
    result, stored = read_result(out), read_config(out)
    mode = "eval" if args.eval_only else "train"
    has_checkpoints = any(checkpoint_epochs(osp.join(out, d)) for d in os.listdir(out) if osp.isdir(osp.join(out, d)))
    problems = []
    if stored is not None:
        current = flatten_config(yaml.safe_load(cfg.dump()))
        defaults = flatten_config(yaml.safe_load(extend_cfg(get_cfg_default()).dump()))
        differences = config_differences(stored, current, defaults)
        if differences:
            problems.append(f"its config differs in {describe_differences(differences)}")
    if result is not None and result.get("mode") != mode:
        problems.append(f"it holds a finished {result.get('mode')} run, this is a {mode} run")
    if mode == "eval" and has_checkpoints:
        problems.append("it holds a training run's checkpoints, and evaluating into it would mark that run finished")
    models = evaluated_models(args) if mode == "eval" else {}
    if result is not None and mode == "eval" and result.get("model_dir") != osp.abspath(args.model_dir or "."):
        problems.append(f"it holds the evaluation of the model in {result.get('model_dir')}")
    reusable = result is not None or has_checkpoints
    if problems and reusable and not args.accept_config_change:
        raise ConfigMismatch(
            f"{out} holds another run: {'; '.join(problems)}. Use another --output-dir, delete the folder to start "
            "over, or pass --accept-config-change to continue that run with this command's settings"
        )
    if result is not None:
        if not problems and (mode == "train" or result.get("evaluated_models") == models):
            metrics = ", ".join(f"{k} {v:.2f}%" for k, v in result["metrics"].items() if k == "accuracy")
            print(f"This run is complete ({metrics or 'no test'}; {osp.join(out, RESULT_FILE)}): nothing to do. "
                  "Delete the folder to run it again.")
            return result
        reason = "its settings changed (--accept-config-change)" if problems else "the evaluated model files changed"
        print(f"Note: the stored result of {out} is superseded because {reason}; running again")
        os.replace(osp.join(out, RESULT_FILE), osp.join(out, RESULT_FILE + ".superseded"))
    if problems and reusable:
        print(f"Note: continuing {out} with changed settings (--accept-config-change): {'; '.join(problems)}")
        if stored is not None:
            os.replace(osp.join(out, CONFIG_FILE), osp.join(out, CONFIG_FILE + ".superseded"))
    write_config(out, cfg)
    return None


def run(cfg, args):
    """Everything after the output folder is claimed: log, seed, build, then evaluate or train."""
    import os.path as osp

    from dassl.engine import build_trainer
    from dassl.utils import collect_env_info, set_random_seed, setup_logger

    setup_logger(cfg.OUTPUT_DIR)  # first, so that every line below is in the log
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    print_args(args, cfg)
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=None if args.best else args.load_epoch)
        trainer.test()
        trainer.record_result("eval", model_dir=osp.abspath(args.model_dir or "."),
                              evaluated_models=evaluated_models(args))
        if args.draw:
            from analysis.draw import draw_report

            for path in draw_report(trainer, cfg.OUTPUT_DIR):
                print(f"Wrote {path}")
        return trainer
    if not args.no_train:
        trainer.train()
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
