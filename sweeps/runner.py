"""Sweep runner: datasets x seeds x trainers x protocols from YAML sweep files, run by an executor.

    python scripts/sweep.py scripts/sweeps/base2new.yaml --gpus 0 1 2 3        # this machine, a GPU per worker
    python scripts/sweep.py scripts/sweeps/micro.yaml --workers 2 --dry-run    # CPU workers; print, run nothing
    python scripts/sweep.py scripts/sweeps/base2new.yaml --executor slurm --partition gpu --time 240
    python scripts/sweep.py status scripts/sweeps/base2new.yaml                # finished / running / failed / pending
    python scripts/sweep.py scripts/sweeps/base2new.yaml --executor slurm --retry-failed

The sweep files (format: ``sweeps/sweep_files.py``) expand into chains: a training job, then the evaluations of its
model; chains that share a training directory are merged so it is trained once. Before the first job the runner
checks, once, that the jobs' packages import and that their datasets are under ``$DATA`` (``sweeps.preflight``).
The executor (``--executor``, default ``local``; ``sweeps/executors/``) then runs or submits the chains: ``local``
runs them on worker threads here (one per ``--gpus`` id, or ``--workers N`` on the CPU), ``slurm`` submits one job
array task per chain through submitit. Every job runs ``train.py`` in its own process group with its console output
appended to ``OUTPUT_DIR/stdout.txt``; finished jobs (``result.json``) are skipped, jobs whose folder lock is held
are reported as running elsewhere, unfinished ones resume: running a sweep again continues it.

``status`` reads the output tree and asks every executor for its tasks. Exit status: 0 all done (submitted), 1
some job failed, 2 bad input, 3 some job runs elsewhere (status: is running or pending), 128+N stopped by signal N.
"""
import argparse
import sys
from pathlib import Path

from dassl.cli import OneLineArgumentParser
from sweeps import status
from sweeps.cli import add_common_options, context_from_args, split_opts
from sweeps.executors import EXECUTORS
from sweeps.jobs import SetupError
from sweeps.preflight import check_before_jobs
from sweeps.sweep_files import load_sweeps


def parser_and_executor_flags():
    """The runner's argument parser (``status`` takes the same arguments), and ``{executor name: the argparse actions
    of its flags}``."""
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep YAML files (scripts/sweeps/*.yaml)")
    parser.add_argument("--executor", choices=list(EXECUTORS), default="local",
                        help="what runs the chains (default: local, worker threads on this machine)")
    parser.add_argument("--output", type=Path, default=None, help="override the sweep files' output root")
    parser.add_argument("--retry-failed", action="store_true",
                        help="launch only the chains with a failed job (see `sweep.py status`)")
    flags = {}
    for name, executor in EXECUTORS.items():
        group = parser.add_argument_group(f"{name} executor (--executor {name})",
                                          " ".join((executor.__doc__ or "").split("\n\n")[0].split()))
        flags[name] = executor.add_arguments(group)
    add_common_options(parser)
    return parser, flags


def build_parser():
    return parser_and_executor_flags()[0]


def check_executor_flags(args, flags):
    """``SetupError`` naming the flags given that belong to another executor than ``args.executor``."""
    for name, actions in flags.items():
        given = [a.option_strings[0] for a in actions if name != args.executor and getattr(args, a.dest) != a.default]
        if given:
            own = ", ".join(a.option_strings[0] for a in flags[args.executor]) or "none"
            raise SetupError(f"{' / '.join(given)}: flags of the {name} executor, not of --executor {args.executor} "
                             f"(whose flags are: {own})")


def task_of_every_chain(executors, chains):
    """``{chain key: Task}`` from every executor; a task an executor still holds wins over one that left its."""
    tasks = {}
    for executor in executors:
        for key, task in executor.states(chains).items():
            if key not in tasks or task.live:
                tasks[key] = task
    return tasks


def main_status(argv):
    """``sweep.py status SWEEP...``: one line per job; exit 0 all finished, 1 some failed, 3 otherwise."""
    args = build_parser().parse_args(argv)
    try:
        sweep = load_sweeps(args.sweeps, args.output)
        executors = [executor.from_args(args, sweep) for executor in EXECUTORS.values()]
        tasks = task_of_every_chain(executors, sweep.chains)
    except (SetupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    statuses = [job for chain in sweep.chains
                for job in status.chain_status(chain, tasks.get(status.chain_key(chain)))]
    for line in status.status_lines(statuses):
        print(line)
    return status.exit_status(statuses)


def main(argv=None):
    """Expand the sweep files, check configs and the environment, plan and launch; return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["status"]:
        return main_status(argv[1:])
    runner_args, opts = split_opts(argv)
    parser, flags = parser_and_executor_flags()
    args = parser.parse_args(runner_args)
    try:
        check_executor_flags(args, flags)
        sweep = load_sweeps(args.sweeps, args.output)
        executor = EXECUTORS[args.executor].from_args(args, sweep)
        ctx = context_from_args(args, list(sweep.opts) + opts)
        jobs = [job for chain in sweep.chains for job in chain]
        check_before_jobs(jobs, ctx, args.dry_run)
        plan = executor.plan(sweep.chains, args.retry_failed)
    except (SetupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return executor.launch(plan, ctx, args.dry_run)
    except SetupError as error:  # e.g. no scheduler client on this machine: nothing was launched
        print(f"error: {error}", file=sys.stderr)
        return 2
