"""Run one ``train.py`` command: ``main(argv)`` checks, configures, claims the output folder, then trains or
evaluates; ``cli(argv)`` is the same with exit statuses and one-line errors (what ``python train.py`` runs)."""
import os.path as osp
import sys

from runs.checks import check_arguments, check_config
from runs.config import build_parser, setup_cfg
from runs.errors import BAD_INPUT, INTERRUPTED, TRACEBACK_ENV, error_text, exit_status
from runs.output_dir import claim_output_dir, evaluated_models
from runs.reports import EVAL_REPORTS

# Heavy modules (torch, CLIP, the trainers) are imported inside the functions that need them, so --help and
# argument errors answer at once.


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
        return INTERRUPTED
    except BaseException as err:  # noqa: BLE001 (every error ends in one line unless the traceback is asked for)
        if "--traceback" in argv or os.environ.get(TRACEBACK_ENV) == "1":
            traceback.print_exc()
        code = exit_status(err)
        hint = "" if code == BAD_INPUT else f" (the full traceback: --traceback or {TRACEBACK_ENV}=1)"
        print(f"error: {error_text(err)}{hint}", file=sys.stderr)
        return code


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


def run(cfg, args):
    """Everything after the output folder is claimed: log, seed, build, then evaluate or train."""
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
            EVAL_REPORTS["draw"](trainer, osp.join(cfg.OUTPUT_DIR, "analysis"))
        return trainer
    if not args.no_train:
        trainer.train()
    return trainer
