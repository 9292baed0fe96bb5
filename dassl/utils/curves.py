"""Per-epoch training curves as a CSV in the output folder (readable without TensorBoard).

``OUTPUT_DIR/curves.csv``: a header row, then one row per finished epoch: ``epoch`` (1-based), ``lr`` (the learning
rate the epoch trained with), ``train_<name>`` for every entry of the trainer's loss summary (epoch means, e.g.
``train_loss``, ``train_acc``) and ``val_accuracy`` (empty when the epoch was not validated). A resumed run first
drops the rows of epochs it will train again, so each epoch appears once.
"""
import csv
import os.path as osp

from .tools import atomic_write

__all__ = ["CURVES_FILE", "append_curve_row", "truncate_curves"]

CURVES_FILE = "curves.csv"


def _read(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _rewrite(path, columns, rows):
    def write(tmp_path):
        with open(tmp_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def append_curve_row(path, row):
    """Add one epoch's row (a dict; ``epoch`` first); a row with new columns rewrites the file with them added."""
    if not osp.isfile(path):
        _rewrite(path, list(row), [row])
        return
    columns, rows = _read(path)
    new_columns = [key for key in row if key not in columns]
    if new_columns:
        _rewrite(path, columns + new_columns, rows + [row])
        return
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=columns, restval="").writerow(row)


def truncate_curves(path, last_epoch):
    """Drop the rows of epochs after ``last_epoch`` (they will be trained again after a resume)."""
    if not osp.isfile(path):
        return
    columns, rows = _read(path)
    kept = [r for r in rows if r.get("epoch", "").isdigit() and int(r["epoch"]) <= last_epoch]
    if len(kept) != len(rows):
        _rewrite(path, columns, kept)
