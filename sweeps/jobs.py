"""Jobs (one ``train.py`` call each), chains of jobs, and the skip / resume / run decision.

A *chain* is a list of jobs that must run in order: an optional training job followed by evaluations of
the model it produced. A job is *finished* when its output directory holds ``result.json`` (written by
``train.py`` after the final evaluation); finished jobs are skipped. A job whose output-folder lock is held
runs elsewhere (another runner, a SLURM task, a killed runner's orphan): it is reported and not started. An
unfinished training job is re-run with the same command, which makes ``train.py`` resume from the checkpoints
in its output directory; an unfinished evaluation is simply run again (its new log is
``log.txt-<timestamp>``; the old one is kept).
"""
import os
import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dassl.engine.run_dir import NoDeployedModel, deployed_epoch, lock_holder
from results import logparse
from sweeps.processes import CHILDREN

REPO_ROOT = Path(__file__).resolve().parents[1]
CAPTURED_OUTPUT = "stdout.txt"
LOAD_EPOCH_PENDING = "LAST"
PENDING_NOTE = ("# LAST = chosen once training has finished: model-best.pth.tar if the run saved one, "
                "else the newest model.pth.tar-N")


FINISHED, RUNNING, UNFINISHED, NEW = "finished", "running", "unfinished", "new"
TAIL_LINES = 10  # lines of a failed job's output shown in reports
INCOMPLETE = ("failed", "blocked", "running", "interrupted")  # outcomes of jobs that did not finish here


def exit_status(outcomes):
    """A runner's exit status: 1 when a job failed, 3 when one is running elsewhere, else 0 (blocked jobs always
    follow a failed or running training; interruptions are reported by the signal)."""
    statuses = {o.status for o in outcomes}
    return 1 if "failed" in statuses else 3 if "running" in statuses else 0


class SetupError(Exception):
    """Bad input to a runner (missing $DATA, config files, checkpoints); the message says how to fix it."""


@dataclass(frozen=True)
class Job:
    """One ``train.py`` invocation.

    ``training`` jobs train (and auto-resume); the others run ``--eval-only``, loading the model trained in
    ``model_dir`` (``None`` for training-free trainers such as ZeroshotCLIP).
    """

    trainer: str
    cfg: str
    dataset: str
    seed: int
    output_dir: Path
    opts: tuple = ()
    training: bool = False
    model_dir: Path = None


@dataclass(frozen=True)
class RunContext:
    """Everything a job's command needs besides the job itself."""

    data_root: Path
    python: tuple = (sys.executable,)
    train_py: Path = REPO_ROOT / "train.py"
    config_root: Path = REPO_ROOT / "configs"
    device: str = None
    extra_opts: tuple = ()
    env: dict = field(default_factory=dict)
    in_process: bool = False  # run runs.run.main() in this process (no interpreter start-up per job)


@dataclass(frozen=True)
class Outcome:
    """What happened to a job.

    ``skipped`` (finished before) | ``ok`` | ``failed`` (``tail``: the last lines of its output) | ``running``
    (elsewhere: not started) | ``interrupted`` (the runner was stopped) | ``blocked`` (its training did not
    finish) | ``planned`` (dry run).
    """

    job: Job
    status: str
    logs: tuple = ()
    message: str = ""
    tail: tuple = ()


def data_root_from_env(environ=None):
    """The dataset root from ``$DATA``; raises ``SetupError`` when it is unset or not a directory."""
    environ = os.environ if environ is None else environ
    value = environ.get("DATA", "")
    if not value:
        raise SetupError("$DATA is not set: export the folder that holds the datasets, "
                         "e.g. `export DATA=/path/to/datasets` (layout: docs/DATASETS.md)")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise SetupError(f"$DATA={value} is not a directory: point DATA at the folder that holds the "
                         f"datasets (layout: docs/DATASETS.md), or create it (mkdir -p {value}) for the micro world, "
                         f"whose data sets are generated there on first use")
    return root


