"""Per-epoch training curves: ``OUTPUT_DIR/curves.csv``, written by the engine after every epoch.

Format: a header row, then one row per epoch: ``epoch`` (1-based), ``lr``, ``train_<name>`` for every entry of the
trainer's loss summary (``train_loss``, ``train_acc``, ...), ``val_accuracy`` (empty when the epoch was not
validated). The reader tolerates empty or non-numeric cells (read as missing), extra columns and a missing
``val_accuracy`` column; if an epoch appears twice the last row wins.
"""
import csv
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

CURVES_FILE = "curves.csv"  # dassl/utils/curves.py writes it (named there too: result readers import no torch)


@dataclass
class Curves:
    """One run's curves: epochs and, per column, one value (or None) per epoch."""

    path: Path
    epochs: list = field(default_factory=list)
    columns: dict = field(default_factory=dict)  # name -> [float | None], aligned with epochs


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_curves(path):
    """Read a ``curves.csv``; rows without a numeric epoch are skipped."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        names = [n for n in (reader.fieldnames or []) if n and n != "epoch"]
        by_epoch = {}
        for row in reader:
            epoch = _number(row.get("epoch"))
            if epoch is not None:
                by_epoch[int(epoch)] = {n: _number(row.get(n)) for n in names}
    epochs = sorted(by_epoch)
    return Curves(path, epochs, {n: [by_epoch[e][n] for e in epochs] for n in names})


def find_curve_files(patterns):
    """``curves.csv`` files named by ``patterns``: a CSV file, a directory (searched recursively) or a glob of either.

    Returns sorted unique paths; raises FileNotFoundError naming the patterns when there is none.
    """
    found = set()
    for pattern in patterns:
        for match in sorted(glob.glob(str(pattern), recursive=True)) or [pattern]:
            match = Path(match)
            if match.is_file() and match.suffix == ".csv":
                found.add(match)
            elif match.is_dir():
                found.update(match.rglob(CURVES_FILE))
    if not found:
        raise FileNotFoundError(f"no {CURVES_FILE} under {' '.join(map(str, patterns))}: give run directories (or a "
                                f"tree, or a glob) of runs trained with this engine")
    return sorted(found)


def run_labels(paths):
    """A short label per curves file: its run directory relative to the runs' common parent."""
    run_dirs = [Path(p).resolve().parent for p in paths]
    if len(run_dirs) == 1:
        return [run_dirs[0].name]
    common = Path(os.path.commonpath(run_dirs))
    return [str(d.relative_to(common)) for d in run_dirs]


def panel_order(names):
    """Columns in panel order: train_loss, train_acc, other train_* columns, lr, val_accuracy, anything else."""
    first = ["train_loss", "train_acc"]
    train = [n for n in names if n.startswith("train_") and n not in first]
    rest = [n for n in names if not n.startswith("train_") and n not in ("lr", "val_accuracy")]
    return [n for n in first if n in names] + sorted(train) + [n for n in ("lr", "val_accuracy") if n in names] + rest
