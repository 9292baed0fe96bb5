"""Aggregate per-seed ``RunResult``s into per-dataset summaries and averages over datasets.

Conventions (stated in every table): mean ± *population* std over seeds (``results.stats``); the HM of a
dataset is the harmonic mean of its mean Base and mean Novel accuracy; an average over datasets is the plain
mean of the per-dataset means over the datasets that have a value, and the average HM is the HM of the
average Base and average Novel (as the papers report it). Missing runs stay ``None`` (a gap), never zero.
"""
from dataclasses import dataclass

from dassl.metrics import harmonic_mean
from results.layout import BASE2NEW_SHOTS, DG_TARGETS, RATIO_SPLIT, dataset_order
from results.stats import mean_or_none, summarize


def method_order(keys):
    """Sort (trainer, cfg) keys: trainers in the registry's display order (``trainers.display``), then configs by
    name."""
    from trainers.display import display_rank  # imports the trainers (and torch): only once a table is made

    return sorted(set(keys), key=lambda key: (display_rank(key[0]), key[1]))


def method_labels(keys):
    """Display name per (trainer, cfg): the trainer alone when it has one config, else ``trainer/cfg``."""
    keys = set(keys)
    return {(t, c): t if sum(1 for k in keys if k[0] == t) == 1 else f"{t}/{c}" for t, c in keys}


def method_key(result):
    """The (trainer, cfg) key a run belongs to; a non-default number of training shots (base-to-novel,
    transfer) is part of the config name so such runs are never pooled with 16-shot runs."""
    if result.protocol == "few_shot" or result.shots == BASE2NEW_SHOTS:
        return result.trainer, result.cfg
    return result.trainer, f"{result.cfg} ({result.shots} shots)"


def _values(results, metric):
    """{seed: value} of ``metric`` over ``results``."""
    return {r.seed: r.metrics[metric] for r in results if metric in r.metrics}


def group_by(results, key):
    """{key(r): [runs with that key]} in first-seen order."""
    groups = {}
    for r in results:
        groups.setdefault(key(r), []).append(r)
    return groups


def _average(summaries):
    """(mean of the present per-dataset means, how many datasets had one)."""
    means = [s.mean for s in summaries if s is not None]
    return mean_or_none(means), len(means)


@dataclass
class Base2New:
    """Base-to-novel: per (method, dataset) the Base / Novel summaries and HM; per method the average."""

    methods: list
    datasets: list
    cells: dict      # (method, dataset) -> (base Summary | None, novel Summary | None, hm | None)
    average: dict    # method -> (base | None, novel | None, hm | None, number of datasets)


def base2new(results):
    """Base accuracy from ``test_base`` (per seed, falling back to the ``train_base`` final test);
    Novel accuracy from ``test_new``. The average uses the datasets having both Base and Novel."""
    runs = [r for r in results if r.protocol == "base2new"]
    if not any(r.split in ("test_base", "test_new") for r in runs):
        return None
    groups = group_by(runs, lambda r: (method_key(r), r.dataset, r.split))
    methods = method_order(m for m, _, s in groups if s in ("train_base", "test_base", "test_new"))
    datasets = dataset_order(d for _, d, s in groups if s in ("train_base", "test_base", "test_new"))
    cells, average = {}, {}
    for method in methods:
        complete = []
        for dataset in datasets:
            base = _values(groups.get((method, dataset, "train_base"), []), "accuracy")
            base.update(_values(groups.get((method, dataset, "test_base"), []), "accuracy"))
            novel = _values(groups.get((method, dataset, "test_new"), []), "accuracy")
            b, n = summarize(base.values()), summarize(novel.values())
            cells[method, dataset] = (b, n, harmonic_mean(b.mean if b else None, n.mean if n else None))
            if b is not None and n is not None:
                complete.append((b, n))
        avg_base, count = _average([b for b, _ in complete])
        avg_novel, _ = _average([n for _, n in complete])
        average[method] = (avg_base, avg_novel, harmonic_mean(avg_base, avg_novel), count)
    return Base2New(methods, datasets, cells, average)


@dataclass
class Transfer:
    """Cross-dataset or domain-generalization results of models trained on one source dataset."""

    kind: str        # "cross_dataset" | "domain_generalization"
    source: str
    methods: list
    targets: list
    source_cells: dict   # method -> Summary | None (the source test set)
    cells: dict          # (method, target) -> Summary | None
    average: dict        # method -> (mean over targets | None, number of targets)


def transfer(results):
    """One ``Transfer`` per (source, kind), kind decided by whether a target is an ImageNet variant."""
    runs = [r for r in results if r.protocol == "transfer"]
    tables = []
    for source in sorted({r.source for r in runs}):
        from_source = [r for r in runs if r.source == source]
        groups = group_by(from_source, lambda r: (method_key(r), r.split, r.dataset))
        for kind in ("cross_dataset", "domain_generalization"):
            targets = dataset_order(r.dataset for r in from_source if r.split == "target"
                                    and (r.dataset in DG_TARGETS) == (kind == "domain_generalization"))
            if not targets:
                continue
            methods = method_order(m for m, split, d in groups if split == "target" and d in targets)
            source_cells = {m: summarize(_values(groups.get((m, "source", source), []), "accuracy").values())
                            for m in methods}
            cells = {(m, t): summarize(_values(groups.get((m, "target", t), []), "accuracy").values())
                     for m in methods for t in targets}
            average = {m: _average([cells[m, t] for t in targets]) for m in methods}
            tables.append(Transfer(kind, source, methods, targets, source_cells, cells, average))
    return tables


@dataclass
class Curves:
    """Accuracy as a function of x (shots, or open-world ratio r) per method and dataset."""

    methods: list
    datasets: list
    xs: list
    cells: dict      # (method, dataset, x) -> Summary | None
    average: dict    # (method, x) -> (mean over datasets | None, number of datasets)


def _curves(runs, x_of, descending=False):
    groups = group_by(runs, lambda r: (method_key(r), r.dataset, x_of(r)))
    methods = method_order(m for m, _, _ in groups)
    datasets = dataset_order(d for _, d, _ in groups)
    xs = sorted({x for _, _, x in groups}, reverse=descending)
    cells = {(m, d, x): summarize(_values(groups.get((m, d, x), []), "accuracy").values())
             for m in methods for d in datasets for x in xs}
    average = {(m, x): _average([cells[m, d, x] for d in datasets]) for m in methods for x in xs}
    return Curves(methods, datasets, xs, cells, average)


def few_shot(results):
    """Accuracy vs number of shots (all classes), or ``None`` without few-shot runs."""
    runs = [r for r in results if r.protocol == "few_shot"]
    return _curves(runs, lambda r: r.shots) if runs else None


def open_world(results):
    """Accuracy vs ratio r (percent of base classes, 100 first), or ``None`` without such runs."""
    runs = [r for r in results if r.protocol == "base2new" and RATIO_SPLIT.match(r.split)]
    return _curves(runs, lambda r: int(RATIO_SPLIT.match(r.split).group("ratio")), descending=True) if runs else None


ALL_SPACE_METRICS = ("base_accuracy", "novel_accuracy", "harmonic_mean", "accuracy")


def open_world_all(results):
    """The ``all`` evaluation: {(method, dataset): {metric: Summary | None}}, or ``None`` without runs."""
    runs = [r for r in results if r.protocol == "base2new" and r.split == "test_all"]
    if not runs:
        return None
    groups = group_by(runs, lambda r: (method_key(r), r.dataset))
    return {key: {metric: summarize(_values(group, metric).values()) for metric in ALL_SPACE_METRICS}
            for key, group in groups.items()}
