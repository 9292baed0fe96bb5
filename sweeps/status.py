"""The state of every job of a sweep, read from its output tree and from the executor that runs its tasks.

Per job: ``finished`` (``result.json``), ``running`` (its output-folder lock is held: by whom, and its executor
task), ``failed`` (it ran and stopped without a result and nothing runs it now: the last lines of its output
are shown; interrupted runs count here too) or ``pending`` (not started yet: its task waits in the executor's
queue, it waits for its training, or it was not launched yet). A task that left its executor before reaching a
job, although the job's training had finished, makes that job ``failed`` with the task's own log.
"""
from dataclasses import dataclass
from pathlib import Path

from dassl.engine.run_dir import read_result
from results import logparse
from sweeps import jobs
from sweeps.jobs import CAPTURED_OUTPUT, job_state, output_tail, shown_path

FINISHED, RUNNING, FAILED, PENDING = "finished", "running", "failed", "pending"
STATES = (FINISHED, RUNNING, FAILED, PENDING)


@dataclass(frozen=True)
class Task:
    """What an executor knows of the latest task that runs a chain (``Executor.states``).

    ``label`` names the executor's tasks in ``status`` lines (``SLURM job``); ``state`` is the executor's own word
    for a task it still holds (``PENDING``, ``RUNNING``, ...), None once the task left it; ``log`` is the task's log.
    """

    label: str
    task_id: str
    state: str
    log: Path

    @property
    def live(self):
        """Whether the executor still holds the task (queued or running)."""
        return self.state is not None

    @property
    def name(self):
        """``SLURM job 123_4``: how status lines name the task."""
        return f"{self.label} {self.task_id}"


@dataclass(frozen=True)
class JobStatus:
    """One job's state, a short explanation, and (failed jobs) the last lines of its output."""

    job: object
    state: str
    detail: str = ""
    tail: tuple = ()


def chain_key(chain):
    """The identity of a chain across submissions: its first job's output directory."""
    return str(chain[0].output_dir)


def attempted(job):
    """Whether ``job`` ever started: its directory holds a log or captured output."""
    captured = job.output_dir / CAPTURED_OUTPUT
    return bool(logparse.log_files(job.output_dir)) or (captured.is_file() and captured.stat().st_size > 0)


def _result_detail(job):
    accuracy = read_result(str(job.output_dir))["metrics"].get("accuracy")
    return f"accuracy {accuracy:.2f}%" if accuracy is not None else "no test metrics"


def _job_status(job, task, unfinished_training):
    state, holder = job_state(job)
    if state == jobs.FINISHED:
        return JobStatus(job, FINISHED, _result_detail(job))
    live = task is not None and task.live
    if state == jobs.RUNNING:
        return JobStatus(job, RUNNING, holder + (f"; {task.name}" if live else ""))
    if live:
        return JobStatus(job, PENDING, f"{task.name} {task.state}")
    if attempted(job):
        return JobStatus(job, FAILED, "stopped without a result", output_tail(job))
    if unfinished_training is not None:
        return JobStatus(job, PENDING, f"waiting for its training ({unfinished_training.state})")
    if task is not None:
        return JobStatus(job, FAILED, f"{task.name} ended before running it; log: {task.log}",
                         tuple(logparse.tail(task.log)))
    return JobStatus(job, PENDING, "not started")


def chain_status(chain, task=None):
    """``JobStatus`` of every job of ``chain``; ``task``: the :class:`Task` that runs it, or None."""
    statuses, unfinished_training = [], None
    for job in chain:
        status = _job_status(job, task, unfinished_training)
        if job.training and status.state != FINISHED:
            unfinished_training = status
        statuses.append(status)
    return statuses


def has_failed(statuses):
    return any(s.state == FAILED for s in statuses)


def status_lines(statuses):
    """One line per job (``STATE  directory  (detail)``), the failed jobs' last lines, then the counts."""
    lines = []
    for status in statuses:
        lines.append(f"{status.state.upper():<9} {shown_path(status.job.output_dir)}  ({status.detail})")
        lines += [f"          | {line}" for line in status.tail]
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    lines.append("=== sweep status: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return lines


def exit_status(statuses):
    """0 when every job finished, 1 when one failed, 3 when some are still running or pending."""
    states = {s.state for s in statuses}
    if states <= {FINISHED}:
        return 0
    return 1 if FAILED in states else 3
