"""Walk an output tree (see ``results.layout``) and read the final result of every run directory."""
import os
from dataclasses import dataclass, field
from pathlib import Path

from dassl.engine.run_dir import RESULT_FILE
from results import logparse
from results.layout import (CFG_SHOTS_DIR, DEFAULT_SOURCE, PROTOCOL_FOLDERS, SEED_DIR, SEED_PARENTS, SHOTS_DIR,
                            source_runs_dir, trains)


@dataclass(frozen=True)
class RunResult:
    """The final metrics of one run directory (one seed).

    ``protocol`` is ``base2new`` (``split`` = train_base | test_base | test_new | test_all | test_ratio_<r>),
    ``transfer`` (cross-dataset and DG: ``split`` = source | target) or ``few_shot`` (``split`` = train).
    """

    protocol: str
    split: str
    dataset: str
    trainer: str
    cfg: str
    shots: int
    seed: int
    metrics: dict
    log: Path
    source: str = None


@dataclass
class Collection:
    """Every run with a result, and the run directories that hold none (unfinished or failed)."""

    results: list = field(default_factory=list)
    incomplete: list = field(default_factory=list)


def _seed_dirs(parent):
    """(seed, directory) for every ``seed<S>`` directory under ``parent``, sorted by seed."""
    found = [(int(m.group("seed")), p) for p in Path(parent).glob("seed*")
             if p.is_dir() and (m := SEED_DIR.match(p.name))]
    return sorted(found)


def _read(collection, directory, training, **fields):
    """Add the run in ``directory`` to ``collection``: its result, or the directory as incomplete."""
    metrics, log = logparse.final_metrics(directory, training=training)
    if metrics:
        collection.results.append(RunResult(metrics=metrics, log=log, **fields))
    else:
        collection.incomplete.append(directory)


def _collect_base2new(root, collection):
    """``base2new/<split>/<dataset>/shots_<K>/<trainer>/<cfg>/seed<S>``."""
    for seed_parent in sorted(Path(root, "base2new").glob(SEED_PARENTS["base2new"])):
        split, dataset, shots_name, trainer, cfg = seed_parent.relative_to(Path(root, "base2new")).parts
        shots = SHOTS_DIR.match(shots_name)
        if shots is None:
            continue
        training = split == "train_base" and trains(trainer)
        for seed, directory in _seed_dirs(seed_parent):
            _read(collection, directory, training, protocol="base2new", split=split, dataset=dataset,
                  trainer=trainer, cfg=cfg, shots=int(shots.group("shots")), seed=seed)


def _collect_transfer(root, collection):
    """``evaluation/<trainer>/<cfg>_<K>shots[_from_<source>]/<target>/seed<S>`` and their source runs."""
    sources = set()
    for seed_parent in sorted(Path(root, "evaluation").glob(SEED_PARENTS["evaluation"])):
        trainer, cfg_shots, target = seed_parent.relative_to(Path(root, "evaluation")).parts
        match = CFG_SHOTS_DIR.match(cfg_shots)
        if match is None:
            continue
        cfg, shots, source = match.group("cfg"), int(match.group("shots")), match.group("source") or DEFAULT_SOURCE
        sources.add((source, trainer, cfg, shots))
        for seed, directory in _seed_dirs(seed_parent):
            _read(collection, directory, False, protocol="transfer", split="target", dataset=target,
                  trainer=trainer, cfg=cfg, shots=shots, seed=seed, source=source)
    for source, trainer, cfg, shots in sorted(sources):
        for seed, directory in _seed_dirs(source_runs_dir(root, source, trainer, cfg, shots)):
            _read(collection, directory, trains(trainer), protocol="transfer", split="source",
                  dataset=source, trainer=trainer, cfg=cfg, shots=shots, seed=seed, source=source)


def _collect_few_shot(root, collection):
    """``few_shot/<dataset>/<trainer>/<cfg>_<K>shots/seed<S>``."""
    for seed_parent in sorted(Path(root, "few_shot").glob(SEED_PARENTS["few_shot"])):
        dataset, trainer, cfg_shots = seed_parent.relative_to(Path(root, "few_shot")).parts
        match = CFG_SHOTS_DIR.match(cfg_shots)
        if match is None or match.group("source"):
            continue
        for seed, directory in _seed_dirs(seed_parent):
            _read(collection, directory, trains(trainer), protocol="few_shot", split="train",
                  dataset=dataset, trainer=trainer, cfg=match.group("cfg"), shots=int(match.group("shots")),
                  seed=seed)


TREE_SEARCH_DEPTH = 3  # how deep below a folder output_trees looks (output/<experiment>/<variant>/...)


def run_dirs(tree, protocol):
    """The ``seed<S>`` run directories of ``<tree>/<protocol>`` where the layout puts them (lazily, in glob order)."""
    return (path for path in Path(tree, protocol).glob(f"{SEED_PARENTS[protocol]}/seed*")
            if SEED_DIR.match(path.name) and path.is_dir())


def is_output_tree(folder):
    """Whether ``folder`` is the root of an output tree: one of its protocol folders (base2new/, evaluation/,
    few_shot/) holds a run directory where the layout puts it; a source package's ``evaluation/`` module is none."""
    return any(next(run_dirs(folder, protocol), None) is not None for protocol in PROTOCOL_FOLDERS)


def _is_folder(entry):
    """Whether the ``os.DirEntry`` is a folder (links followed); False when that cannot be told (a looping link)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def subfolders(folder):
    """The folders in ``folder`` sorted by name, links followed; none when ``folder`` cannot be read, and an entry
    that cannot be checked (a broken or looping link, no permission) is skipped."""
    try:
        with os.scandir(folder) as entries:
            return sorted((Path(e.path) for e in entries if _is_folder(e)), key=lambda path: path.name)
    except OSError:
        return []


def output_trees(folder, depth=TREE_SEARCH_DEPTH):
    """The output trees strictly below ``folder`` (at most ``depth`` levels down), sorted; a tree is not searched
    further (its runs are its own)."""
    trees = []
    for sub in subfolders(folder):
        if sub.name.startswith(".") or sub.name in PROTOCOL_FOLDERS:
            continue
        if is_output_tree(sub):
            trees.append(sub)
        elif depth > 1:
            trees += output_trees(sub, depth - 1)
    return trees


def enclosing_tree(folder):
    """The output tree ``folder`` lies inside (its nearest ancestor that is a tree, as an absolute path), or None."""
    return next((parent for parent in Path(os.path.abspath(folder)).parents if is_output_tree(parent)), None)


def a_finished_run(folder):
    """A run folder below ``folder`` holding ``result.json`` (a finished run, in any layout), or None."""
    return next((path.parent for path in Path(folder).rglob(RESULT_FILE)), None)


def collect(root):
    """All results under the output tree ``root``; raises ``FileNotFoundError`` if ``root`` is missing."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"output tree {root} does not exist: pass the --output of your runs "
                                f"(default: output)")
    collection = Collection()
    _collect_base2new(root, collection)
    _collect_transfer(root, collection)
    _collect_few_shot(root, collection)
    return collection
