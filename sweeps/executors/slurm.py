"""The SLURM executor, through submitit: one array task per chain (a training job, then its evaluations).

``python scripts/sweep.py SWEEP.yaml --executor slurm [--partition P --gpus-per-job 1 --time 240 ...]`` submits
every chain that is neither finished, running nor queued as one job array (``submitit``: ``map_array``; at most
``array_parallelism`` tasks run at once). Each task runs :class:`ChainTask`, which calls ``run_chain`` on the
compute node: finished jobs are skipped, an unfinished training resumes from its output folder, and every
``train.py`` runs as a child process in its own process group.

Preemption and time limits: submitit asks SLURM to send USR2 ``signal_delay_s`` (90 s) before the time limit
and handles it by calling :meth:`ChainTask.checkpoint`, which stops the running ``train.py`` and returns the
same call; submitit requeues the task (``scontrol requeue``, at most ``max_timeouts`` times for time limits).
The requeued task runs the chain again and the training resumes from its newest epoch checkpoint; resumed
training is bit-identical to an uninterrupted run. A SIGTERM (preemption without the USR2, ``scancel``) stops
the chain the same way; the task then waits for SLURM's requeue signal or its kill instead of failing at once.

Every submission is appended to ``<folder>/submissions.jsonl`` (chain -> task id), so that ``sweep.py status``
and later submissions know each chain's task; its live state comes from ``squeue``, which (unlike ``sacct``,
submitit's source of job states) works on clusters without SLURM accounting (slurmdbd). submitit is imported only
by the functions that submit or read its folders, so local sweeps and ``status`` of a local sweep never load it.
"""
import dataclasses
import datetime
import getpass
import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sweeps.executors.base import Executor, register_executor
from sweeps.jobs import REPO_ROOT, SetupError, run_chain, summary_lines
from sweeps.processes import CHILDREN
from sweeps.status import Task, chain_key

