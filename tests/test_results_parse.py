"""Log parsing (results.logparse) and the ecosystem-compatible parse_test_res.py, on hand-written logs."""
import json
import math

import numpy as np
import pytest

import parse_test_res
from results import logparse

TRAIN_LOG = """\
epoch [1/2] batch [1/1] time 0.1 (0.1) data 0.0 (0.0) loss 1.0 (1.0) lr 2.0e-03 eta 0:00:01
Evaluate on the *val* set
=> result
* total: 10
* accuracy: 11.11%
{end}
Deploy the last-epoch model
Evaluate on the *test* set
=> result
* total: 100
* correct: 81
* accuracy: {acc}%
* error: 18.77%
* macro_f1: 80.00%
Elapsed: 0:00:01
"""

EVAL_LOG = """\
Loading weights to prompt_learner from "x/model.pth.tar-2" (epoch = 2)
Evaluate on the *test* set
=> result
* total: 100
* accuracy: {acc}%
* base_accuracy: 90.00%
"""


def write_train_log(run_dir, acc, end="Finish training", name="log.txt"):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / name).write_text(TRAIN_LOG.format(acc=acc, end=end))


def test_metrics_after_ignores_values_before_the_end_signal_and_keeps_the_last():
    lines = TRAIN_LOG.format(acc="81.23", end="Finish training").splitlines()
    metrics = logparse.metrics_after(lines, logparse.END_OF_TRAINING)
    assert metrics["accuracy"] == 81.23  # not the 11.11 validation value
    assert metrics["macro_f1"] == 80.0 and metrics["error"] == 18.77
    assert "total" not in metrics  # counts carry no "%" and are not metrics
    assert logparse.metrics_after(lines, ("never printed",)) == {}


@pytest.mark.parametrize("end", ["Finish training", "Finished training"])
def test_both_end_of_training_spellings_are_accepted(tmp_path, end):
    write_train_log(tmp_path / "seed1", "77.70", end=end)
    metrics, log = logparse.final_metrics(tmp_path / "seed1", training=True)
    assert metrics["accuracy"] == 77.70 and log.name == "log.txt"


def test_the_newest_log_with_a_result_wins_over_an_interrupted_first_log(tmp_path):
    run = tmp_path / "seed1"
    run.mkdir()
    (run / "log.txt").write_text("epoch [1/2] batch [1/1]\n")  # interrupted run: no end signal
    write_train_log(run, "66.60", name="log.txt-2024-01-01-10-00-00")
    write_train_log(run, "55.50", name="log.txt-2024-01-01-09-00-00")
    metrics, log = logparse.final_metrics(run, training=True)
    assert metrics["accuracy"] == 66.60 and log.name == "log.txt-2024-01-01-10-00-00"


def test_an_interrupted_training_run_has_no_result_even_with_validation_results(tmp_path):
    run = tmp_path / "seed1"
    run.mkdir()
    (run / "log.txt").write_text("=> result\n* accuracy: 11.11%\nepoch [2/2] batch [1/1]\n")
    assert logparse.final_metrics(run, training=True) == ({}, None)


def test_only_result_json_makes_a_run_of_ours_finished(tmp_path, capsys):
    """train.py prints "Finish training" before the final test: a crash there leaves the line and no result."""
    ours = tmp_path / "seed1"
    write_train_log(ours, "70.00")
    (ours / "config.yaml").write_text("SEED: 1\n")  # written by this project's train.py when the run starts
    assert not logparse.finished(ours) and not logparse.is_foreign(ours)
    assert logparse.final_metrics(ours, training=True) == ({}, None)
    foreign = tmp_path / "seed2"  # made by the ecosystem's scripts: the log rule holds
    write_train_log(foreign, "72.00")
    assert logparse.is_foreign(foreign) and logparse.final_metrics(foreign, training=True)[0]["accuracy"] == 72.0
    assert parse_test_res.main([str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert f"skipped {ours}: no result.json" in captured.err
    assert "* accuracy: 72.00% +- 0.00%" in captured.out
    (ours / "result.json").write_text(json.dumps({"mode": "train", "metrics": {"accuracy": 70.0}}))
    assert logparse.finished(ours) and logparse.final_metrics(ours, training=True)[0]["accuracy"] == 70.0
    assert parse_test_res.main([str(tmp_path)]) == 0
    assert "* accuracy: 71.00% +- 1.00%" in capsys.readouterr().out


def test_parse_test_res_numbers_match_the_log_lines(tmp_path, capsys):
    accs = [81.23, 79.10, 83.05]
    for seed, acc in enumerate(accs, 1):
        write_train_log(tmp_path / f"seed{seed}", f"{acc:.2f}")
    (tmp_path / ".hidden").mkdir()
    assert parse_test_res.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for seed, acc in enumerate(accs, 1):
        assert f"file: {tmp_path / f'seed{seed}' / 'log.txt'}. accuracy: {acc:.2f}%. " in out
    assert f"Summary of directory: {tmp_path}" in out
    assert f"* accuracy: {np.mean(accs):.2f}% +- {np.std(accs):.2f}%" in out

    assert parse_test_res.main([str(tmp_path), "--ci95"]) == 0
    half_width = 1.96 * np.std(accs) / math.sqrt(3)
    assert f"* accuracy: {np.mean(accs):.2f}% +- {half_width:.2f}%" in capsys.readouterr().out


def test_parse_test_res_test_log_keyword_and_missing_runs(tmp_path, capsys):
    for seed, acc in ((1, "70.00"), (2, "72.50")):
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "log.txt").write_text(EVAL_LOG.format(acc=acc))
    (tmp_path / "seed3").mkdir()
    (tmp_path / "seed3" / "log.txt").write_text("crashed\n")
    assert parse_test_res.main([str(tmp_path), "--test-log"]) == 0
    captured = capsys.readouterr()
    assert "* accuracy: 71.25% +- 1.25%" in captured.out
    assert "skipped" in captured.err and "seed3" in captured.err
    assert parse_test_res.main([str(tmp_path), "--test-log", "--keyword", "base_accuracy"]) == 0
    assert "* base_accuracy: 90.00% +- 0.00%" in capsys.readouterr().out
    # without --test-log these evaluation logs hold no end-of-training line
    assert parse_test_res.main([str(tmp_path)]) == 1
    assert "Nothing found" in capsys.readouterr().err


def test_parse_test_res_multi_exp_averages_the_experiment_means(tmp_path, capsys):
    for exp, accs in (("caltech101", [90.0, 92.0]), ("dtd", [60.0, 61.0])):
        for seed, acc in enumerate(accs, 1):
            write_train_log(tmp_path / exp / f"seed{seed}", f"{acc:.2f}")
    assert parse_test_res.main([str(tmp_path), "--multi-exp"]) == 0
    out = capsys.readouterr().out
    assert "* accuracy: 91.00% +- 1.00%" in out and "* accuracy: 60.50% +- 0.50%" in out
    assert out.rstrip().endswith("Average performance\n* accuracy: 75.75%")


def test_parse_test_res_rejects_a_missing_directory(tmp_path, capsys):
    assert parse_test_res.main([str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
