"""Sweep runner: datasets x seeds x trainers x protocols from YAML sweep files, on this machine or on SLURM.

    python scripts/sweep.py scripts/sweeps/base2new.yaml --gpus 0 1 2 3        # this machine, a GPU per worker
    python scripts/sweep.py scripts/sweeps/micro.yaml --workers 2 --dry-run    # CPU workers; print, run nothing
    python scripts/sweep.py scripts/sweeps/base2new.yaml --executor slurm --partition gpu --time 240
    python scripts/sweep.py status scripts/sweeps/base2new.yaml                # finished / running / failed / pending
    python scripts/sweep.py scripts/sweeps/base2new.yaml --executor slurm --retry-failed

Local executor (default): one worker per listed GPU (``CUDA_VISIBLE_DEVICES=<id>``, ``--device cuda``) or
``--workers N`` CPU workers (``--device cpu``). A worker runs one chain at a time (a training job, then the
evaluations of its model); chains that share a training directory are merged so it is trained once. Failed
jobs do not stop the sweep; the summary lists them with the last lines of their output. Each job's console
output is appended to ``OUTPUT_DIR/stdout.txt``. Finished jobs (``result.json``) are skipped, jobs whose folder
lock is held are reported as running elsewhere, unfinished ones resume: re-running a sweep continues it.
SIGINT / SIGTERM stop the running jobs (their process groups) and start no new one.
Before the first job the runner checks, once, that the jobs' packages import and that their
datasets are under ``$DATA`` (``scripts.preflight``).
Exit status: 0 all done, 1 some job failed, 2 bad input, 3 some job runs elsewhere, 128+N stopped by signal N.

SLURM executor (``--executor slurm``, ``scripts/slurm.py``): one array task per chain, submitted through
submitit; a preempted or timed-out task is requeued and resumes. ``status`` reads the output tree and squeue.

Sweep file::

    output: output                 # root of the output tree (relative paths: to the repository root)
    opts: []                       # KEY VALUE pairs added to every train.py call (they win over run opts)
    slurm: {partition: gpu, time_min: 240}   # optional: SLURM resources (scripts/slurm.py: SlurmOptions)
    experiments:
      - protocol: base2new         # base2new | open_world | cross_dataset | domain_generalization | few_shot
        datasets: [caltech101, dtd]
        seeds: [1, 2, 3]
        runs:                      # trainer + config; optional per-run seeds, opts, dataset_opts, name
          - {trainer: CoOp, cfg: vit_b16_ep50}
          - {trainer: ZeroshotCLIP, cfg: vit_b16, seeds: [1]}
          - {trainer: BMIP, cfg: BMIP_ctx2_dp9_lr2,
             dataset_opts: {imagenet: [TEST.FINAL_MODEL, last_step, TRAIN.EARLY_STOPPING, "False"]}}
          - {trainer: CoOp, cfg: vit_b16_ep50, opts: [MODEL.INIT_SEED, 7], name: vit_b16_ep50_init7}
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

from scripts import layout, protocols, sweep_status  # noqa: E402
from scripts.cli import add_common_options, context_from_args, split_opts  # noqa: E402
from scripts.jobs import REPO_ROOT, SetupError, check_config_files, exit_status, run_chain, summary_lines  # noqa: E402
from scripts.preflight import check_before_jobs  # noqa: E402
from scripts.processes import CHILDREN, stop_on_signals  # noqa: E402

EXPERIMENT_KEYS = {
    "base2new": {"datasets", "seeds", "runs", "shots"},
    "open_world": {"datasets", "seeds", "runs", "shots", "ratios"},
    "cross_dataset": {"seeds", "runs", "source", "targets", "shots"},
    "domain_generalization": {"seeds", "runs", "source", "targets", "shots"},
    "few_shot": {"datasets", "seeds", "runs", "shots"},
}
RUN_KEYS = {"trainer", "cfg", "seeds", "opts", "dataset_opts", "name"}
DEFAULT_TARGETS = {"cross_dataset": layout.CROSS_DATASET_TARGETS, "domain_generalization": layout.DG_TARGETS}
# Keys the protocols set themselves (they decide the output tree): sweep opts may not change them.
PROTOCOL_KEYS = {"DATASET.NUM_SHOTS", "DATASET.SUBSAMPLE_CLASSES", "DATASET.USE_RATIO", "DATASET.SUBSAMPLE_RATIO",
                 "TEST.EVALUATOR"}
SLURM_FLAGS = ("partition", "gpus_per_job", "cpus_per_job", "mem_gb", "time_min", "account", "qos", "constraint",
               "array_parallelism", "max_timeouts", "folder")


def _check_opts(opts, where):
    """``opts`` as a tuple of strings; ``SetupError`` unless KEY VALUE pairs that leave protocol keys alone."""
    if not isinstance(opts, list) or len(opts) % 2:
        raise SetupError(f"{where}: opts must be a list of KEY VALUE pairs, got {opts!r}")
    owned = sorted(set(map(str, opts[::2])) & PROTOCOL_KEYS)
    if owned:
        raise SetupError(f"{where}: opts may not set {owned}: the protocol sets them (use the experiment's "
                         f"shots / ratios)")
    return tuple(str(v) for v in opts)


def _check_run(run, where):
    if not isinstance(run, dict) or not {"trainer", "cfg"} <= set(run) or set(run) - RUN_KEYS:
        raise SetupError(f"{where}: run {run!r} must be {{trainer: X, cfg: Y[, seeds: [...], opts: [K, V, ...], "
                         f"dataset_opts: {{dataset: [K, V, ...]}}, name: folder name]}}")
    _check_opts(run.get("opts", []), f"{where} ({run['trainer']}/{run['cfg']})")
    name = run.get("name", run["cfg"])
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise SetupError(f"{where}: run name {name!r} must be a folder name (no '/', not hidden)")
    dataset_opts = run.get("dataset_opts", {})
    if not isinstance(dataset_opts, dict):
        raise SetupError(f"{where}: dataset_opts must map dataset names to KEY VALUE lists")
    for dataset, opts in dataset_opts.items():
        _check_opts(opts, f"{where} ({run['trainer']}/{run['cfg']}, dataset_opts.{dataset})")


def load_sweep(path):
    """Read and validate a sweep file; raises ``SetupError`` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise SetupError(f"sweep file {path} does not exist")
    sweep = yaml.safe_load(path.read_text()) or {}
    unknown = set(sweep) - {"output", "opts", "slurm", "experiments"}
    if unknown or not sweep.get("experiments"):
        raise SetupError(f"{path}: a sweep file has the keys output, opts, slurm and a non-empty experiments list "
                         f"(unknown keys: {sorted(unknown)})")
    _check_opts(sweep.get("opts") or [], f"{path}")
    if not isinstance(sweep.get("slurm") or {}, dict):
        raise SetupError(f"{path}: slurm must be a mapping of SLURM options (see scripts/slurm.py)")
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
            _check_run(run, f"{path}: experiment {i}")
    return sweep