REGISTRY = "submissions.jsonl"
STOP_WAIT_S = 180  # after a SIGTERM, how long a task waits for SLURM's requeue signal or kill
MAX_ARRAY_SIZE = 1000  # tasks per job array (SLURM's default MaxArraySize is 1001)


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of one array task (one chain on one GPU). Set in a sweep file's ``slurm:`` section or by flags."""

    partition: str = None       # --partition (None: the cluster's default partition)
    gpus_per_job: int = 1       # --gpus-per-node; 0 runs train.py with --device cpu
    cpus_per_job: int = 8       # --cpus-per-task (data loading: configs use DATALOADER.NUM_WORKERS 8)
    mem_gb: float = None        # --mem (None: the partition's default)
    time_min: int = 240         # --time, minutes; a chain that needs longer is requeued and resumes
    account: str = None         # --account
    qos: str = None             # --qos
    constraint: str = None      # --constraint, e.g. a GPU type: "a100|h100"
    array_parallelism: int = 64  # at most this many tasks of the array run at once
    max_timeouts: int = 3       # requeues after hitting the time limit (preemptions do not count)
    setup: tuple = ()           # shell lines run before the task, e.g. "source ~/venv/bin/activate"
    folder: str = None          # submitit's folder (scripts, pickles, task logs); default <output>/slurm

    @classmethod
    def from_mapping(cls, mapping, source):
        """Options from a ``slurm:`` section; raises ``SetupError`` naming an unknown key or a bad value."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - set(fields))
        if unknown:
            raise SetupError(f"{source}: unknown slurm keys {unknown}; allowed: {sorted(fields)}")
        values = {}
        for key, value in mapping.items():
            if value is None:
                continue
            if key == "setup":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise SetupError(f"{source}: slurm.setup must be a list of shell lines")
                value = tuple(value)
            elif key in ("gpus_per_job", "cpus_per_job", "time_min", "array_parallelism", "max_timeouts"):
                if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "gpus_per_job" else 1):
                    raise SetupError(f"{source}: slurm.{key} must be a whole number >= "
                                     f"{0 if key == 'gpus_per_job' else 1}, got {value!r}")
            elif key == "mem_gb":
                if not isinstance(value, (int, float)) or value <= 0:
                    raise SetupError(f"{source}: slurm.mem_gb must be a positive number, got {value!r}")
            else:
                value = str(value)
            values[key] = value
        return cls(**values)

    def updated(self, **flags):
        """A copy with every flag that is not None applied."""
        return dataclasses.replace(self, **{k: v for k, v in flags.items() if v is not None})

    def executor_parameters(self, name):
        """``AutoExecutor.update_parameters`` keyword arguments for SLURM."""
        params = {
            "name": name, "timeout_min": self.time_min, "nodes": 1, "tasks_per_node": 1,
            "gpus_per_node": self.gpus_per_job, "cpus_per_task": self.cpus_per_job,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_additional_parameters": {"chdir": str(REPO_ROOT)},  # the task imports sweeps/ from here
        }
        optional = {"mem_gb": self.mem_gb, "slurm_partition": self.partition, "slurm_account": self.account,
                    "slurm_qos": self.qos, "slurm_constraint": self.constraint,
                    "slurm_setup": list(self.setup) or None}
        return {**params, **{k: v for k, v in optional.items() if v is not None}}


def task_context(ctx, options):
    """The run context of a task: ``--device cuda`` on its GPU(s), or CPU with one thread per allocated core."""
    if options.gpus_per_job:
        return dataclasses.replace(ctx, device="cuda")
    return dataclasses.replace(ctx, device="cpu", env={**ctx.env, "OMP_NUM_THREADS": str(options.cpus_per_job)})


class ChainIncomplete(RuntimeError):
    """Some job of the chain did not finish (failed, running elsewhere, interrupted); the message summarises."""


class ChainTask:
    """What each array task runs: ``run_chain`` on one chain, requeued by submitit on preemption / time limit (submitit
    requeues a callable that has a ``checkpoint`` method, as its ``helpers.Checkpointable`` does)."""

    def __init__(self, ctx, stop_wait_s=STOP_WAIT_S):
        self.ctx = ctx
        self.stop_wait_s = stop_wait_s

    def __call__(self, chain):
        signal.signal(signal.SIGTERM, self._on_sigterm)  # replaces submitit's "bypass" handler
        outcomes = run_chain(chain, self.ctx, capture=True, report=lambda line: print(line, flush=True))
        if CHILDREN.stopping:  # SLURM is ending this task: its requeue signal (USR2) or its kill follows
            print(f"# stopped: {CHILDREN.stop_reason}; waiting up to {self.stop_wait_s} s for SLURM", flush=True)
            time.sleep(self.stop_wait_s)
        unfinished = [o for o in outcomes if o.status not in ("ok", "skipped")]
        if unfinished:
            raise ChainIncomplete("\n".join(summary_lines(outcomes)))
        return [(str(o.job.output_dir), o.status) for o in outcomes]

    @staticmethod
    def _on_sigterm(signum, frame):
        CHILDREN.stop("SLURM sent SIGTERM (preemption or scancel)")

    def checkpoint(self, chain):
        """Called by submitit on USR2 (preemption, time limit): stop train.py; the requeued task resumes it."""
        from submitit.helpers import DelayedSubmission

        CHILDREN.stop("SLURM requeues this task (preemption or time limit)")
        print("# requeued: the chain continues from its output folders when the task restarts", flush=True)
        return DelayedSubmission(self, chain)  # the same call, run again by the requeued task


def make_executor(options, folder, name):
    """A submitit executor for SLURM; ``SetupError`` when this machine has no SLURM client (``srun``)."""
    import submitit

    if shutil.which("srun") is None or shutil.which("sbatch") is None:
        raise SetupError("--executor slurm needs SLURM's client commands (sbatch, srun, squeue): run this on a "
                         "cluster's login node, or use the local executor (--gpus / --workers)")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=options.max_timeouts)
    executor.update_parameters(**options.executor_parameters(name))
    return executor


def submit(executor, chains, ctx, folder, stop_wait_s=STOP_WAIT_S):
    """Submit ``chains`` as job arrays of :class:`ChainTask` (at most ``MAX_ARRAY_SIZE`` tasks each) and record
    them; returns the submitit jobs."""
    jobs = []
    for start in range(0, len(chains), MAX_ARRAY_SIZE):
        with executor.batch():
            jobs += [executor.submit(ChainTask(ctx, stop_wait_s), chain)
                     for chain in chains[start:start + MAX_ARRAY_SIZE]]
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    with open(Path(folder) / REGISTRY, "a", encoding="utf-8") as registry:
        for chain, job in zip(chains, jobs):
            registry.write(json.dumps({"chain": chain_key(chain), "job_id": job.job_id, "jobs": len(chain),
                                       "submitted": now}) + "\n")
    return jobs


def submitted_tasks(folder):
    """``{chain key: job id}`` of the latest submission of every chain recorded in ``folder``."""
    path = Path(folder) / REGISTRY
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {record["chain"]: record["job_id"] for record in records}


def queue_states():
    """``{job id: state}`` of this user's jobs in SLURM's queue, array tasks one by one (``123_4``)."""
    if shutil.which("squeue") is None:
        raise SetupError("squeue not found: the sweep's tasks were submitted to SLURM; run this on the cluster")
    result = subprocess.run(["squeue", "--noheader", "--array", f"--user={getpass.getuser()}",
                             "--format=%i|%T"], capture_output=True, text=True, timeout=60)
    if result.returncode:
        raise SetupError(f"squeue failed: {result.stderr.strip()}")
    return dict(line.strip().split("|", 1) for line in result.stdout.splitlines() if "|" in line)


def chain_tasks(folder, states=None):
    """``{chain key: Task}`` for every chain submitted from ``folder``; ``states`` defaults to ``squeue``'s."""
    submitted = submitted_tasks(folder)
    if not submitted:
        return {}
    from submitit.core.utils import JobPaths

    states = queue_states() if states is None else states
    return {key: Task(SlurmExecutor.TASK_LABEL, job_id, states.get(job_id),
                      JobPaths(folder, job_id=job_id, task_id=0).stderr)
            for key, job_id in submitted.items()}


