"""Sweep runner: datasets x seeds x trainers x protocols from YAML sweep files, run in parallel.

    python scripts/sweep.py scripts/sweeps/base2new.yaml --gpus 0 1 2 3
    python scripts/sweep.py scripts/sweeps/micro.yaml --workers 2 --dry-run

One worker per listed GPU (``CUDA_VISIBLE_DEVICES=<id>``, ``--device cuda``) or ``--workers N`` CPU workers
(``--device cpu``). A worker runs one chain at a time (a training job, then the evaluations of its model);
chains that share a training directory are merged so it is trained once. Failed jobs do not stop the
sweep; a summary lists them with their logs. Each job's console output is appended to
``OUTPUT_DIR/stdout.txt``. Finished jobs are skipped and unfinished ones resume, so re-running a sweep
continues it. Exit status: 0 all done, 1 some job failed, 2 bad input.

Sweep file::

    output: output                 # root of the output tree (relative paths: to the repository root)
    opts: []                       # KEY VALUE pairs added to every train.py call
    experiments:
      - protocol: base2new         # base2new | open_world | cross_dataset | domain_generalization | few_shot
        datasets: [caltech101, dtd]
        seeds: [1, 2, 3]
        runs:                      # trainer + config; optional per-run seeds
          - {trainer: CoOp, cfg: vit_b16_ep50}
          - {trainer: ZeroshotCLIP, cfg: vit_b16, seeds: [1]}
"""
import argparse
import os
import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable instead of scripts/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import yaml  # noqa: E402

from scripts import layout, protocols  # noqa: E402
from scripts.cli import add_common_options, context_from_args, split_opts  # noqa: E402
from scripts.jobs import REPO_ROOT, SetupError, check_config_files, run_chain  # noqa: E402

EXPERIMENT_KEYS = {
    "base2new": {"datasets", "seeds", "runs", "shots"},
    "open_world": {"datasets", "seeds", "runs", "shots", "ratios"},
    "cross_dataset": {"seeds", "runs", "source", "targets", "shots"},
    "domain_generalization": {"seeds", "runs", "source", "targets", "shots"},
    "few_shot": {"datasets", "seeds", "runs", "shots"},
}
DEFAULT_TARGETS = {"cross_dataset": layout.CROSS_DATASET_TARGETS, "domain_generalization": layout.DG_TARGETS}


