"""Render the aggregates of ``results.aggregate`` as markdown and CSV (long format, one row per cell).

Gaps (missing runs) are ``–`` in markdown and empty fields in CSV, never zeros.
"""
import csv
from dataclasses import dataclass, field

from results.aggregate import ALL_SPACE_METRICS, method_labels, method_order
from results.layout import dataset_order

GAP = "–"
CONVENTIONS = ("Mean ± population std (numpy.std, ddof=0) over seeds; n = number of seeds. "
               "HM = harmonic mean of the mean Base and the mean Novel accuracy. Averages are plain means "
               "of the per-dataset means over the datasets that have a value; the average HM is the HM "
               "of the average Base and average Novel, as the papers report it. – = no finished run.")


@dataclass
class Section:
    """One result table: markdown lines for the report and CSV rows for ``<name>.csv``."""

    name: str
    markdown: list
    header: list
    rows: list = field(default_factory=list)


def fmt(value):
    """``82.69 ± 0.31`` for a Summary, ``82.69`` for a number, ``–`` for a gap."""
    if value is None:
        return GAP
    if hasattr(value, "std"):
        return f"{value.mean:.2f} ± {value.std:.2f}"
    return f"{value:.2f}"


def csv_fields(summary):
    """mean, std, n of a Summary as CSV fields (empty strings for a gap)."""
    if summary is None:
        return ["", "", ""]
    return [f"{summary.mean:.4f}", f"{summary.std:.4f}", summary.n]


def _number(value):
    return "" if value is None else f"{value:.4f}"


def markdown_table(header, rows):
    """Lines of a GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _seed_range(*summaries):
    """Seed count of the cells of a row: ``3``, or ``1–3`` when the cells differ, ``0`` when all are gaps."""
    counts = [s.n for s in summaries if s is not None]
    if not counts:
        return "0"
    return str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def _base_novel_seeds(base, novel):
    """``3`` when Base and Novel have the same seed count, else ``<base>/<novel>`` (``–`` for a gap)."""
    counts = [s.n if s is not None else GAP for s in (base, novel)]
    return str(counts[0]) if counts[0] == counts[1] else f"{counts[0]}/{counts[1]}"


def base2new_section(table):
    """Per-dataset Base / Novel / HM per method, then the average over datasets."""
    labels = method_labels(table.methods)
    rows, csv_rows = [], []
    for dataset in table.datasets:
        for method in table.methods:
            base, novel, hm = table.cells[method, dataset]
            rows.append([dataset, labels[method], fmt(base), fmt(novel), fmt(hm), _base_novel_seeds(base, novel)])
            csv_rows.append([*method, dataset, *csv_fields(base), *csv_fields(novel), _number(hm)])
    avg_rows = []
    for method in table.methods:
        base, novel, hm, count = table.average[method]
        avg_rows.append([labels[method], fmt(base), fmt(novel), fmt(hm), count])
        csv_rows.append([*method, "Average", _number(base), "", count, _number(novel), "", count, _number(hm)])
    markdown = (["## Base-to-novel generalization", "", "Average over datasets:", ""]
                + markdown_table(["Method", "Base", "Novel", "HM", "Datasets"], avg_rows)
                + ["", "Per dataset:", ""]
                + markdown_table(["Dataset", "Method", "Base", "Novel", "HM", "n"], rows)
                + ["", CONVENTIONS + " n = seeds (Base/Novel when they differ)."])
    header = ["trainer", "cfg", "dataset", "base_mean", "base_std", "base_n",
              "novel_mean", "novel_std", "novel_n", "hm"]
    return Section("base2new", markdown, header, csv_rows)


def transfer_section(table):
    """Methods x (source, targets, average) for one source and kind."""
    labels = method_labels(table.methods)
    title = ("Cross-dataset transfer" if table.kind == "cross_dataset" else "Domain generalization")
    rows, csv_rows = [], []
    for method in table.methods:
        source = table.source_cells[method]
        mean, count = table.average[method]
        cells = [table.cells[method, t] for t in table.targets]
        rows.append([labels[method], fmt(source), *map(fmt, cells), fmt(mean), _seed_range(source, *cells)])
        csv_rows.append([*method, table.source, table.source, "source", *csv_fields(source)])
        csv_rows += [[*method, table.source, t, "target", *csv_fields(c)] for t, c in zip(table.targets, cells)]
        csv_rows.append([*method, table.source, "Average", "average", _number(mean), "", count])
    markdown = ([f"## {title} (source: {table.source})", ""]
                + markdown_table(["Method", f"{table.source} (source)", *table.targets, "Average", "n"], rows)
                + ["", "Mean ± population std over seeds (n); Average = mean over the targets of the "
                       "per-target means (source excluded). – = no finished run."])
    name = table.kind if table.source == "imagenet" else f"{table.kind}_from_{table.source}"
    return Section(name, markdown, ["trainer", "cfg", "source", "dataset", "role", "mean", "std", "n"], csv_rows)


def curve_section(curves, name, title, x_name, x_label):
    """Rows (dataset, method) x columns x, plus the average over datasets per method."""
    labels = method_labels(curves.methods)
    rows, csv_rows = [], []
    for dataset in curves.datasets:
        for method in curves.methods:
            cells = [curves.cells[method, dataset, x] for x in curves.xs]
            rows.append([dataset, labels[method], *map(fmt, cells)])
            csv_rows += [[*method, dataset, x, *csv_fields(c)] for x, c in zip(curves.xs, cells)]
    for method in curves.methods:
        averages = [curves.average[method, x] for x in curves.xs]
        rows.append(["Average", labels[method], *(fmt(mean) for mean, _ in averages)])
        csv_rows += [[*method, "Average", x, _number(mean), "", count] for x, (mean, count) in zip(curves.xs, averages)]
    markdown = ([f"## {title}", ""]
                + markdown_table(["Dataset", "Method", *(x_label(x) for x in curves.xs)], rows)
                + ["", "Mean ± population std over seeds; Average = mean over the datasets that have a value "
                       "(CSV column n: seeds, or datasets in Average rows). – = no finished run."])
    return Section(name, markdown, ["trainer", "cfg", "dataset", x_name, "mean", "std", "n"], csv_rows)


def open_world_all_section(cells):
    """The base ∪ novel evaluation of base-trained models: base, novel, HM and overall accuracy."""
    methods = method_order(m for m, _ in cells)
    keys = [(m, d) for d in dataset_order(d for _, d in cells) for m in methods if (m, d) in cells]
    labels = method_labels(methods)
    rows, csv_rows = [], []
    for method, dataset in keys:
        metrics = cells[method, dataset]
        rows.append([dataset, labels[method], *(fmt(metrics[m]) for m in ALL_SPACE_METRICS)])
        csv_rows += [[*method, dataset, m, *csv_fields(metrics[m])] for m in ALL_SPACE_METRICS]
    markdown = (["## Open-world: base ∪ novel label space", ""]
                + markdown_table(["Dataset", "Method", "Base", "Novel", "HM", "All images"], rows)
                + ["", "One run per seed over all classes; Base / Novel = accuracy on the images of base / "
                       "novel classes (predicting among all classes); mean ± population std over seeds."])
    return Section("open_world_all", markdown, ["trainer", "cfg", "dataset", "metric", "mean", "std", "n"], csv_rows)


def write_csv(section, path):
    """Write ``section`` as CSV to ``path``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(section.header)
        writer.writerows(section.rows)
