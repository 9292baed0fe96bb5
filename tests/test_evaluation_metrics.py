"""ECE, NLL and the open-set AUROC of the evaluators, each against an independent computation on hand-made
predictions: ECE by a plain loop over hand-written probabilities, NLL by math.log, AUROC by counting pairs (and
sklearn's roc_auc_score)."""
import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from dassl.config import extend_cfg, get_cfg_default
from dassl.evaluation import CalibrationBins, Classification, auroc
from dassl.metrics import harmonic_mean
from datasets.evaluation import BaseNovelClassification
from microworld.evaluation import harmonic_mean as micro_world_harmonic_mean
from results import logparse

# Hand-written softmax outputs (rows sum to 1) and true labels; no confidence lies on a bin edge b/15.
PROBS = [
    [0.90, 0.05, 0.05],  # correct, confidence 0.90
    [0.70, 0.20, 0.10],  # wrong (label 1)
    [0.20, 0.75, 0.05],  # correct
    [0.45, 0.40, 0.15],  # wrong (label 2)
    [0.10, 0.30, 0.60],  # correct
    [0.50, 0.48, 0.02],  # correct
    [0.34, 0.33, 0.33],  # wrong (label 1)
]
LABELS = [0, 1, 1, 2, 2, 0, 1]


def logits_of(probs):
    """Logits whose softmax is ``probs``: log p (softmax is shift-invariant)."""
    return torch.tensor(probs, dtype=torch.float64).log()  # [N, C]


def ece_by_loop(probs, labels, bins=15):
    """Expected calibration error by the textbook definition: bin b holds confidences in (b/15, (b+1)/15]."""
    total = 0.0
    for b in range(bins):
        members = [(max(p), p.index(max(p)) == y) for p, y in zip(probs, labels) if b / bins < max(p) <= (b + 1) / bins]
        if members:
            accuracy = sum(hit for _, hit in members) / len(members)
            confidence = sum(c for c, _ in members) / len(members)
            total += len(members) / len(probs) * abs(accuracy - confidence)
    return total


def nll_by_log(probs, labels):
    return sum(-math.log(p[y]) for p, y in zip(probs, labels)) / len(probs)


def auroc_by_pairs(positive, negative):
    """P(positive > negative) + 1/2 P(tie), counted over every pair."""
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def classification(tmp_path):
    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path)
    return Classification(cfg, lab2cname={0: "a", 1: "b", 2: "c"})


@pytest.mark.parametrize("base, novel", [(78.0, 60.0), (49.72, 50.28), (100.0, 1.0), (35.5, 0.0)])
def test_harmonic_mean_is_the_reciprocal_of_the_mean_reciprocal(base, novel):
    expected = 0.0 if 0.0 in (base, novel) else 1 / ((1 / base + 1 / novel) / 2)
    assert harmonic_mean(base, novel) == pytest.approx(expected, rel=1e-12)
    assert micro_world_harmonic_mean(base, novel) == pytest.approx(expected, rel=1e-12)  # its own copy agrees


def test_harmonic_mean_of_nothing():
    assert harmonic_mean(0.0, 0.0) == 0.0 and micro_world_harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(None, 50.0) is None and harmonic_mean(50.0, None) is None  # a missing side stays missing


def test_ece_and_nll_match_a_plain_loop_and_math_log():
    bins = CalibrationBins()
    logits = logits_of(PROBS)
    bins.update(logits[:3], torch.tensor(LABELS[:3]))  # batches are summed: the split does not matter
    bins.update(logits[3:], torch.tensor(LABELS[3:]))
    assert bins.ece() == pytest.approx(ece_by_loop(PROBS, LABELS), abs=1e-12)
    assert bins.nll() == pytest.approx(nll_by_log(PROBS, LABELS), abs=1e-12)
    # by hand for two images: 0.90 right (bin 13), 0.70 wrong (bin 10): 1/2 * 0.10 + 1/2 * 0.70
    two = CalibrationBins()
    two.update(logits_of(PROBS[:2]), torch.tensor(LABELS[:2]))
    assert two.ece() == pytest.approx(0.40, abs=1e-12)
    assert all(t.numel() <= 15 for t in vars(bins).values() if torch.is_tensor(t))  # sums per bin, no logits kept


def test_ece_bins_include_their_upper_edge():
    """A confidence of exactly 1/3 = 5/15 belongs to bin (4/15, 5/15] with 0.30, not to (5/15, 6/15] with 0.36."""
    probs = [[1 / 3, 1 / 3, 1 / 3, 0.0], [0.30, 0.25, 0.25, 0.20], [0.36, 0.30, 0.24, 0.10]]
    labels = [0, 1, 2]  # the first is right (ties predict the first class), the others wrong
    logits = torch.tensor([[0.0, 0.0, 0.0, -1000.0]], dtype=torch.float64)  # softmax exactly [1/3, 1/3, 1/3, 0]
    logits = torch.cat([logits, logits_of(probs[1:])])  # [3, 4]
    bins = CalibrationBins()
    bins.update(logits, torch.tensor(labels))
    expected = ece_by_loop(probs, labels)
    assert expected == pytest.approx((abs(1 - (1 / 3 + 0.30)) + 0.36) / 3)  # upper-inclusive bins, by hand
    assert bins.ece() == pytest.approx(expected, abs=1e-12)
    assert bins.ece() != pytest.approx((0.30 + abs(1 - (1 / 3 + 0.36))) / 3)  # lower-inclusive would give this


