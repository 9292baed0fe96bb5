"""The local executor (the default): worker threads on this machine, each running one chain at a time.

One worker per listed GPU (``--gpus 0 1``: ``CUDA_VISIBLE_DEVICES=<id>``, ``--device cuda``), or ``--workers N`` CPU
workers (``--device cpu``, ``OMP_NUM_THREADS`` = cores / N unless set); without either, one worker and train.py's
default device. Each chain runs through :func:`sweeps.jobs.run_chain` (finished jobs skipped, unfinished ones
resumed, jobs locked by another runner not started), so launching a sweep again continues it. SIGINT / SIGTERM
stop the running jobs (their process groups) and start no new one. It keeps no record of tasks: a job it runs is
seen by ``status`` through its output-folder lock.
"""
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from sweeps.executors.base import Executor, Plan, register_executor
from sweeps.jobs import SetupError, exit_status, run_chain, summary_lines
from sweeps.processes import CHILDREN, stop_on_signals
from sweeps.status import chain_status, has_failed


def worker_slots(gpus, workers):
    """One (label, device, env) per parallel worker: a GPU each, or N CPU workers sharing the cores."""
    if gpus:
        return [(f"gpu{g}", "cuda", {"CUDA_VISIBLE_DEVICES": str(g)}) for g in gpus]
    if workers:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        return [(f"cpu{i}", "cpu", {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)})
                for i in range(workers)]
    return [("worker", None, {})]


def run_sweep(chains, ctx, slots, dry_run=False, report=print):
    """Run the chains on the worker slots; return every ``Outcome`` (dry run: sequential, nothing runs)."""
    if dry_run:
        return [o for chain in chains for o in run_chain(chain, ctx, dry_run=True, report=report)]
    free = queue.Queue()
    for slot in slots:
        free.put(slot)
    lock = threading.Lock()

    def run_on_a_slot(chain):
        label, device, env = free.get()
        try:
            def slot_report(message):
                with lock:
                    report(f"[{label}] {message}")
            slot_ctx = replace(ctx, device=device or ctx.device, env={**ctx.env, **env})
            return run_chain(chain, slot_ctx, capture=True, report=slot_report)
        finally:
            free.put((label, device, env))

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        results = list(pool.map(run_on_a_slot, chains))
    return [o for outcomes in results for o in outcomes]


@register_executor
class LocalExecutor(Executor):
    """Worker threads on this machine, each running one chain at a time.

    Exit status: 0 all done, 1 a job failed, 3 a job runs elsewhere, 128+N stopped by signal N.
    """

    NAME = "local"

    def __init__(self, gpus=None, workers=None):
        self.slots = worker_slots(gpus, workers)

    @classmethod
    def add_arguments(cls, group):
        parallel = group.add_mutually_exclusive_group()
        return [parallel.add_argument("--gpus", type=int, nargs="+", help="GPU ids, one worker each"),
                parallel.add_argument("--workers", type=int, help="number of CPU workers")]

    @classmethod
    def from_args(cls, args, sweep):
        if sweep.sections.get(cls.NAME):
            raise SetupError("the local executor takes no options from a sweep file: remove its `local:` section "
                             "and pass --gpus or --workers")
        if args.workers is not None and args.workers < 1:
            raise SetupError("--workers must be at least 1")
        return cls(args.gpus, args.workers)

    def plan(self, chains, retry_failed):
        """Every chain (``run_chain`` skips what finished and resumes what did not), or with ``retry_failed`` only
        the chains that hold a failed job."""
        if retry_failed:
            chains = [chain for chain in chains if has_failed(chain_status(chain))]
        return Plan(chains)

    def launch(self, plan, ctx, dry_run):
        print(f"# {plan.jobs} jobs in {len(plan.chains)} chains")
        with stop_on_signals() as received:
            outcomes = run_sweep(plan.chains, ctx, self.slots, dry_run=dry_run)
        for line in summary_lines(outcomes):
            print(line)
        if received["signal"]:
            print(f"# stopped ({CHILDREN.stop_reason}): re-run the same command to continue")
            return 128 + received["signal"]
        return exit_status(outcomes)
