"""Which folder ``scripts/results.py`` reads: a tree is a folder whose protocol folder holds runs where the layout puts
them (a source package with an ``evaluation/`` module is none); unreadable folders and looping links are skipped;
a folder inside a tree, or one with finished runs in another layout, is named as such in one line, exit 2."""
import os

from results import collect as collect_module
from results.collect import is_output_tree, output_trees
from results.report import main as results_main
from tests.test_results_tables import b2n


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def repository_like(root):
    """A checkout: a package with an ``evaluation/`` module folder, and two output trees of finished runs."""
    package = root / "dassl" / "evaluation"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "build.cpython-311.pyc").write_bytes(b"\0")
    for tree in ("output", "output_mb"):
        b2n(root / tree, "test_base", "micro_sketch", "CoOp", "micro", 1, 50.0)


def test_a_source_package_with_an_evaluation_folder_is_no_output_tree(tmp_path, capsys):
    repository_like(tmp_path)
    assert not is_output_tree(tmp_path / "dassl") and is_output_tree(tmp_path / "output")
    assert output_trees(tmp_path) == [tmp_path / "output", tmp_path / "output_mb"]
    assert results_main([str(tmp_path), "--no-plots"]) == 2
    assert one_error_line(capsys) == (
        f"error: {tmp_path} holds no runs itself but 2 output trees: {tmp_path / 'output'}, {tmp_path / 'output_mb'}; "
        f"pass one of them, e.g. python scripts/results.py {tmp_path / 'output'}")


def test_looping_links_and_unreadable_folders_are_skipped(tmp_path, monkeypatch, capsys):
    b2n(tmp_path / "runs" / "mine", "test_base", "dtd", "CoOp", "c1", 1, 50.0)
    os.symlink("loop", tmp_path / "loop")  # a link to itself: "Too many levels of symbolic links"
    os.symlink(tmp_path / "nowhere", tmp_path / "broken")
    (tmp_path / "locked").mkdir()
    scandir = os.scandir

    def no_permission(path):  # (the tests may run as root, whom chmod 000 does not stop)
        if os.fspath(path) == os.fspath(tmp_path / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(collect_module.os, "scandir", no_permission)
    assert output_trees(tmp_path) == [tmp_path / "runs" / "mine"]
    assert results_main([str(tmp_path), "--no-plots", "--out-dir", str(tmp_path / "report")]) == 0
    assert f"reading the runs of {tmp_path / 'runs' / 'mine'}" in capsys.readouterr().err


def test_a_folder_inside_a_tree_names_the_tree_to_pass(tmp_path, monkeypatch, capsys):
    b2n(tmp_path / "output", "test_base", "dtd", "CoOp", "c1", 1, 50.0)
    monkeypatch.chdir(tmp_path)
    for inside in ("output/base2new", "output/base2new/test_base/dtd"):
        assert results_main([inside, "--no-plots"]) == 2
        assert one_error_line(capsys) == (f"error: {inside} is a folder inside the output tree output, not its root: "
                                          "pass the root, python scripts/results.py output")
    assert results_main([str(tmp_path / "output" / "base2new"), "--no-plots"]) == 2
    assert f"inside the output tree {tmp_path / 'output'}, not its root" in one_error_line(capsys)
    assert not (tmp_path / "output" / "base2new" / "results").exists()


def test_finished_runs_in_another_layout_are_named_with_what_takes_them(tmp_path, capsys):
    run = tmp_path / "mine" / "CoOp" / "seed1"
    run.mkdir(parents=True)
    (run / "result.json").write_text("{}")
    assert results_main([str(tmp_path / "mine"), "--no-plots"]) == 2
    assert one_error_line(capsys) == (
        f"error: {tmp_path / 'mine'} holds finished runs (e.g. {run}) but no output tree: the tables read the layout "
        "of results/layout.py (<tree>/base2new/, evaluation/ or few_shot/, as the protocol and sweep scripts write "
        "it); run folders anywhere go to --diff A B or --curves RUN")
    (tmp_path / "empty").mkdir()
    assert results_main([str(tmp_path / "empty")]) == 1  # nothing finished anywhere: no finished run
    assert one_error_line(capsys) == (f"error: no finished run under {tmp_path / 'empty'} (nor an output tree in it: "
                                      "pass the --output of your runs)")
    unfinished = tmp_path / "output" / "base2new" / "test_base" / "dtd" / "shots_16" / "CoOp" / "c1" / "seed1"
    unfinished.mkdir(parents=True)  # a tree whose one run has not finished: listed, then no finished run
    assert results_main([str(tmp_path / "output")]) == 1
    assert capsys.readouterr().err.splitlines() == [f"no finished result (unfinished or failed run): {unfinished}",
                                                    f"error: no finished run under {tmp_path / 'output'}"]


def test_many_trees_below_are_counted_and_the_first_five_named(tmp_path, capsys):
    for index in range(7):
        b2n(tmp_path / f"t{index}", "test_base", "dtd", "CoOp", "c1", 1, 50.0)
    assert results_main([str(tmp_path)]) == 2
    assert one_error_line(capsys) == (
        f"error: {tmp_path} holds no runs itself but 7 output trees: "
        + ", ".join(str(tmp_path / f"t{i}") for i in range(5))
        + f" and 2 more; pass one of them, e.g. python scripts/results.py {tmp_path / 't0'}")