def config_files(job, ctx):
    """The dataset and trainer YAML files of ``job``.

    The trainer file is ``configs/trainers/<TRAINER>/<CFG>.yaml``; a trainer without its own folder uses the
    folder its class names in ``CONFIG_FOLDER`` (ZeroshotCLIP reads CoOp's configs, as in the ecosystem).
    """
    folder = ctx.config_root / "trainers" / job.trainer
    if not folder.is_dir():
        from trainers.lookup import trainer_class  # (importing the package registers every trainer)

        named = getattr(trainer_class(job.trainer), "CONFIG_FOLDER", None)  # None: unregistered, or its own name
        folder = ctx.config_root / "trainers" / (named or job.trainer)
    return ctx.config_root / "datasets" / f"{job.dataset}.yaml", folder / f"{job.cfg}.yaml"


def check_config_files(jobs, ctx):
    """Raise ``SetupError`` listing every config file the jobs need that does not exist."""
    missing = sorted({str(path) for job in jobs for path in config_files(job, ctx) if not path.is_file()})
    if missing:
        raise SetupError("missing config files (check the TRAINER / CFG / DATASET names, or add the YAML):\n  "
                         + "\n  ".join(missing))


def shown_path(path):
    """``path`` relative to the working directory when it lies inside it (shorter, equivalent commands)."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd())) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def build_command(job, ctx, load_epoch=None):
    """The ``train.py`` command line of ``job`` as a list of strings.

    ``load_epoch`` is used for evaluations of a trained model: ``None`` loads ``model-best.pth.tar``.
    """
    dataset_yaml, trainer_yaml = config_files(job, ctx)
    cmd = [*ctx.python, shown_path(ctx.train_py),
           "--root", str(ctx.data_root),
           "--seed", str(job.seed),
           "--trainer", job.trainer,
           "--dataset-config-file", shown_path(dataset_yaml),
           "--config-file", shown_path(trainer_yaml),
           "--output-dir", str(job.output_dir)]
    if ctx.device:
        cmd += ["--device", ctx.device]
    if not job.training:
        cmd.append("--eval-only")
        if job.model_dir is not None:
            cmd += ["--model-dir", str(job.model_dir)]
            if load_epoch is not None:
                cmd += ["--load-epoch", str(load_epoch)]
    return cmd + list(job.opts) + list(ctx.extra_opts)



def job_state(job):
    """(state, detail): ``finished`` (``result.json``) | ``running`` (its folder lock is held; detail: by whom)
    | ``unfinished`` (the directory exists, no result) | ``new``."""
    if logparse.finished(job.output_dir):
        return FINISHED, ""
    holder = lock_holder(str(job.output_dir))
    if holder is not None:
        return RUNNING, holder
    return (UNFINISHED if job.output_dir.exists() else NEW), ""


def _decision(job, state, detail):
    if state == FINISHED:
        return "skip (finished)"
    if state == RUNNING:
        return f"running elsewhere ({detail}), not started"
    if state == UNFINISHED:
        return "resume (unfinished)" if job.training else "rerun (unfinished)"
    return "run"


def _load_epoch_for(job, dry_run):
    """Resolve the checkpoint to evaluate; in a dry run before training, the placeholder ``LAST``."""
    if job.training or job.model_dir is None:
        return None
    if dry_run and not logparse.finished(job.model_dir):
        return LOAD_EPOCH_PENDING
    return deployed_epoch(job.model_dir)


def _execute_in_process(cmd, job):
    """Run ``runs.run.main`` (what ``train.py`` runs) on ``cmd``'s arguments here; its output goes to
    ``OUTPUT_DIR/stdout.txt``."""
    import contextlib
    import traceback

    from dassl.utils import close_logger
    from runs.run import main

    job.output_dir.mkdir(parents=True, exist_ok=True)
    with open(job.output_dir / CAPTURED_OUTPUT, "a", encoding="utf-8") as sink, \
            contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            main(cmd[2:])  # drop "python train.py"
            status = 0
        except Exception:  # a failed job is reported by the runner; the traceback is in stdout.txt
            traceback.print_exc()
            status = 1
        finally:
            close_logger()  # the run's log.txt tee (the redirection is undone on leaving the with)
    return status


def _execute(cmd, job, ctx, capture):
    """Run ``cmd`` (in its own process group, see ``sweeps.processes``); with ``capture`` its stdout+stderr
    are appended to ``OUTPUT_DIR/stdout.txt``. Returns the exit status, None when the runner is stopping."""
    if ctx.in_process:
        return _execute_in_process(cmd, job)
    if CHILDREN.stopping:
        return None
    env = {**os.environ, **ctx.env}
    if not capture:
        return CHILDREN.run(cmd, env=env)
    job.output_dir.mkdir(parents=True, exist_ok=True)
    with open(job.output_dir / CAPTURED_OUTPUT, "a", encoding="utf-8") as sink:
        return CHILDREN.run(cmd, env=env, stdout=sink)


def failure_logs(job):
    """The files to read when ``job`` failed: its captured output and its newest ``log.txt*``."""
    logs = [job.output_dir / CAPTURED_OUTPUT] if (job.output_dir / CAPTURED_OUTPUT).is_file() else []
    return tuple(logs + logparse.log_files(job.output_dir)[-1:])


def output_tail(job, lines=TAIL_LINES):
    """The last lines ``job`` printed: its captured output (it holds the traceback), else its newest log."""
    for path in failure_logs(job):
        text = logparse.tail(path, lines)
        if text:
            return tuple(text)
    return ()


def _failure_reason(returncode):
    if returncode < 0:
        return f"killed by {_signal_name(-returncode)}"
    if returncode:
        return f"exit status {returncode}"
    return "exit status 0 but no result.json (the final evaluation did not complete)"


def _signal_name(signum):
    """``SIGTERM`` for 15, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def run_chain(chain, ctx, dry_run=False, capture=False, report=print):
    """Run the jobs of ``chain`` in order and return one ``Outcome`` per job.

    A training job that does not finish (failed, running elsewhere, interrupted) blocks the evaluations after
    it; a failed evaluation does not stop the others. Once the runner is stopping (``sweeps.processes``), no
    further job starts. ``dry_run`` prints each decision and command without running anything.
    """
    outcomes = []
    blocked_by = None
    for job in chain:
        if CHILDREN.stopping and not dry_run:
            outcomes.append(Outcome(job, "interrupted", message=f"not started: {CHILDREN.stop_reason}"))
            continue
        if blocked_by is not None:
            outcomes.append(Outcome(job, "blocked", message=f"its training job did not finish ({blocked_by})"))
            continue
        state, detail = job_state(job)
        report(f"# {_decision(job, state, detail)}: {job.output_dir}")
        if state in (FINISHED, RUNNING):
            outcomes.append(Outcome(job, "skipped") if state == FINISHED else
                            Outcome(job, "running", message=f"running elsewhere: {detail}"))
            if state == RUNNING and job.training:
                blocked_by = f"running elsewhere: {job.output_dir}"
            continue
        try:
            load_epoch = _load_epoch_for(job, dry_run)
        except NoDeployedModel as error:  # the model to evaluate is missing
            outcomes.append(Outcome(job, "failed", message=str(error)))
            report(f"# FAILED: {error}")
            continue
        cmd = build_command(job, ctx, load_epoch)
        if dry_run:
            if load_epoch == LOAD_EPOCH_PENDING:
                report(PENDING_NOTE)
            report(shlex.join(cmd))
            outcomes.append(Outcome(job, "planned"))
            continue
        returncode = _execute(cmd, job, ctx, capture)
        if returncode == 0 and logparse.finished(job.output_dir):
            outcomes.append(Outcome(job, "ok"))
            continue
        if returncode is None or CHILDREN.stopping:
            outcome = Outcome(job, "interrupted", failure_logs(job), CHILDREN.stop_reason)
        elif (holder := lock_holder(str(job.output_dir))) is not None:  # another runner started it meanwhile
            outcome = Outcome(job, "running", message=f"running elsewhere: {holder}")
        else:
            outcome = Outcome(job, "failed", failure_logs(job), _failure_reason(returncode), output_tail(job))
            report(f"# FAILED ({outcome.message}): {job.output_dir}")
        outcomes.append(outcome)
        if job.training:
            blocked_by = f"{outcome.status}: {job.output_dir}"
    return outcomes


def summary_lines(outcomes):
    """Human-readable summary: counts per status, then every job that did not finish with its logs, and the
    last lines of each failed job's output."""
    counts = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    lines = ["=== sweep summary: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))]
    for outcome in outcomes:
        if outcome.status in INCOMPLETE:
            logs = " ".join(str(p) for p in outcome.logs) or "(no log)"
            lines.append(f"{outcome.status.upper()} {outcome.job.output_dir}: {outcome.message}; logs: {logs}")
            lines += [f"    | {line}" for line in outcome.tail]
    return lines
