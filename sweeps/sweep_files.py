"""Sweep files: datasets x seeds x trainers x protocols in YAML, expanded into the chains of jobs that run them.

Sweep file::

    output: output                 # root of the output tree (relative paths: to the repository root)
    opts: []                       # KEY VALUE pairs added to every train.py call (they win over run opts)
    slurm: {partition: gpu, time_min: 240}   # optional: an executor's options (sweeps/executors/slurm.py)
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

A section named after a registered executor (``slurm:``) holds that executor's options.
"""
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from results import layout
from sweeps import protocols
from sweeps.executors import EXECUTORS
from sweeps.jobs import REPO_ROOT, SetupError

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
    unknown = set(sweep) - {"output", "opts", "experiments"} - set(EXECUTORS)
    if unknown or not sweep.get("experiments"):
        raise SetupError(f"{path}: a sweep file has the keys output, opts, a non-empty experiments list and a section "
                         f"of options per executor ({', '.join(EXECUTORS)}) (unknown keys: {sorted(unknown)})")
    _check_opts(sweep.get("opts") or [], f"{path}")
    for name in set(sweep) & set(EXECUTORS):
        if not isinstance(sweep[name] or {}, dict):
            raise SetupError(f"{path}: {name} must be a mapping of the {name} executor's options "
                             f"(sweeps/executors/{name}.py)")
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


@dataclass(frozen=True)
class Sweep:
    """The sweep files of one command, expanded: merged chains, and what the files set for every job and executor."""

    files: tuple      # the sweep files, as given
    output: Path      # --output (None: each file's own output root)
    chains: list      # merged chains (see merge_chains)
    opts: tuple       # the files' opts (every file sets the same)
    sections: dict    # executor name -> its section of the files (every file sets the same)
    roots: tuple      # the output root of each file

    @property
    def name(self):
        """The sweep's name for schedulers: ``sweep_<stem of the first file>``."""
        return f"sweep_{Path(self.files[0]).stem}"

    def status_arguments(self):
        """The arguments that make ``sweep.py status`` read this sweep: its files and ``--output``."""
        return [str(path) for path in self.files] + (["--output", str(self.output)] if self.output else [])


def load_sweeps(files, output=None):
    """The :class:`Sweep` of ``files`` (``output`` overrides their output roots); ``SetupError`` if bad."""
    chains, file_opts, sections, roots = [], {}, {}, []
    for path in files:
        sweep = load_sweep(path)
        root = (output or (REPO_ROOT / sweep.get("output", "output"))).absolute()
        roots.append(root)
        file_opts[path] = [str(v) for v in sweep.get("opts") or []]
        sections[path] = {name: sweep[name] for name in EXECUTORS if sweep.get(name)}
        for experiment in sweep["experiments"]:
            chains += experiment_chains(experiment, root)
    for name, values in (("opts", file_opts), ("executor sections", sections)):
        if len({repr(v) for v in values.values()}) > 1:
            raise SetupError(f"the sweep files set different {name} ({values}); run them separately")
    return Sweep(tuple(files), output, merge_chains(chains), tuple(file_opts[files[0]]), sections[files[0]],
                 tuple(roots))