def _with_run_opts(chain, run):
    """The jobs of ``chain`` with the run's opts, then its opts for each job's dataset, after the protocol's."""
    opts = tuple(map(str, run.get("opts", [])))
    per_dataset = {d: tuple(map(str, o)) for d, o in run.get("dataset_opts", {}).items()}
    return [replace(job, opts=job.opts + opts + per_dataset.get(job.dataset, ())) for job in chain]


def experiment_chains(experiment, root):
    """All job chains of one experiment of a sweep file."""
    protocol = experiment["protocol"]
    chains = []
    for run in experiment["runs"]:
        for seed in run.get("seeds", experiment["seeds"]):
            head = (root, run["trainer"], run["cfg"])
            named = {"name": run.get("name")}
            if protocol in DEFAULT_TARGETS:
                built = [protocols.cross_dataset(
                    *head, seed, experiment.get("targets", DEFAULT_TARGETS[protocol]),
                    source=experiment.get("source", layout.DEFAULT_SOURCE),
                    shots=experiment.get("shots", layout.BASE2NEW_SHOTS), **named)]
            else:
                built = []
                for dataset in experiment["datasets"]:
                    if protocol == "base2new":
                        built.append(protocols.base2new(*head, dataset, seed,
                                                        shots=experiment.get("shots", layout.BASE2NEW_SHOTS),
                                                        **named))
                    elif protocol == "open_world":
                        built.append(protocols.open_world(
                            *head, dataset, seed, experiment.get("ratios", layout.OPEN_WORLD_RATIOS),
                            shots=experiment.get("shots", layout.BASE2NEW_SHOTS), **named))
                    else:
                        built.extend(protocols.few_shot(*head, dataset, seed,
                                                        experiment.get("shots", layout.FEW_SHOT_SHOTS), **named))
            chains += [_with_run_opts(chain, run) for chain in built]
    return chains


