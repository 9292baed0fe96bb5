"""Bad input found before anything is written or built: first from the arguments alone (torch is not imported),
then from the merged config. Each problem raises one line saying what is wrong and the fix (exit status 2)."""
import os
import warnings

from dassl.engine.run_dir import BEST_CHECKPOINT, EPOCH_CHECKPOINT  # (the standard library only: no torch)
from runs.errors import UsageError
from runs.output_dir import evaluated_models, model_file
from runs.reports import EVAL_REPORTS


def check_arguments(args):
    """Problems visible from the arguments and the file system alone (before torch is even imported)."""
    check_trailing_opts(args.opts or [])
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
    if args.resume and not os.path.isdir(args.resume):
        raise UsageError(f"--resume {args.resume} does not exist: pass the output folder of the run whose checkpoints "
                         "this run should continue from (without --resume a run continues from its own --output-dir, "
                         "so re-running the same command resumes)")
    if (args.best or args.draw or args.load_epoch is not None) and not args.eval_only:
        used = "--best" if args.best else "--draw" if args.draw else "--load-epoch"
        raise UsageError(f"{used} applies to evaluations: add --eval-only --model-dir <the training run's folder>")
    if args.draw and "draw" not in EVAL_REPORTS:
        raise UsageError("--draw: no analysis report is registered in this program; evaluate with python train.py, "
                         "which registers it (it imports analysis.draw)")
    if args.model_dir:
        if not os.path.isdir(args.model_dir):
            raise UsageError(f"--model-dir {args.model_dir} does not exist: pass the --output-dir of the training run")
        if not evaluated_models(args):
            held = sorted({f for d in os.listdir(args.model_dir) if os.path.isdir(os.path.join(args.model_dir, d))
                           for f in os.listdir(os.path.join(args.model_dir, d)) if f.startswith("model")})
            raise UsageError(f"--model-dir {args.model_dir} holds no {model_file(args)} (it holds {held or 'none'}): "
                             f"{checkpoint_choice(held)}")


def checkpoint_choice(held):
    """How to pick one of the checkpoint files ``held`` (names) for an evaluation: only flags that load one of them."""
    epochs = sorted(int(m.group(1)) for m in map(EPOCH_CHECKPOINT.match, held) if m)
    choices = [f"--load-epoch {epochs[-1]} (the newest epoch it holds)"] if epochs else []
    if BEST_CHECKPOINT in held:
        choices.append(f"--best ({BEST_CHECKPOINT})")
    if not choices:
        return "pass the --output-dir of a training run that saved checkpoints"
    return "pass " + " or ".join(choices)


def check_trailing_opts(opts):
    """The trailing ``KEY VALUE`` pairs (train.py's and every tool built on its flags): no --flag among them, a value
    for every key, keys spelt as config keys."""
    flags = [o for o in opts if o.startswith("--")]
    if flags:
        raise UsageError(f"{flags[0]} comes after the KEY VALUE options: put every --flag before the first KEY VALUE "
                         f"pair (here before {opts[0]})")
    if len(opts) % 2:
        keys = opts[0::2]
        raise UsageError(f"the trailing options must be KEY VALUE pairs, but there are {len(opts)} words "
                         f"({' '.join(opts)}); give every key (e.g. {keys[-1]}) its value")
    for key in opts[0::2]:
        parts = key.split(".")  # upper case, except a released node name such as TRAINER.ProDA
        if not all(part.replace("_", "").isalnum() and part[0].isupper() for part in parts) or \
                parts[-1].upper() != parts[-1]:
            raise UsageError(f"{key!r} is not a config key (KEY VALUE pairs like OPTIM.LR 0.002 come last; "
                             "keys are upper case)")


def check_config(cfg, args):
    """Problems visible from the merged config (registries, value ranges, depth keys against the backbone's layers,
    dataset folder, CLIP weights), found before anything is written or built. Each check lives with the code that
    owns its keys: the engine's training keys in ``dassl``, a trainer's keys in its ``check_cfg`` and
    ``check_backbone_depths``. Warnings the checks raise are shown once every check has passed, so a refused config
    prints its one error line alone."""
    with warnings.catch_warnings(record=True) as raised:  # (the filters in force still decide what is recorded)
        _check_config(cfg, args)
    for w in raised:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


def _check_config(cfg, args):
    from dassl.config import check_engine_keys
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.engine import TRAINER_REGISTRY
    from dassl.optim import check_optim_cfg
    from dassl.utils import check_availability

    check_availability(cfg.TRAINER.NAME, TRAINER_REGISTRY.registered_names())
    check_availability(cfg.DATASET.NAME, DATASET_REGISTRY.registered_names())
    check_device(cfg, args)
    trainer_class = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if args.eval_only and not args.model_dir and trainer_class.LEARNS:
        raise UsageError(f"--eval-only needs --model-dir (the training run's --output-dir): without it {cfg.TRAINER.NAME} "
                         "would evaluate untrained weights")
    if not args.eval_only:
        check_optim_cfg(cfg.OPTIM)
        check_engine_keys(cfg)
    trainer = trainer_class.__new__(trainer_class)
    trainer.check_cfg(cfg)  # the trainer's own keys (the same hook its __init__ runs)
    check_dataset(cfg)
    from clip_patch import BackboneSpec, backbone_depths, locate_backbone_weights
    from trainers.base import CLIPTrainer

    spec = BackboneSpec.from_cfg(cfg.MODEL.BACKBONE)
    if isinstance(trainer, CLIPTrainer):  # (a trainer written elsewhere, on the engine alone, has no such hook)
        trainer.check_backbone_depths(cfg, *backbone_depths(spec))  # depth keys against the encoders, none loaded
    locate_backbone_weights(spec)  # downloads now if needed, or fails clearly


def check_device(cfg, args):
    """DEVICE (from --device or the config) names a device this machine has. The engine raises RuntimeError for a
    missing one (a fact of the machine); for a command it is bad input, found here before anything is built."""
    from dassl.engine import resolve_device

    try:
        resolve_device(cfg, "--device" if args.device and cfg.DEVICE == args.device else "DEVICE")
    except RuntimeError as err:
        raise UsageError(str(err)) from err


def check_dataset(cfg):
    """Raise FileNotFoundError (or ValueError) naming the expected folder and how to get it when the dataset of
    ``cfg`` (a registered DATASET.NAME) is not under DATASET.ROOT; nothing is read."""
    from dassl.data.datasets import DATASET_REGISTRY

    dataset_class = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    if hasattr(dataset_class, "set_paths") and hasattr(dataset_class, "check_present"):
        layout = dataset_class.__new__(dataset_class)  # paths only: nothing is read
        layout.set_paths(cfg)
        layout.check_present(cfg)
