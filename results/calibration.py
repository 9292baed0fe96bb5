"""The calibration and open-set table: ECE, NLL and open-set AUROC of every evaluation that recorded them.

Every evaluation prints ``* ece: X%`` and ``* nll: X nats``; the base ∪ novel evaluation (``test_all``) also prints
``* open_set_auroc: X%`` (definitions: ``dassl.evaluation.CalibrationBins``, ``datasets.evaluation``). Runs made
before these metrics existed lack them: their evaluations get no row, and the table is left out when no run of the
tree has any of them.
"""
from results.aggregate import group_by, method_key, method_labels, method_order
from results.layout import dataset_order
from results.stats import summarize
from results.tables import Section, csv_fields, fmt, markdown_table

CALIBRATION_METRICS = ("ece", "nll", "open_set_auroc")
PROTOCOL_ORDER = ("base2new", "transfer", "few_shot")


def evaluation_name(result):
    """Which evaluation a run is, in words: the base-to-novel split (``test_new``), ``source`` or ``target (from
    imagenet)`` for transfer, ``<K> shots`` for few-shot."""
    if result.protocol == "base2new":
        return result.split
    if result.protocol == "transfer":
        return "source" if result.split == "source" else f"target (from {result.source})"
    return f"{result.shots} shots"


def calibration(results):
    """{(protocol, evaluation, dataset, method): {metric: Summary | None}} over the runs that recorded any of
    ``CALIBRATION_METRICS``; ``None`` when no run did."""
    runs = [r for r in results if any(m in r.metrics for m in CALIBRATION_METRICS)]
    if not runs:
        return None
    groups = group_by(runs, lambda r: (r.protocol, evaluation_name(r), r.dataset, method_key(r)))
    return {key: {m: summarize(r.metrics[m] for r in group if m in r.metrics) for m in CALIBRATION_METRICS}
            for key, group in groups.items()}


def _row_order(cells):
    """Keys sorted by protocol, evaluation, dataset (the papers' order), method (the display order)."""
    datasets = dataset_order(d for _, _, d, _ in cells)
    methods = method_order(m for _, _, _, m in cells)
    return sorted(cells, key=lambda k: (PROTOCOL_ORDER.index(k[0]), k[1], datasets.index(k[2]), methods.index(k[3])))


def calibration_section(cells):
    """One row per evaluation, dataset and method: ECE (%), NLL (nats), open-set AUROC (%), seeds."""
    labels = method_labels(m for _, _, _, m in cells)
    rows, csv_rows = [], []
    for key in _row_order(cells):
        protocol, evaluation, dataset, method = key
        summaries = cells[key]
        seeds = max(s.n for s in summaries.values() if s is not None)
        rows.append([protocol, evaluation, dataset, labels[method], *(fmt(summaries[m]) for m in CALIBRATION_METRICS),
                     seeds])
        csv_rows += [[*method, protocol, evaluation, dataset, m, *csv_fields(summaries[m])]
                     for m in CALIBRATION_METRICS]
    markdown = (["## Calibration and open-set detection", ""]
                + markdown_table(["Protocol", "Evaluation", "Dataset", "Method", "ECE (%)", "NLL (nats)",
                                  "Open-set AUROC (%)", "n"], rows)
                + ["", "ECE: 15 equal-width bins of the maximum softmax probability, sum of |accuracy − confidence| "
                       "weighted by each bin's share of the images. NLL: mean −log softmax probability of the true "
                       "class over the evaluated label space. Open-set AUROC (base ∪ novel evaluation only): novel "
                       "vs base images scored by the maximum softmax probability over the base classes' logits, "
                       "ties counted ½; 50 = chance. Mean ± population std over seeds (n); – = not recorded."])
    header = ["trainer", "cfg", "protocol", "evaluation", "dataset", "metric", "mean", "std", "n"]
    return Section("calibration", markdown, header, csv_rows)
