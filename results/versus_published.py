"""Our runs next to the published numbers (``results/published.yaml``; ``python scripts/results.py OUTPUT
--published``): per cell our mean over seeds, the published value, Δ = ours − published, and one flag, *outside*,
when the published value lies outside the spread of our seeds.

* Which runs: those of the (trainer, config) pairs the file's ``methods:`` maps to each published method; 16-shot
  runs for base-to-novel and transfer (cross-dataset and domain generalisation from ImageNet), every shot count
  for few-shot.
* Per-seed values: Base, Novel and accuracy as the runs report them; a seed's HM is the HM of its Base and Novel;
  a seed's average is the mean over the datasets the published average covers (all 11 for base-to-novel and
  few-shot, the 10 targets for cross-dataset, the 4 ImageNet variants for DG), so only seeds with every one of
  them have an average.
* Ours: the mean over seeds (an HM: the HM of our mean Base and mean Novel, as in the tables).
* Spread: [min, max] of the per-seed values, widened by half a unit of the printed rounding (0.005 for two
  decimals): a published value inside it is one a seed of ours reached to the printed digits. With one seed the
  spread is that seed's value, so every difference beyond the rounding is flagged.
"""
from dataclasses import dataclass

from dassl.metrics import harmonic_mean
from results.aggregate import method_labels
from results.layout import BASE2NEW_SHOTS, DEFAULT_SOURCE, DG_TARGETS
from results.published import AVERAGE, AVERAGED_DATASETS
from results.stats import mean_or_none
from results.tables import Section, markdown_table


def _add(values, key, metric, seed, value):
    values.setdefault(key, {}).setdefault(metric, {})[seed] = value


def seed_values(results):
    """``{(trainer, cfg, protocol, dataset, shots): {metric: {seed: value}}}`` of the runs the published tables
    are comparable with (module docstring); ``hm`` per seed where a seed has both Base and Novel."""
    values = {}
    ordered = sorted(results, key=lambda r: r.split != "train_base")  # test_base overrides the training log's
    for r in ordered:
        accuracy = r.metrics.get("accuracy")
        if accuracy is None:
            continue
        if r.protocol == "base2new" and r.shots == BASE2NEW_SHOTS and r.split in ("train_base", "test_base",
                                                                                 "test_new"):
            metric = "novel" if r.split == "test_new" else "base"
            _add(values, (r.trainer, r.cfg, "base2new", r.dataset, None), metric, r.seed, accuracy)
        elif r.protocol == "transfer" and r.shots == BASE2NEW_SHOTS and r.source == DEFAULT_SOURCE:
            kinds = (("cross_dataset", "domain_generalization") if r.split == "source" else
                     ("domain_generalization",) if r.dataset in DG_TARGETS else ("cross_dataset",))
            for kind in kinds:
                _add(values, (r.trainer, r.cfg, kind, r.dataset, None), "accuracy", r.seed, accuracy)
        elif r.protocol == "few_shot":
            _add(values, (r.trainer, r.cfg, "few_shot", r.dataset, r.shots), "accuracy", r.seed, accuracy)
    for metrics in values.values():
        if "base" in metrics and "novel" in metrics:
            metrics["hm"] = {s: harmonic_mean(b, metrics["novel"][s]) for s, b in metrics["base"].items()
                             if s in metrics["novel"]}
    return values


def average_values(values, trainer, cfg, protocol, shots):
    """Per-seed averages over the datasets of ``protocol``'s published average: ``{metric: {seed: value}}``."""
    cells = [values.get((trainer, cfg, protocol, d, shots), {}) for d in AVERAGED_DATASETS[protocol]]
    averages = {}
    for metric in ("base", "novel", "accuracy"):
        seeds = set.intersection(*(set(c.get(metric, {})) for c in cells))
        if seeds:
            averages[metric] = {s: mean_or_none([c[metric][s] for c in cells]) for s in seeds}
    if "base" in averages and "novel" in averages:
        averages["hm"] = {s: harmonic_mean(b, averages["novel"][s]) for s, b in averages["base"].items()
                          if s in averages["novel"]}
    return averages


@dataclass(frozen=True)
class Row:
    """One compared cell."""

    trainer: str
    cfg: str
    entry: object            # the published Entry
    metric: str
    ours: float
    seeds: int
    low: float               # min / max of our per-seed values
    high: float
    outside: bool

    @property
    def published(self):
        return self.entry.metrics[self.metric]

    @property
    def delta(self):
        return self.ours - self.published