def merge_chains(chains):
    """Merge chains that start with the same training job and drop duplicate jobs (same output dir).

    Chains without a training job are split into one chain per evaluation (they are independent). Two
    different jobs writing to one directory (e.g. two runs of a config that differ only in opts) are an error.
    """
    merged, seen = {}, {}
    for chain in chains:
        if chain[0].training:
            key = chain[0].output_dir
            if key in seen and seen[key] != chain[0]:
                raise _collision(seen[key], chain[0])
            seen[key] = chain[0]
            target = merged.setdefault(key, [chain[0]])
            rest = chain[1:]
        else:
            rest = chain
            target = None
        for job in rest:
            if job.output_dir in seen:
                if seen[job.output_dir] != job:
                    raise _collision(seen[job.output_dir], job)
                continue
            seen[job.output_dir] = job
            if target is None:
                merged[job.output_dir] = [job]
            else:
                target.append(job)
    return list(merged.values())


def _collision(first, second):
    return SetupError(f"two different jobs write to {first.output_dir} (opts {list(first.opts)} vs "
                      f"{list(second.opts)}): give one of the runs its own `name:` (its folder name)")


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


def build_parser():
    """Argument parser of the sweep runner (``status`` takes the same arguments)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep YAML files (scripts/sweeps/*.yaml)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="local: worker threads on this machine (default); slurm: job arrays via submitit")
    parallel = parser.add_mutually_exclusive_group()
    parallel.add_argument("--gpus", type=int, nargs="+", help="local: GPU ids, one worker each")
    parallel.add_argument("--workers", type=int, help="local: number of CPU workers")
    parser.add_argument("--output", type=Path, default=None, help="override the sweep files' output root")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run / submit only the chains with a failed job (see `sweep.py status`)")
    slurm = parser.add_argument_group("SLURM (--executor slurm; override the sweep file's slurm: section)")
    slurm.add_argument("--partition")
    slurm.add_argument("--gpus-per-job", dest="gpus_per_job", type=int, help="GPUs per task (default 1; 0: CPU)")
    slurm.add_argument("--cpus-per-job", dest="cpus_per_job", type=int, help="CPUs per task (default 8)")
    slurm.add_argument("--mem", dest="mem_gb", type=float, help="memory per task in GB")
    slurm.add_argument("--time", dest="time_min", type=int, help="time limit per task in minutes (default 240)")
    slurm.add_argument("--account")
    slurm.add_argument("--qos")
    slurm.add_argument("--constraint", help="node features, e.g. a GPU type")
    slurm.add_argument("--array-parallelism", dest="array_parallelism", type=int,
                       help="tasks of the array running at once (default 64)")
    slurm.add_argument("--max-timeouts", dest="max_timeouts", type=int,
                       help="requeues after hitting the time limit (default 3)")
    slurm.add_argument("--slurm-folder", dest="folder", help="submitit's folder (default: <output>/slurm)")
    add_common_options(parser)
    return parser


def load_chains(args):
    """(merged chains, sweep-wide opts, slurm section, output roots) of the sweep files; ``SetupError`` if bad."""
    chains, file_opts, slurm_sections, roots = [], {}, {}, []
    for path in args.sweeps:
        sweep = load_sweep(path)
        root = (args.output or (REPO_ROOT / sweep.get("output", "output"))).absolute()
        roots.append(root)
        file_opts[path] = [str(v) for v in sweep.get("opts") or []]
        slurm_sections[path] = sweep.get("slurm") or {}
        for experiment in sweep["experiments"]:
            chains += experiment_chains(experiment, root)
    for name, values in (("opts", file_opts), ("slurm sections", slurm_sections)):
        if len({repr(v) for v in values.values()}) > 1:
            raise SetupError(f"the sweep files set different {name} ({values}); run them separately")
    return merge_chains(chains), file_opts[args.sweeps[0]], slurm_sections[args.sweeps[0]], roots


def slurm_setup(args, section, roots):
    """(SLURM options: the sweep file's ``slurm:`` section overridden by the flags given; submitit's folder)."""
    from scripts import slurm  # submitit: imported only for the SLURM executor and status

    options = slurm.SlurmOptions.from_mapping(section, "slurm section of the sweep file")
    options = options.updated(**{key: getattr(args, key) for key in SLURM_FLAGS})
    return options, Path(options.folder or roots[0] / "slurm").absolute()


def main_status(argv):
    """``sweep.py status SWEEP...``: one line per job; exit 0 all finished, 1 some failed, 3 otherwise."""
    from scripts import slurm
    args = build_parser().parse_args(argv)
    try:
        chains, _, section, roots = load_chains(args)
        _, folder = slurm_setup(args, section, roots)
        tasks = slurm.chain_tasks(folder)
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    statuses = [status for chain in chains
                for status in sweep_status.chain_status(chain, tasks.get(sweep_status.chain_key(chain)))]
    for line in sweep_status.status_lines(statuses):
        print(line)
    return sweep_status.exit_status(statuses)


def runner_args_for_status(args):
    """The arguments that make ``status`` read the same sweep: sweep files, --output, --slurm-folder."""
    shown = [str(path) for path in args.sweeps]
    if args.output:
        shown += ["--output", str(args.output)]
    if args.folder:
        shown += ["--slurm-folder", str(args.folder)]
    return shown


def main_slurm(args, chains, ctx, section, roots):
    """Submit the chains that need it as a SLURM job array; print what was submitted and what was not."""
    from scripts import slurm
    options, folder = slurm_setup(args, section, roots)
    tasks = slurm.chain_tasks(folder)
    selected, held = slurm.plan(chains, tasks, args.retry_failed)
    for reason, count in sorted(held.items()):
        print(f"# not submitted: {count} chains {reason}")
    if not selected:
        print("# nothing to submit")
        return 0
    name = f"sweep_{args.sweeps[0].stem}"
    if args.dry_run:
        print(f"# would submit {len(selected)} chains ({sum(len(c) for c in selected)} jobs) as a SLURM array with "
              f"{options.executor_parameters(name)}; submitit folder {folder}")
        for chain in selected:
            print(f"#   {chain[0].output_dir} (+{len(chain) - 1} evaluations)")
        return 0
    executor = slurm.make_executor(options, folder, name)
    jobs = slurm.submit(executor, selected, slurm.task_context(ctx, options), folder)
    arrays = sorted({job.job_id.split("_")[0] for job in jobs}, key=int)
    print(f"# submitted {len(jobs)} chains ({sum(len(c) for c in selected)} jobs) as SLURM job "
          f"{', '.join(arrays)}; task logs in {folder}")
    print(f"# follow: python scripts/sweep.py status {' '.join(runner_args_for_status(args))}")
    return 0


def main(argv=None):
    """Expand the sweep files, check configs, run or submit; print the summary; return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["status"]:
        return main_status(argv[1:])
    runner_args, opts = split_opts(argv)
    args = build_parser().parse_args(runner_args)
    try:
        if args.workers is not None and args.workers < 1:
            raise SetupError("--workers must be at least 1")
        if args.executor == "slurm" and (args.gpus or args.workers):
            raise SetupError("--gpus / --workers belong to the local executor; on SLURM use --gpus-per-job")
        chains, file_opts, section, roots = load_chains(args)
        ctx = context_from_args(args, file_opts + opts)
        jobs = [job for chain in chains for job in chain]
        check_config_files(jobs, ctx)
        if not args.dry_run:
            check_before_jobs(jobs, ctx)
        if args.executor == "slurm":
            return main_slurm(args, chains, ctx, section, roots)
    except (SetupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.retry_failed:
        chains = [c for c in chains if sweep_status.has_failed(sweep_status.chain_status(c))]
    print(f"# {sum(len(c) for c in chains)} jobs in {len(chains)} chains")
    with stop_on_signals() as received:
        outcomes = run_sweep(chains, ctx, worker_slots(args.gpus, args.workers), dry_run=args.dry_run)
    for line in summary_lines(outcomes):
        print(line)
    if received["signal"]:
        print(f"# stopped ({CHILDREN.stop_reason}): re-run the same command to continue")
        return 128 + received["signal"]
    return exit_status(outcomes)


if __name__ == "__main__":
    sys.exit(main())
