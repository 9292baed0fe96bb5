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

TRACEBACK_ENV = "BMIP_TRACEBACK"  # =1: errors print the full traceback instead of one line


class UsageError(ValueError):
    """Bad input found before any work: the message is one line saying what is wrong and the fix."""


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


def check_arguments(args):
    """Problems visible from the arguments and the file system alone (before torch is even imported)."""
    import os

    opts = args.opts or []
    flags = [o for o in opts if o.startswith("--")]
    if flags:
        raise UsageError(f"{flags[0]} comes after the KEY VALUE options: put every --flag before the first KEY VALUE "
                         f"pair (here before {opts[0]})")
    if len(opts) % 2:
        keys = opts[0::2]
        raise UsageError(f"the trailing options must be KEY VALUE pairs, but there are {len(opts)} words "
                         f"({' '.join(opts)}); give every key (e.g. {keys[-1]}) its value")
    for key in opts[0::2]:
        if not key.replace(".", "").replace("_", "").isalnum() or key.upper() != key:
            raise UsageError(f"{key!r} is not a config key (KEY VALUE pairs like OPTIM.LR 0.002 come last; "
                             "keys are upper case)")
    for flag, path in (("--config-file", args.config_file), ("--dataset-config-file", args.dataset_config_file)):
        if path and os.path.splitext(path)[1].lower() not in (".yaml", ".yml"):
            raise UsageError(f"{flag} {path} is not a .yaml/.yml file: config files are plain YAML only (a .py config "
                             "would run code); write its keys as KEY: value lines in a .yaml file")
        if path and not os.path.isfile(path):
            raise UsageError(f"{flag} {path} does not exist: check the path (configs/trainers/<TRAINER>/*.yaml, "
                             "configs/datasets/*.yaml)")
    if args.root and not os.path.isdir(os.path.expanduser(args.root)):
        raise UsageError(f"--root {args.root} does not exist: pass the folder that holds your datasets ($DATA, "
                         "layout in docs/DATASETS.md; `python -m datasets.download NAME --root DIR` fetches public ones)")
    if (args.best or args.draw or args.load_epoch is not None) and not args.eval_only:
        used = "--best" if args.best else "--draw" if args.draw else "--load-epoch"
        raise UsageError(f"{used} applies to evaluations: add --eval-only --model-dir <the training run's folder>")
    if args.model_dir:
        if not os.path.isdir(args.model_dir):
            raise UsageError(f"--model-dir {args.model_dir} does not exist: pass the --output-dir of the training run")
        if not evaluated_models(args):
            held = sorted(f for d in os.listdir(args.model_dir) if os.path.isdir(os.path.join(args.model_dir, d))
                          for f in os.listdir(os.path.join(args.model_dir, d)) if f.startswith("model"))
            raise UsageError(f"--model-dir {args.model_dir} holds no {_model_file(args)} (it holds {held or 'none'}): "
                             "pick --load-epoch N of a model.pth.tar-N it holds, or --best for model-best.pth.tar")


def check_config(cfg, args):
    """Problems visible from the merged config (registries, value ranges, dataset folder, CLIP weights), found
    before anything is written or built. Each check lives with the code that owns its keys: the engine's training
    keys in ``dassl``, a trainer's keys in its ``check_cfg``."""
    from dassl.config import check_engine_keys
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.engine import TRAINER_REGISTRY
    from dassl.optim import check_optim_cfg
    from dassl.utils import check_availability

    check_availability(cfg.TRAINER.NAME, TRAINER_REGISTRY.registered_names())
    check_availability(cfg.DATASET.NAME, DATASET_REGISTRY.registered_names())
    trainer_class = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if args.eval_only and not args.model_dir and trainer_class.LEARNS:
        raise UsageError(f"--eval-only needs --model-dir (the training run's --output-dir): without it {cfg.TRAINER.NAME} "
                         "would evaluate untrained weights")
    if not args.eval_only:
        check_optim_cfg(cfg.OPTIM)
        check_engine_keys(cfg)
    trainer_class.__new__(trainer_class).check_cfg(cfg)  # the trainer's own keys (the same hook its __init__ runs)
    check_dataset(cfg)
    from clip_patch.loading import locate_weights

    locate_weights(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH)  # downloads now if needed, or fails clearly


def check_dataset(cfg):
    """Raise FileNotFoundError (or ValueError) naming the expected folder and how to get it when the dataset of
    ``cfg`` (a registered DATASET.NAME) is not under DATASET.ROOT; nothing is read."""
    from dassl.data.datasets import DATASET_REGISTRY

    dataset_class = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    if hasattr(dataset_class, "set_paths") and hasattr(dataset_class, "check_present"):
        layout = dataset_class.__new__(dataset_class)  # paths only: nothing is read
        layout.set_paths(cfg)
        layout.check_present(cfg)