def load_sweep(path):
    """Read and validate a sweep file; raises ``SetupError`` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise SetupError(f"sweep file {path} does not exist")
    sweep = yaml.safe_load(path.read_text()) or {}
    unknown = set(sweep) - {"output", "opts", "experiments"}
    if unknown or not sweep.get("experiments"):
        raise SetupError(f"{path}: a sweep file has the keys output, opts and a non-empty experiments list "
                         f"(unknown keys: {sorted(unknown)})")
    if len(sweep.get("opts") or []) % 2:
        raise SetupError(f"{path}: opts must be KEY VALUE pairs, got an odd count")
    for i, experiment in enumerate(sweep["experiments"]):
        protocol = experiment.get("protocol")
        if protocol not in EXPERIMENT_KEYS:
            raise SetupError(f"{path}: experiment {i} has protocol {protocol!r}; use one of {protocols.PROTOCOLS}")
        unknown = set(experiment) - EXPERIMENT_KEYS[protocol] - {"protocol"}
        if unknown:
            raise SetupError(f"{path}: experiment {i} ({protocol}) has unknown keys {sorted(unknown)}; "
                             f"allowed: {sorted(EXPERIMENT_KEYS[protocol])}")
        for key in ("seeds", "runs") + (("datasets",) if "datasets" in EXPERIMENT_KEYS[protocol] else ()):
            if not experiment.get(key):
                raise SetupError(f"{path}: experiment {i} ({protocol}) needs a non-empty {key!r} list")
        for run in experiment["runs"]:
            if not isinstance(run, dict) or not {"trainer", "cfg"} <= set(run) or set(run) - {"trainer", "cfg", "seeds"}:
                raise SetupError(f"{path}: experiment {i} run {run!r} must be {{trainer: X, cfg: Y[, seeds: [...]]}}")
    return sweep


def experiment_chains(experiment, root):
    """All job chains of one experiment of a sweep file."""
    protocol = experiment["protocol"]
    chains = []
    for run in experiment["runs"]:
        for seed in run.get("seeds", experiment["seeds"]):
            head = (root, run["trainer"], run["cfg"])
            if protocol in DEFAULT_TARGETS:
                chains.append(protocols.cross_dataset(
                    *head, seed, experiment.get("targets", DEFAULT_TARGETS[protocol]),
                    source=experiment.get("source", layout.DEFAULT_SOURCE),
                    shots=experiment.get("shots", layout.BASE2NEW_SHOTS)))
                continue
            for dataset in experiment["datasets"]:
                if protocol == "base2new":
                    chains.append(protocols.base2new(*head, dataset, seed,
                                                     shots=experiment.get("shots", layout.BASE2NEW_SHOTS)))
                elif protocol == "open_world":
                    chains.append(protocols.open_world(
                        *head, dataset, seed, experiment.get("ratios", layout.OPEN_WORLD_RATIOS),
                        shots=experiment.get("shots", layout.BASE2NEW_SHOTS)))
                else:
                    chains.extend(protocols.few_shot(*head, dataset, seed,
                                                     experiment.get("shots", layout.FEW_SHOT_SHOTS)))
    return chains


def merge_chains(chains):
    """Merge chains that start with the same training job and drop duplicate jobs (same output dir).

    Chains without a training job are split into one chain per evaluation (they are independent).
    """
    merged, seen = {}, set()
    for chain in chains:
        if chain[0].training:
            key = chain[0].output_dir
            target = merged.setdefault(key, [chain[0]])
            rest = chain[1:]
        else:
            rest = chain
            target = None
        for job in rest:
            if job.output_dir in seen:
                continue
            seen.add(job.output_dir)
            if target is None:
                merged[job.output_dir] = [job]
            else:
                target.append(job)
    return list(merged.values())


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


def summary_lines(outcomes):
    """Human-readable summary: counts per status, then every failed or blocked job with its logs."""
    counts = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    lines = ["=== sweep summary: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))]
    for outcome in outcomes:
        if outcome.status in ("failed", "blocked"):
            logs = " ".join(str(p) for p in outcome.logs) or "(no log)"
            lines.append(f"{outcome.status.upper()} {outcome.job.output_dir}: {outcome.message}; logs: {logs}")
    return lines


def build_parser():
    """Argument parser of the sweep runner."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep YAML files (scripts/sweeps/*.yaml)")
    parallel = parser.add_mutually_exclusive_group()
    parallel.add_argument("--gpus", type=int, nargs="+", help="GPU ids, one worker each")
    parallel.add_argument("--workers", type=int, help="number of CPU workers")
    parser.add_argument("--output", type=Path, default=None, help="override the sweep files' output root")
    add_common_options(parser)
    return parser


def main(argv=None):
    """Expand the sweep files, check configs, run; print the summary; return the exit status."""
    runner_args, opts = split_opts(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(runner_args)
    if args.workers is not None and args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        chains, file_opts = [], {}
        for path in args.sweeps:
            sweep = load_sweep(path)
            root = args.output or (REPO_ROOT / sweep.get("output", "output"))
            file_opts[path] = [str(v) for v in sweep.get("opts") or []]
            for experiment in sweep["experiments"]:
                chains += experiment_chains(experiment, root)
        if len({tuple(o) for o in file_opts.values()}) > 1:
            raise SetupError(f"the sweep files set different opts ({file_opts}); run them separately")
        chains = merge_chains(chains)
        ctx = context_from_args(args, next(iter(file_opts.values())) + opts)
        check_config_files([job for chain in chains for job in chain], ctx)
    except (SetupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"# {sum(len(c) for c in chains)} jobs in {len(chains)} chains")
    outcomes = run_sweep(chains, ctx, worker_slots(args.gpus, args.workers), dry_run=args.dry_run)
    for line in summary_lines(outcomes):
        print(line)
    return 1 if any(o.status in ("failed", "blocked") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
