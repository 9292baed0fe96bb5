"""Tests for dassl.evaluation (Classification evaluator) and dassl.metrics.compute_accuracy."""

import math
import re

import pytest
import torch

from dassl.config import get_cfg_default
from dassl.evaluation import EVALUATOR_REGISTRY, Classification, EvaluatorBase, build_evaluator
from dassl.metrics import compute_accuracy

Y_TRUE = [0, 0, 1, 1, 2]
Y_PRED = [0, 1, 1, 1, 0]
# Hand computation: class 0 tp=1 fp=1 fn=1 -> F1 0.5; class 1 tp=2 fp=1 fn=0 -> 0.8; class 2 tp=0 -> 0.
MACRO_F1 = 100 * (0.5 + 0.8 + 0.0) / 3
LAB2CNAME = {0: "cat", 1: "dog", 2: "fish"}
PARSE_REGEX = r"\* accuracy: ([\.\deE+-]+)%"  # what parse_test_res.py scrapes


def _logits(preds, num_classes=3):
    return torch.nn.functional.one_hot(torch.tensor(preds), num_classes).float() * 5.0  # [N, C]


def _evaluator(tmp_path, **test_overrides):
    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path)
    for key, value in test_overrides.items():
        setattr(cfg.TEST, key, value)
    return Classification(cfg, lab2cname=LAB2CNAME)


def test_classification_results_and_printed_block(tmp_path, capsys):
    evaluator = _evaluator(tmp_path)
    evaluator.process(_logits(Y_PRED[:3]), torch.tensor(Y_TRUE[:3]))  # two batches
    evaluator.process(_logits(Y_PRED[3:]), torch.tensor(Y_TRUE[3:]))
    results = evaluator.evaluate()

    assert list(results) == ["accuracy", "error_rate", "macro_f1", "ece", "nll"]
    assert results["accuracy"] == pytest.approx(60.0)
    assert results["error_rate"] == pytest.approx(40.0)
    assert results["macro_f1"] == pytest.approx(MACRO_F1)
    # every logit row is one-hot * 5: confidence p = e^5 / (e^5 + 2), all in one bin; 3 of 5 right
    p = math.exp(5) / (math.exp(5) + 2)
    assert results["ece"] == pytest.approx(100 * abs(0.6 - p))
    assert results["nll"] == pytest.approx(-(3 * math.log(p) + 2 * math.log((1 - p) / 2)) / 5)
    assert all(type(v) is float for v in results.values())  # plain floats: safe in checkpoints
    out = capsys.readouterr().out
    assert out == (
        "=> result\n* total: 5\n* correct: 3\n* accuracy: 60.00%\n* error: 40.00%\n* macro_f1: 43.33%\n"
        f"* ece: {results['ece']:.2f}%\n* nll: {results['nll']:.4f} nats\n"
    )
    assert float(re.findall(PARSE_REGEX, out)[-1]) == 60.0


def test_reset_and_thousands_separator(tmp_path, capsys):
    evaluator = _evaluator(tmp_path)
    evaluator.process(_logits([0]), torch.tensor([1]))
    evaluator.reset()
    labels = torch.arange(1881) % 3
    preds = labels.clone()
    preds[:181] = (preds[:181] + 1) % 3
    evaluator.process(_logits(preds.tolist()), labels)
    evaluator.evaluate()
    out = capsys.readouterr().out
    assert "* total: 1,881\n* correct: 1,700\n* accuracy: 90.38%\n" in out


def test_per_class_result_and_confusion_matrix(tmp_path, capsys):
    evaluator = _evaluator(tmp_path, PER_CLASS_RESULT=True, COMPUTE_CMAT=True)
    evaluator.process(_logits(Y_PRED), torch.tensor(Y_TRUE))
    results = evaluator.evaluate()
    out = capsys.readouterr().out

    assert "=> per-class result\n" in out
    assert "* class: 0 (cat)\ttotal: 2\tcorrect: 1\tacc: 50.00%\n" in out
    assert "* class: 1 (dog)\ttotal: 2\tcorrect: 2\tacc: 100.00%\n" in out
    assert "* class: 2 (fish)\ttotal: 1\tcorrect: 0\tacc: 0.00%\n" in out
    assert "* average: 50.00%\n" in out
    assert results["perclass_accuracy"] == pytest.approx(50.0)

    cmat_path = tmp_path / "cmat.pt"
    assert f"Confusion matrix is saved to {cmat_path}" in out
    cmat = torch.load(str(cmat_path), weights_only=True)
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(cmat, expected)


def test_bad_input_and_empty(tmp_path):
    evaluator = _evaluator(tmp_path)
    with pytest.raises(RuntimeError, match="before any process"):
        evaluator.evaluate()
    with pytest.raises(ValueError, match=r"logits \[B, C\]"):
        evaluator.process(torch.zeros(4), torch.zeros(4, dtype=torch.long))


def test_build_evaluator(tmp_path, capsys):
    cfg = get_cfg_default()
    evaluator = build_evaluator(cfg, lab2cname=LAB2CNAME)
    assert isinstance(evaluator, Classification) and isinstance(evaluator, EvaluatorBase)
    assert "Loading evaluator: Classification" in capsys.readouterr().out
    assert "Classification" in EVALUATOR_REGISTRY
    cfg.TEST.EVALUATOR = "Clasification"
    with pytest.raises(ValueError, match=r"do you mean \[Classification\]"):
        build_evaluator(cfg)


def test_compute_accuracy_topk():
    output = torch.tensor(
        [[0.1, 0.5, 0.4], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]
    )  # [4, 3]; top-1 preds 1, 0, 2, 0 ; top-2 sets {1,2}, {0,1}, {2,1}, {0,1}
    target = torch.tensor([2, 0, 0, 1])
    top1, top2 = compute_accuracy(output, target, topk=(1, 2))
    assert top1.shape == (1,) and top1.item() == pytest.approx(25.0)
    assert top2.item() == pytest.approx(75.0)
    assert compute_accuracy((output, "aux"), target)[0].item() == pytest.approx(25.0)
    with pytest.raises(ValueError, match="only 3 classes"):
        compute_accuracy(output, target, topk=(5,))