def main(argv=None):
    """Run one command; returns the trainer, or None when the output folder already holds this finished run.

    Bad input raises before anything is written to the output folder; a run that fails before it saved anything
    removes the output folder (and its parents) it created.
    """
    args = build_parser().parse_args(argv)
    check_arguments(args)
    cfg = setup_cfg(args)
    check_config(cfg, args)

    from dassl.engine.run_dir import OutputDirLock, has_checkpoints, read_result
    from dassl.utils import close_logger

    with OutputDirLock(cfg.OUTPUT_DIR) as lock:
        try:
            if claim_output_dir(cfg, args) is not None:
                return None
            return run(cfg, args)
        except BaseException:
            out = cfg.OUTPUT_DIR
            if not (read_result(out) or has_checkpoints(out)):  # the run never got anywhere: leave nothing behind
                close_logger()
                lock.remove_created()
            raise


def cli(argv=None):
    """``python train.py``: one line on stderr for an error (the traceback with --traceback or BMIP_TRACEBACK=1);
    exit status 0 done, 1 the run failed, 2 bad input."""
    import os
    import traceback

    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
        return 0
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except BaseException as err:  # noqa: BLE001 (every error ends in one line unless the traceback is asked for)
        if "--traceback" in argv or os.environ.get(TRACEBACK_ENV) == "1":
            traceback.print_exc()
        message = " ".join(_error_text(err).split())
        code = 2 if _is_bad_input(err) else 1
        hint = "" if code == 2 else f" (the full traceback: --traceback or {TRACEBACK_ENV}=1)"
        print(f"error: {message}{hint}", file=sys.stderr)
        return code


def _error_text(err):
    text = _without_worker_traceback(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err), err)
    return text if isinstance(err, (UsageError, KeyError, ValueError, FileNotFoundError, RuntimeError, OSError)) \
        and text else f"{type(err).__name__}: {text}"


def _without_worker_traceback(text, err):
    """The original message of an error raised in a DataLoader worker: torch re-raises it in the main process as
    "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback ...\nValueError: <message>"."""
    marker = f"\n{type(err).__name__}: "
    if text.startswith("Caught ") and " in DataLoader worker process " in text and marker in text:
        return text[text.rindex(marker) + len(marker):]
    return text


def _is_bad_input(err):
    """Errors that mean "fix the command, the config or the files" (exit 2) rather than "the run failed"."""
    if isinstance(err, UsageError):
        return True  # (found before torch was imported: keep it that way)
    from dassl.engine.run_dir import OutputDirBusy
    from dassl.utils.safe_pickle import ForbiddenPickleContent

    # ConfigMismatch and CheckpointError are ValueErrors; a DivergenceError (a FloatingPointError) is a failed run
    return isinstance(err, (OutputDirBusy, ForbiddenPickleContent, KeyError, ValueError, FileNotFoundError))


def _model_file(args):
    """The checkpoint file name an evaluation loads."""
    from dassl.engine.run_dir import checkpoint_file

    return checkpoint_file(None if args.best else args.load_epoch)


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
                                      describe_mismatch, flatten_config, has_checkpoints, read_config, read_result,
                                      write_config)
    from dassl.utils import remove_stale_temp_files

    out = cfg.OUTPUT_DIR
    remove_stale_temp_files(out)  # left by a killed run's atomic writes, checkpoint folders included (we hold the lock)
    result, stored = read_result(out), read_config(out)
    mode = "eval" if args.eval_only else "train"
    problems = []
    if stored is not None:
        current = flatten_config(yaml.safe_load(cfg.dump()))
        defaults = flatten_config(yaml.safe_load(extend_cfg(get_cfg_default()).dump()))
        differences = config_differences(stored, current, defaults)
        if differences:
            problems.append(describe_mismatch(differences))
    if result is not None and result.get("mode") != mode:
        problems.append(f"it holds a finished {result.get('mode')} run, this is a {mode} run")
    if mode == "eval" and has_checkpoints(out):
        problems.append("it holds a training run's checkpoints, and evaluating into it would mark that run finished")
    models = evaluated_models(args) if mode == "eval" else {}
    if result is not None and mode == "eval" and result.get("model_dir") != osp.abspath(args.model_dir or "."):
        problems.append(f"it holds the evaluation of the model in {result.get('model_dir')}")
    reusable = result is not None or has_checkpoints(out)  # a run that saved nothing leaves nothing to continue
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
        if args.draw:  # the released flag: here the analysis report of the loaded model (docs/ANALYSIS.md)
            from analysis.draw import draw_report

            draw_report(trainer, osp.join(cfg.OUTPUT_DIR, "analysis"))
        return trainer
    if not args.no_train:
        trainer.train()
    return trainer


if __name__ == "__main__":
    sys.exit(cli())