def test_classification_reports_ece_and_nll_printed_as_the_parser_reads_them(tmp_path, capsys):
    evaluator = classification(tmp_path)
    evaluator.process(logits_of(PROBS).float(), torch.tensor(LABELS))
    results = evaluator.evaluate()
    expected_ece, expected_nll = 100 * ece_by_loop(PROBS, LABELS), nll_by_log(PROBS, LABELS)
    assert results["ece"] == pytest.approx(expected_ece, abs=1e-4)  # float32 logits
    assert results["nll"] == pytest.approx(expected_nll, abs=1e-6)
    out = capsys.readouterr().out
    assert f"* ece: {expected_ece:.2f}%\n* nll: {expected_nll:.4f} nats\n" in out
    parsed = logparse.metrics_after(out.splitlines(), (logparse.RESULT_HEADER,))
    assert parsed["ece"] == round(expected_ece, 2) and parsed["nll"] == round(expected_nll, 4)
    assert "total" not in parsed and "correct" not in parsed  # counts are still not metrics


def test_auroc_counts_pairs_with_ties_as_one_half_and_agrees_with_sklearn():
    positive = [0.9, 0.4, 0.4, 0.7, 0.1, 0.4]
    negative = [0.4, 0.2, 0.4, 0.8, 0.05]
    expected = auroc_by_pairs(positive, negative)
    assert expected == pytest.approx(19 / 30)  # 16 wins and 6 ties of 30 pairs, counted by hand
    value = auroc(torch.tensor(positive), torch.tensor(negative))
    assert value == pytest.approx(expected, abs=1e-12)
    assert value == pytest.approx(roc_auc_score([1] * 6 + [0] * 5, positive + negative), abs=1e-12)
    assert auroc(torch.ones(3), torch.ones(2)) == 0.5  # all tied: chance
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([1.0])) == 1.0
    generator = torch.Generator().manual_seed(0)  # many ties among integer scores
    pos, neg = torch.randint(0, 6, (300,), generator=generator), torch.randint(0, 6, (200,), generator=generator)
    assert auroc(pos, neg) == pytest.approx(auroc_by_pairs(pos.tolist(), neg.tolist()), abs=1e-12)
    with pytest.raises(ValueError, match="at least one positive and one negative score; got 0 positive"):
        auroc(torch.tensor([]), torch.tensor([1.0]))


def base_novel(tmp_path, num_base=None):
    cfg = extend_cfg(get_cfg_default())  # with the dataset keys (DATASET.SUBSAMPLE_CLASSES "all")
    cfg.OUTPUT_DIR = str(tmp_path)
    return BaseNovelClassification(cfg, lab2cname={k: f"c{k}" for k in range(4)}, num_base_classes=num_base)


# Logits over 4 classes, base = labels 0 and 1 (ceil(4/2)); the last image's base logits tie with the first's.
OPEN_SET_LOGITS = [[3.0, 0.0, 1.0, 0.0], [0.5, 0.0, 2.0, 0.0], [0.0, 2.0, 0.0, 1.0],
                   [1.0, 1.2, 0.0, 3.0], [0.3, 0.0, 0.0, 0.5], [3.0, 0.0, 0.0, 5.0]]
OPEN_SET_LABELS = [0, 2, 1, 3, 0, 2]


def base_msp(row, num_base):
    """Maximum softmax probability over the first num_base logits, by math.exp."""
    exps = [math.exp(v) for v in row[:num_base]]
    return max(exps) / sum(exps)


def test_open_set_auroc_is_novel_vs_base_on_the_negative_base_class_msp(tmp_path, capsys):
    evaluator = base_novel(tmp_path)
    logits = torch.tensor(OPEN_SET_LOGITS)
    evaluator.process(logits[:4], torch.tensor(OPEN_SET_LABELS[:4]))
    evaluator.process(logits[4:], torch.tensor(OPEN_SET_LABELS[4:]))
    results = evaluator.evaluate()
    scores = [-base_msp(row, 2) for row in OPEN_SET_LOGITS]
    novel = [s for s, y in zip(scores, OPEN_SET_LABELS) if y >= 2]
    base = [s for s, y in zip(scores, OPEN_SET_LABELS) if y < 2]
    expected = 100 * auroc_by_pairs(novel, base)
    assert expected == pytest.approx(100 * 5.5 / 9)  # by hand: five wins and one tie of nine pairs
    assert results["open_set_auroc"] == pytest.approx(expected, abs=1e-9)
    assert list(results)[-1] == "open_set_auroc" and {"ece", "nll"} <= set(results)
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"* harmonic_mean: {results['harmonic_mean']:.2f}%\n* open_set_auroc: 61.11%")
    assert logparse.metrics_after(out.splitlines(), (logparse.RESULT_HEADER,))["open_set_auroc"] == 61.11


def test_open_set_auroc_with_one_base_class_is_chance(tmp_path):
    evaluator = base_novel(tmp_path, num_base=1)
    evaluator.process(torch.tensor(OPEN_SET_LOGITS), torch.tensor(OPEN_SET_LABELS))
    assert evaluator.evaluate()["open_set_auroc"] == 50.0  # softmax over one logit is 1 for every image


def test_a_space_without_base_classes_is_refused_with_its_reason(tmp_path):
    evaluator = base_novel(tmp_path, num_base=0)  # e.g. the open-world space of ratio 0 on an even class count
    evaluator.process(torch.tensor(OPEN_SET_LOGITS), torch.tensor(OPEN_SET_LABELS))
    with pytest.raises(RuntimeError, match=r"saw no base test images \(base = labels < 0\)"):
        evaluator.evaluate()