FLAGS = ("partition", "gpus_per_job", "cpus_per_job", "mem_gb", "time_min", "account", "qos", "constraint",
         "array_parallelism", "max_timeouts", "folder")  # the SlurmOptions fields the command line sets


@register_executor
class SlurmExecutor(Executor):
    """Job arrays on SLURM, one task per chain; a sweep file's slurm: section holds their options (SlurmOptions),
    which these flags override."""

    NAME = "slurm"
    TASK_LABEL = "SLURM job"

    def __init__(self, options, folder, sweep):
        self.options = options
        self.folder = folder  # submitit's folder: scripts, pickles, task logs and the submissions record
        self.sweep = sweep

    @classmethod
    def add_arguments(cls, group):
        return [
            group.add_argument("--partition"),
            group.add_argument("--gpus-per-job", dest="gpus_per_job", type=int,
                               help="GPUs per task (default 1; 0: CPU)"),
            group.add_argument("--cpus-per-job", dest="cpus_per_job", type=int, help="CPUs per task (default 8)"),
            group.add_argument("--mem", dest="mem_gb", type=float, help="memory per task in GB"),
            group.add_argument("--time", dest="time_min", type=int,
                               help="time limit per task in minutes (default 240)"),
            group.add_argument("--account"),
            group.add_argument("--qos"),
            group.add_argument("--constraint", help="node features, e.g. a GPU type"),
            group.add_argument("--array-parallelism", dest="array_parallelism", type=int,
                               help="tasks of the array running at once (default 64)"),
            group.add_argument("--max-timeouts", dest="max_timeouts", type=int,
                               help="requeues after hitting the time limit (default 3)"),
            group.add_argument("--slurm-folder", dest="folder", help="submitit's folder (default: <output>/slurm)"),
        ]

    @classmethod
    def from_args(cls, args, sweep):
        """Options: the sweep files' ``slurm:`` section overridden by the flags given; folder default
        ``<first output root>/slurm``."""
        options = SlurmOptions.from_mapping(sweep.sections.get(cls.NAME, {}), "slurm section of the sweep file")
        options = options.updated(**{key: getattr(args, key) for key in FLAGS})
        return cls(options, Path(options.folder or sweep.roots[0] / "slurm").absolute(), sweep)

    def states(self, chains):
        return chain_tasks(self.folder)

    def launch(self, plan, ctx, dry_run):
        for reason, count in sorted(plan.held.items()):
            print(f"# not submitted: {count} chains {reason}")
        if not plan.chains:
            print("# nothing to submit")
            return 0
        if dry_run:
            print(f"# would submit {len(plan.chains)} chains ({plan.jobs} jobs) as a SLURM array with "
                  f"{self.options.executor_parameters(self.sweep.name)}; submitit folder {self.folder}")
            for chain in plan.chains:
                print(f"#   {chain[0].output_dir} (+{len(chain) - 1} evaluations)")
            return 0
        executor = make_executor(self.options, self.folder, self.sweep.name)
        jobs = submit(executor, plan.chains, task_context(ctx, self.options), self.folder)
        arrays = sorted({job.job_id.split("_")[0] for job in jobs}, key=int)
        print(f"# submitted {len(jobs)} chains ({plan.jobs} jobs) as SLURM job {', '.join(arrays)}; task logs in "
              f"{self.folder}")
        folder = ["--slurm-folder", str(self.options.folder)] if self.options.folder else []
        print(f"# follow: python scripts/sweep.py status {' '.join(self.sweep.status_arguments() + folder)}")
        return 0
