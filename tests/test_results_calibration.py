"""The calibration and open-set table (results.calibration): hand-written logs, logs without these metrics, and one
real base ∪ novel evaluation whose ECE, NLL and open-set AUROC are recomputed from its logits, read back from
result.json and its log, and shown in the table."""
import csv
import math

import pytest
import torch

import parse_test_res
from dassl.engine.run_dir import read_result
from results import layout
from results.calibration import calibration
from results.collect import collect
from results.report import build_report, main as results_main
from runs.run import main as train_main
from tests.test_evaluation_metrics import auroc_by_pairs
from tests.toy_data import make_toy_dataset, toy_opts


def put(run_dir, lines):
    """Write an evaluation log whose result block holds ``lines``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "log.txt").write_text("\n".join(["Evaluate on the *test* set", "=> result", "* total: 100",
                                                *lines]) + "\n")


def test_runs_with_calibration_lines_get_a_table_and_runs_without_get_no_row(tmp_path, capsys):
    root = tmp_path / "output"
    for seed, (ece, nll, auc) in enumerate([(4.0, 0.9, 70.0), (6.0, 1.1, 74.0)], 1):
        put(layout.base2new_dir(root, "test_all", "dtd", 16, "CoOp", "c1", seed),
            ["* accuracy: 60.00%", f"* ece: {ece:.2f}%", f"* nll: {nll:.4f} nats", "* base_accuracy: 70.00%",
             "* novel_accuracy: 50.00%", "* harmonic_mean: 58.33%", f"* open_set_auroc: {auc:.2f}%"])
    put(layout.base2new_dir(root, "test_new", "dtd", 16, "CoOp", "c1", 1),
        ["* accuracy: 50.00%", "* ece: 10.00%", "* nll: 2.0000 nats"])
    put(layout.base2new_dir(root, "test_base", "dtd", 16, "CoOp", "c1", 1), ["* accuracy: 80.00%"])  # an old log
    results = collect(root).results
    assert {r.split: r.metrics.get("nll") for r in results} == {"test_all": 1.1, "test_new": 2.0, "test_base": None}
    cells = calibration(results)
    assert set(cells) == {("base2new", "test_all", "dtd", ("CoOp", "c1")),
                          ("base2new", "test_new", "dtd", ("CoOp", "c1"))}
    all_space = cells["base2new", "test_all", "dtd", ("CoOp", "c1")]
    assert (all_space["ece"].mean, all_space["ece"].std, all_space["ece"].n) == pytest.approx((5.0, 1.0, 2))
    assert (all_space["nll"].mean, all_space["open_set_auroc"].mean) == pytest.approx((1.0, 72.0))
    assert cells["base2new", "test_new", "dtd", ("CoOp", "c1")]["open_set_auroc"] is None

    out = tmp_path / "report"
    markdown = build_report(results, out, make_plots=False)
    assert "## Calibration and open-set detection" in markdown
    assert "| base2new | test_all | dtd | CoOp | 5.00 ± 1.00 | 1.00 ± 0.10 | 72.00 ± 2.00 | 2 |" in markdown
    assert "| base2new | test_new | dtd | CoOp | 10.00 ± 0.00 | 2.00 ± 0.00 | – | 1 |" in markdown
    assert "15 equal-width bins" in markdown and "ties counted ½" in markdown
    with open(out / "calibration.csv", newline="") as handle:
        rows = {(r["evaluation"], r["metric"]): r for r in csv.DictReader(handle)}
    assert float(rows["test_all", "nll"]["std"]) == pytest.approx(0.1) and rows["test_all", "nll"]["n"] == "2"
    assert rows["test_new", "open_set_auroc"]["mean"] == ""

    assert results_main([str(root), "--out-dir", str(tmp_path / "hidden"), "--no-plots", "--no-calibration"]) == 0
    assert "Calibration" not in capsys.readouterr().out and not (tmp_path / "hidden" / "calibration.csv").exists()


def test_parse_test_res_reads_nll_in_nats_and_ece_in_percent(tmp_path, capsys):
    for seed, (ece, nll) in enumerate([(4.0, 0.9), (6.0, 1.1)], 1):
        put(tmp_path / "dtd" / f"seed{seed}", ["* accuracy: 60.00%", f"* ece: {ece:.2f}%", f"* nll: {nll:.4f} nats"])
    put(tmp_path / "dtd" / "seed3", ["* accuracy: 61.00%"])  # a log from before these metrics
    put(tmp_path / "eurosat" / "seed1", ["* accuracy: 80.00%", "* ece: 2.00%", "* nll: 0.5000 nats"])
    assert parse_test_res.main([str(tmp_path / "dtd"), "--test-log", "--keyword", "nll"]) == 0
    captured = capsys.readouterr()
    assert f"file: {tmp_path / 'dtd' / 'seed1' / 'log.txt'}. nll: 0.90 nats. " in captured.out
    assert "* nll: 1.00 nats +- 0.10 nats" in captured.out
    assert f"skipped {tmp_path / 'dtd' / 'seed3'}: no '* nll: X nats' line after => result" in captured.err
    assert parse_test_res.main([str(tmp_path), "--test-log", "--keyword", "nll", "--multi-exp"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("Average performance\n* nll: 0.75 nats")
    assert parse_test_res.main([str(tmp_path / "dtd"), "--test-log", "--keyword", "ece"]) == 0
    assert "* ece: 5.00% +- 1.00%" in capsys.readouterr().out


def test_a_tree_of_old_logs_has_no_calibration_table(tmp_path):
    root = tmp_path / "output"
    put(layout.base2new_dir(root, "test_new", "dtd", 16, "CoOp", "c1", 1), ["* accuracy: 50.00%"])
    results = collect(root).results
    assert calibration(results) is None
    assert "Calibration" not in build_report(results, tmp_path / "report", make_plots=False)
    assert not (tmp_path / "report" / "calibration.csv").exists()


def test_a_real_base_novel_evaluation_records_reports_and_reads_back_the_metrics(tmp_path):
    data = tmp_path / "data"
    make_toy_dataset(str(data), per_class=(1, 1, 3))
    root = tmp_path / "output"
    run_dir = layout.base2new_dir(root, "test_all", "toy", 16, "ZeroshotCLIP", "c1", 1)
    trainer = train_main(["--root", str(data), "--seed", "1", "--trainer", "ZeroshotCLIP", "--output-dir",
                          str(run_dir), "--eval-only", *toy_opts(str(data)), "DATASET.SUBSAMPLE_CLASSES", "all",
                          "TEST.EVALUATOR", "BaseNovelClassification", "TRAINER.COOP.PREC", "fp32"])

    # Independent: the model's logits of every test image, then the definitions by plain loops.
    trainer.set_model_mode("eval")
    logits, labels = [], []
    with torch.no_grad(), trainer.evaluation_scope():
        for batch in trainer.test_loader:
            images, batch_labels = trainer.parse_batch_test(batch)
            logits += trainer.model_inference(images).tolist()
            labels += batch_labels.tolist()
    num_base = trainer.num_base_classes
    assert num_base == 3 and len(labels) == 18 and {y < num_base for y in labels} == {True, False}
    probs = [[math.exp(v - max(row)) / sum(math.exp(u - max(row)) for u in row) for v in row] for row in logits]
    ece = 0.0
    for b in range(15):
        members = [(max(p), p.index(max(p)) == y) for p, y in zip(probs, labels) if b / 15 < max(p) <= (b + 1) / 15]
        if members:
            ece += abs(sum(hit for _, hit in members) - sum(c for c, _ in members)) / len(labels)
    nll = sum(-math.log(p[y]) for p, y in zip(probs, labels)) / len(labels)
    base_msp = [max(math.exp(v) for v in row[:num_base]) / sum(math.exp(v) for v in row[:num_base])
                for row in logits]
    auc = auroc_by_pairs([-s for s, y in zip(base_msp, labels) if y >= num_base],
                         [-s for s, y in zip(base_msp, labels) if y < num_base])

    recorded = read_result(str(run_dir))["metrics"]
    assert recorded["ece"] == pytest.approx(100 * ece, abs=1e-6)
    assert recorded["nll"] == pytest.approx(nll, abs=1e-9)
    assert recorded["open_set_auroc"] == pytest.approx(100 * auc, abs=1e-9)
    [result] = collect(root).results  # read back from the log, as printed
    assert result.metrics["ece"] == round(recorded["ece"], 2) and result.metrics["nll"] == round(recorded["nll"], 4)
    assert result.metrics["open_set_auroc"] == round(recorded["open_set_auroc"], 2)
    markdown = build_report([result], tmp_path / "report", make_plots=False)
    assert (f"| base2new | test_all | toy | ZeroshotCLIP | {recorded['ece']:.2f} ± 0.00 | {recorded['nll']:.2f} ± 0.00 "
            f"| {recorded['open_set_auroc']:.2f} ± 0.00 | 1 |") in markdown
