"""The executor interface, and the registry that the sweep command line reads.

``python scripts/sweep.py`` (:mod:`sweeps.runner`) expands its sweep files into chains (a training job, then the
evaluations of its model: :mod:`sweeps.jobs`) and hands them to the executor named by ``--executor``:

* ``plan(chains, retry_failed) -> Plan``: which chains to launch now, and why the others are held;
* ``launch(plan, ctx, dry_run) -> exit status``: run or submit them (a dry run says what it would do) and report;
* ``states(chains) -> {chain key: Task}``: the tasks it runs chains in (queued, running, or gone), which
  ``sweep.py status`` shows next to what the output tree says (:mod:`sweeps.status`).

Every task runs :func:`sweeps.jobs.run_chain`: finished jobs are skipped, an unfinished training resumes from its
output folder, and a job whose folder lock is held elsewhere is not started twice. So an executor that restarts
or requeues a task (preemption, time limit) just runs the same chain again.
"""
import abc
from dataclasses import dataclass, field

from sweeps.status import FAILED, FINISHED, RUNNING, chain_key, chain_status

EXECUTORS = {}  # --executor name -> Executor subclass, in registration order


def register_executor(cls):
    """Class decorator: offer ``cls`` as ``--executor cls.NAME`` (and ask it in ``sweep.py status``)."""
    if not cls.NAME or cls.NAME in EXECUTORS:
        raise ValueError(f"executor {cls.__name__} needs a NAME that no other executor has, got {cls.NAME!r}")
    EXECUTORS[cls.NAME] = cls
    return cls


@dataclass(frozen=True)
class Plan:
    """The chains an executor launches now, and ``{reason: number of chains}`` of those it holds back."""

    chains: list
    held: dict = field(default_factory=dict)

    @property
    def jobs(self):
        return sum(len(chain) for chain in self.chains)


class Executor(abc.ABC):
    """Runs a sweep's chains somewhere. Subclasses set ``NAME`` and ``TASK_LABEL`` and implement ``from_args`` and
    ``launch``; an executor with a queue implements ``states`` (the default plan then never launches a chain twice).
    """

    NAME = None  # the --executor value, and the key of this executor's section in a sweep file
    TASK_LABEL = "task"  # how status lines name one of its tasks: "<TASK_LABEL> <task id>"

    @classmethod
    def add_arguments(cls, group):
        """Add this executor's flags to ``group`` (an argparse argument group); return their actions, so that the
        command line refuses them with another executor."""
        return []

    @classmethod
    @abc.abstractmethod
    def from_args(cls, args, sweep):
        """The executor for the parsed flags and the sweep (``sweeps.sweep_files.Sweep``: chains, output roots, and
        ``sections[NAME]``, this executor's section of the sweep files); ``SetupError`` for a bad option. It starts
        nothing: ``sweep.py status`` builds every executor this way to ask it for its tasks."""

    def states(self, chains):
        """``{chain key: Task}`` of the chains this executor has launched (``sweeps.status.Task``); none here."""
        return {}

    def plan(self, chains, retry_failed):
        """A queue's rule: never launch again a chain that finished, has a job running (its folder lock is held) or
        has a task the executor still holds; chains with a failed job are launched only with ``retry_failed``, which
        launches nothing else."""
        tasks = self.states(chains)
        selected, held = [], {}
        for chain in chains:
            task = tasks.get(chain_key(chain))
            states = {s.state for s in chain_status(chain, task)}
            if states == {FINISHED}:
                reason = "finished"
            elif RUNNING in states or (task is not None and task.live):
                reason = "running or queued"
            elif (FAILED in states) != retry_failed:
                reason = "failed (retry with --retry-failed)" if FAILED in states else "not failed"
            else:
                selected.append(chain)
                continue
            held[reason] = held.get(reason, 0) + 1
        return Plan(selected, held)

    @abc.abstractmethod
    def launch(self, plan, ctx, dry_run):
        """Run or submit ``plan.chains`` with the run context ``ctx`` (``sweeps.jobs.RunContext``), printing what
        happens; a dry run prints what would happen and changes nothing. Returns the command's exit status."""
