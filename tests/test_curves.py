"""Training curves: reading ``curves.csv`` (gaps, extra columns, repeated epochs), finding runs, and the plot of
``scripts/results.py --curves`` (the drawn lines hold exactly the CSV values)."""
import matplotlib.figure
import pytest

from results import report
from results.curves import find_curve_files, panel_order, read_curves, run_labels

HEADER = "epoch,lr,train_loss,train_acc,train_loss_sc,val_accuracy\n"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_reader_keeps_gaps_extra_columns_and_the_last_row_of_an_epoch(tmp_path):
    path = write(tmp_path / "curves.csv", HEADER + "1,0.002,1.5,40.0,0.3,50.0\n"
                                                   "2,0.0019,1.2,55.5,0.2,\n"
                                                   "3,0.001,1.0,nan?,0.1,58.0\n"
                                                   "3,0.001,0.9,70.0,0.1,60.0\n")  # a resumed epoch 3: last row wins
    curves = read_curves(path)
    assert curves.epochs == [1, 2, 3]
    assert curves.columns == {"lr": [0.002, 0.0019, 0.001], "train_loss": [1.5, 1.2, 0.9],
                              "train_acc": [40.0, 55.5, 70.0], "train_loss_sc": [0.3, 0.2, 0.1],
                              "val_accuracy": [50.0, None, 60.0]}


def test_reader_without_val_column_and_with_an_empty_file(tmp_path):
    curves = read_curves(write(tmp_path / "a.csv", "epoch,lr,train_loss\n1,0.1,2.0\n,0.1,9.9\n"))
    assert curves.epochs == [1] and curves.columns == {"lr": [0.1], "train_loss": [2.0]}
    empty = read_curves(write(tmp_path / "b.csv", ""))
    assert empty.epochs == [] and empty.columns == {}


def test_panel_order():
    names = ["val_accuracy", "lr", "train_acc", "train_loss_sc", "train_loss", "other"]
    assert panel_order(names) == ["train_loss", "train_acc", "train_loss_sc", "lr", "val_accuracy", "other"]


def test_runs_are_found_by_tree_glob_or_file_and_labelled_relative_to_their_parent(tmp_path):
    a = write(tmp_path / "out" / "CoOp" / "seed1" / "curves.csv", HEADER)
    b = write(tmp_path / "out" / "BMIP" / "seed1" / "curves.csv", HEADER)
    write(tmp_path / "out" / "BMIP" / "seed1" / "log.txt", "not a csv")
    assert find_curve_files([tmp_path / "out"]) == sorted([a, b])
    assert find_curve_files([str(tmp_path / "out" / "*" / "seed1")]) == sorted([a, b])
    assert find_curve_files([str(tmp_path / "out" / "BMIP" / "seed1" / "*")]) == [b]
    assert find_curve_files([a]) == [a]
    assert run_labels(sorted([a, b])) == ["BMIP/seed1", "CoOp/seed1"]
    assert run_labels([a]) == ["seed1"]
    with pytest.raises(FileNotFoundError, match="no curves.csv under"):
        find_curve_files([tmp_path / "nothing"])


def test_results_curves_plots_one_line_per_run_and_panel_per_column(tmp_path, monkeypatch, capsys):
    write(tmp_path / "out" / "CoOp" / "seed1" / "curves.csv",
          HEADER + "1,0.002,1.5,40.0,0.3,50.0\n2,0.001,1.2,55.5,0.2,\n3,0.0005,1.0,60.0,0.1,60.0\n")
    write(tmp_path / "out" / "BMIP" / "seed1" / "curves.csv", "epoch,lr,train_loss\n1,0.01,2.0\n2,0.005,1.0\n")
    figures = []
    original = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (figures.append(fig), original(fig, *a, **k)))
    status = report.main(["--curves", str(tmp_path / "out" / "*" / "seed1"), "--out-dir", str(tmp_path / "res")])
    assert status == 0 and (tmp_path / "res" / "training_curves.png").stat().st_size > 10_000
    assert capsys.readouterr().out.splitlines() == ["BMIP/seed1: 2 epochs",
                                                    "CoOp/seed1: 3 epochs, best val accuracy 60.00"]
    (fig,) = figures
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert list(panels) == ["training loss", "training accuracy (%)", "train_loss_sc", "learning rate",
                            "val accuracy (%)"]
    lines = {(title, line.get_label()): (list(line.get_xdata()), list(line.get_ydata()))
             for title, ax in panels.items() for line in ax.get_lines()}
    assert lines[("val accuracy (%)", "CoOp/seed1")] == ([1, 3], [50.0, 60.0])  # epoch 2 not validated: a gap
    assert lines[("training loss", "BMIP/seed1")] == ([1, 2], [2.0, 1.0])
    assert ("val accuracy (%)", "BMIP/seed1") not in lines
    assert report.main(["--curves", str(tmp_path / "missing")]) == 2