def _ours(metric, cell):
    """Our value of ``metric`` from ``{metric: {seed: value}}``: the seed mean; an HM from the mean Base and
    Novel."""
    if metric == "hm":
        return harmonic_mean(mean_or_none(cell["base"].values()), mean_or_none(cell["novel"].values()))
    return mean_or_none(cell[metric].values())


def compare(results, published):
    """``(rows, ours without a published method)``: one Row per published value that our runs have."""
    values = seed_values(results)
    ours = sorted({key[:2] for key in values})
    rows = []
    for entry in published.entries:
        for trainer, cfg in published.methods[entry.method]["runs"]:
            if entry.dataset == AVERAGE:
                cell = average_values(values, trainer, cfg, entry.protocol, entry.shots)
            else:
                cell = values.get((trainer, cfg, entry.protocol, entry.dataset, entry.shots), {})
            for metric in entry.metrics:
                seeds = cell.get(metric)
                if not seeds:
                    continue
                low, high, u = min(seeds.values()), max(seeds.values()), published.half_unit
                value = entry.metrics[metric]
                rows.append(Row(trainer, cfg, entry, metric, _ours(metric, cell), len(seeds), low, high,
                                not low - u <= value <= high + u))
    unmapped = [key for key in ours if published.method_of(*key) is None]
    return rows, unmapped


PROTOCOL_ORDER = ("base2new", "cross_dataset", "domain_generalization", "few_shot")
METRIC_ORDER = ("base", "novel", "hm", "accuracy")


def versus_published_section(results, published):
    """The table of our values next to the published ones (module docstring), with its sources and notes."""
    rows, unmapped = compare(results, published)
    rows.sort(key=lambda r: (PROTOCOL_ORDER.index(r.entry.protocol), r.entry.shots or 0,
                             r.entry.dataset == AVERAGE, r.entry.dataset, r.trainer, r.cfg,
                             METRIC_ORDER.index(r.metric)))
    labels = method_labels({(r.trainer, r.cfg) for r in rows})
    table, csv_rows, notes, cited = [], [], [], []
    for r in rows:
        e = r.entry
        dataset = e.dataset if e.shots is None else f"{e.dataset} ({e.shots} shots)"
        mark = "†" if e.inconsistent else ""
        table.append([e.protocol, dataset, labels[r.trainer, r.cfg], e.method, r.metric, f"{r.ours:.2f}", r.seeds,
                      f"{r.low:.2f}–{r.high:.2f}", f"{r.published:.2f}{mark}", f"{r.delta:+.2f}",
                      "**outside**" if r.outside else "within"])
        csv_rows.append([r.trainer, r.cfg, e.method, e.protocol, e.dataset, e.shots or "", r.metric,
                         f"{r.ours:.4f}", r.seeds, f"{r.low:.4f}", f"{r.high:.4f}", r.published,
                         f"{r.delta:.4f}", int(r.outside), published.cite(e.source, e.line)])
        if e.inconsistent and f"† {e.method}: {e.inconsistent}" not in notes:
            notes.append(f"† {e.method}: {e.inconsistent}")
        citation = f"{e.method}: {published.cite(e.source, e.line)}"
        if citation not in cited:
            cited.append(citation)
    markdown = ["## Ours next to published", ""]
    if table:
        markdown += markdown_table(["Protocol", "Dataset", "Ours", "Published as", "Metric", "Ours (mean)", "Seeds",
                                    "Seed range", "Published", "Δ", "vs our seeds"], table)
    else:
        markdown.append(f"No run here corresponds to a published value of {published.path}: a run needs a (trainer, "
                        "config) pair that its `methods:` maps to a published method, and a protocol, dataset and "
                        "shot count with a published value.")
    markdown += ["", "Δ = ours − published. *outside*: the published value lies outside [min, max] of our per-seed "
                     f"values widened by the printed rounding (±{published.half_unit:g}); with one seed, any "
                     "difference beyond the rounding is outside. A seed's HM is the HM of its Base and Novel; a "
                     "seed's average covers every dataset of the published average (seeds missing one have none)."]
    markdown += [""] + [f"- {line}" for line in notes + cited]
    if unmapped:
        markdown += ["", "Not compared (no published method maps to them): "
                     + ", ".join(f"{t}/{c}" for t, c in unmapped) + "."]
    header = ["trainer", "cfg", "published_method", "protocol", "dataset", "shots", "metric", "ours", "seeds",
              "seed_min", "seed_max", "published", "delta", "outside", "source"]
    return Section("versus_published", markdown, header, csv_rows)
