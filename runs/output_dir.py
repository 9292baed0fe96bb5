"""Claiming an output folder for a run: it belongs to one run (docs/ENGINE.md, "Runs").

A second run in it fails at once (the lock, taken by :func:`runs.run.main`), a re-run of a finished run prints its
stored result and does nothing else, an unfinished run resumes exactly, and a re-run whose config differs in a key
that changes results is refused unless --accept-config-change is given. An evaluation is never written into a
training run's folder.
"""
import glob
import os
import os.path as osp

from dassl.engine.run_dir import (CONFIG_FILE, RESULT_FILE, ConfigMismatch, checkpoint_file, config_differences,
                                  describe_mismatch, flatten_config, has_checkpoints, read_config, read_result,
                                  write_config)  # (the standard library only: no torch)


def model_file(args):
    """The checkpoint file name an evaluation loads."""
    return checkpoint_file(None if args.best else args.load_epoch)


def evaluated_models(args):
    """``{relative path: [size, mtime_ns]}`` of the files ``--model-dir`` offers for this evaluation (its identity)."""
    if not args.model_dir:
        return {}
    found = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(args.model_dir), "*", model_file(args)))):
        stat = os.stat(path)
        found[os.path.relpath(path, args.model_dir)] = [stat.st_size, stat.st_mtime_ns]
    return found


def refuse_training_folder(out, result):
    """An evaluation never writes into a training run's folder: its result would replace the training result and
    mark the run finished. No flag overrides this (--accept-config-change included)."""
    if has_checkpoints(out):
        held = "a training run's checkpoints"
    elif result is not None and result.get("mode") == "train":
        held = "a finished training run"
    else:
        return
    raise ConfigMismatch(f"{out} holds {held}: an evaluation cannot be written into it; pass another --output-dir "
                         "for the evaluation (--model-dir names the training run to evaluate)")


def claim_output_dir(cfg, args):
    """Check the output folder against this command (under its lock) and record the config.

    Returns the stored result when the folder already holds this exact run, finished (then nothing is done);
    raises ``ConfigMismatch`` when it holds another run; otherwise stores the config and returns None.
    """
    import yaml

    from dassl.config import extend_cfg, get_cfg_default
    from dassl.utils.tools import remove_stale_temp_files

    out = cfg.OUTPUT_DIR
    remove_stale_temp_files(out)  # left by a killed run's atomic writes, checkpoint folders included (we hold the lock)
    result, stored = read_result(out), read_config(out)
    mode = "eval" if args.eval_only else "train"
    if mode == "eval":
        refuse_training_folder(out, result)
    problems = []
    if stored is not None:
        current = flatten_config(yaml.safe_load(cfg.dump()))
        defaults = flatten_config(yaml.safe_load(extend_cfg(get_cfg_default()).dump()))
        differences = config_differences(stored, current, defaults)
        if differences:
            problems.append(describe_mismatch(differences))
    if result is not None and result.get("mode") != mode:  # a training run meeting an evaluation's folder
        problems.append(f"it holds a finished {result.get('mode')} run, this is a {mode} run")
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
