"""Classification evaluator: accuracy, error, macro-F1, calibration (ECE, NLL), optional per-class results and
confusion matrix; the open-set AUROC that ``datasets.evaluation`` reports."""

import os.path as osp
from collections import OrderedDict, defaultdict

import torch

from dassl.utils import mkdir_if_missing

from .build import EVALUATOR_REGISTRY

__all__ = ["EvaluatorBase", "Classification", "CalibrationBins", "macro_f1_score", "confusion_matrix", "auroc"]

ECE_BINS = 15  # equal-width confidence bins of the expected calibration error


class EvaluatorBase:
    """Interface: ``reset()``, ``process(model_output, ground_truth)`` per batch, ``evaluate()`` at the end."""

    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self):
        raise NotImplementedError

    def process(self, mo, gt):
        raise NotImplementedError

    def evaluate(self):
        raise NotImplementedError


def macro_f1_score(y_true, y_pred):
    """Mean F1 over the labels present in ``y_true`` (as sklearn's ``average="macro", labels=unique(y_true)``).

    Args:
        y_true, y_pred (Tensor): integer labels ``[N]``.

    Returns:
        float: macro-F1 in [0, 1].
    """
    f1_scores = []
    for label in torch.unique(y_true):
        is_true, is_pred = y_true == label, y_pred == label
        tp = (is_true & is_pred).sum().item()
        fp = (~is_true & is_pred).sum().item()
        fn = (is_true & ~is_pred).sum().item()
        f1_scores.append(2 * tp / (2 * tp + fp + fn))  # tp + fn >= 1 since label occurs in y_true
    return sum(f1_scores) / len(f1_scores)


def confusion_matrix(y_true, y_pred, num_classes):
    """Row-normalized confusion matrix ``[num_classes, num_classes]``: row = true label, column = prediction.

    Rows of labels that never occur in ``y_true`` stay zero.
    """
    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)  # [C, C]
    counts.index_put_((y_true, y_pred), torch.ones_like(y_true, dtype=torch.float64), accumulate=True)
    row_totals = counts.sum(dim=1, keepdim=True).clamp(min=1)  # [C, 1]
    return counts / row_totals


def auroc(positive, negative):
    """Area under the ROC curve of scores where higher means "positive", computed exactly.

    AUROC = P(s+ > s-) + 1/2 P(s+ = s-) over all (positive, negative) pairs: the Mann-Whitney U statistic of the
    positive scores divided by n+ * n-, with tied scores given their mid-rank (so a tie counts 1/2). Equal to
    ``sklearn.metrics.roc_auc_score``. Memory: the scores and their ranks, O(n+ + n-).

    Args:
        positive (Tensor): scores of the positive items ``[P]``, P >= 1.
        negative (Tensor): scores of the negative items ``[N]``, N >= 1.

    Returns:
        float: AUROC in [0, 1].
    """
    if positive.numel() == 0 or negative.numel() == 0:
        raise ValueError(f"auroc() needs at least one positive and one negative score; got {positive.numel()} "
                         f"positive and {negative.numel()} negative")
    scores = torch.cat([positive, negative]).double()  # [P + N]
    _, group, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)  # [P + N], [G]
    last_rank = counts.cumsum(0).double()  # [G] 1-based rank of the last item of each group of equal scores
    mid_rank = last_rank - (counts.double() - 1) / 2  # [G] the mean rank of a group
    n_pos, n_neg = positive.numel(), negative.numel()
    u_statistic = mid_rank[group[:n_pos]].sum().item() - n_pos * (n_pos + 1) / 2
    return u_statistic / (n_pos * n_neg)


class CalibrationBins:
    """Running sums for the expected calibration error and the negative log-likelihood of softmax predictions.

    * Confidence = the maximum softmax probability of an image's logits; the prediction is their argmax (the first
      one on ties, as the accuracy's).
    * ECE: ``ECE_BINS`` (15) equal-width bins, bin b holding the confidences in (b/15, (b+1)/15];
      ECE = sum over bins of (n_b / N) * |accuracy_b - mean confidence_b| (Guo et al., 2017).
    * NLL: the mean over images of -log softmax(logits)[true label], natural log (nats).

    Memory stays flat: per bin a count, a confidence sum and a correct count, plus the NLL sum (no logits kept).
    """

    def __init__(self, num_bins=ECE_BINS):
        self.inner_edges = torch.arange(1, num_bins, dtype=torch.float64) / num_bins  # [M - 1]: 1/M .. (M-1)/M
        self.count = torch.zeros(num_bins, dtype=torch.float64)  # [M]
        self.confidence = torch.zeros(num_bins, dtype=torch.float64)  # [M]
        self.correct = torch.zeros(num_bins, dtype=torch.float64)  # [M]
        self.nll_sum = 0.0

    def update(self, logits, labels):
        """Add a batch: ``logits`` ``[B, C]``, ``labels`` ``[B]``."""
        logits = logits.detach().cpu().double()  # [B, C]
        labels = labels.cpu()  # [B]
        confidence = torch.softmax(logits, dim=1).max(dim=1)[0]  # [B]
        correct = logits.max(dim=1)[1].eq(labels).double()  # [B]
        bins = torch.bucketize(confidence, self.inner_edges)  # [B]: b with b/M < confidence <= (b+1)/M
        self.count.index_add_(0, bins, torch.ones_like(confidence))
        self.confidence.index_add_(0, bins, confidence)
        self.correct.index_add_(0, bins, correct)
        log_probs = torch.log_softmax(logits, dim=1)  # [B, C]
        self.nll_sum -= log_probs.gather(1, labels.unsqueeze(1)).sum().item()

    def ece(self):
        """Expected calibration error in [0, 1]: sum_b |correct_b - confidence sum_b| / N."""
        return (self.correct - self.confidence).abs().sum().item() / self.count.sum().item()

    def nll(self):
        """Mean negative log-likelihood of the true labels (nats)."""
        return self.nll_sum / self.count.sum().item()


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Evaluator for classification; prints the ``=> result`` block that ``parse_test_res.py`` scrapes.

    Percentages are printed with two decimals (Dassl 0.6.3 prints one; the parser accepts both). Beyond Dassl's
    lines it prints ``* ece: X%`` (expected calibration error, ``CalibrationBins``) and ``* nll: X nats``
    (negative log-likelihood of the softmax over the evaluated label space, four decimals).
    """

    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self.reset()

    def reset(self):
        self._correct = 0
        self._total = 0
        self._y_true = []
        self._y_pred = []
        self._calibration = CalibrationBins()
        self._per_class_res = defaultdict(list) if self.cfg.TEST.PER_CLASS_RESULT else None

    def process(self, mo, gt):
        """Accumulate a batch: ``mo`` logits ``[B, C]``, ``gt`` labels ``[B]``."""
        if mo.dim() != 2 or gt.dim() != 1 or mo.size(0) != gt.size(0):
            raise ValueError(
                f"Classification.process() expects logits [B, C] and labels [B]; got {tuple(mo.shape)} "
                f"and {tuple(gt.shape)} (does model_inference() return logits?)"
            )
        pred = mo.max(dim=1)[1].cpu()  # [B]
        gt = gt.cpu()  # [B]
        matches = pred.eq(gt)  # [B]
        self._correct += int(matches.sum().item())
        self._total += gt.size(0)
        self._y_true.append(gt)
        self._y_pred.append(pred)
        self._calibration.update(mo, gt)
        if self._per_class_res is not None:
            for label, match in zip(gt.tolist(), matches.tolist()):
                self._per_class_res[label].append(int(match))

    def evaluate(self):
        """Print and return ``OrderedDict(accuracy, error_rate, macro_f1, ece, nll[, perclass_accuracy])``: percent,
        except ``nll`` (nats)."""
        if self._total == 0:
            raise RuntimeError("Classification.evaluate() called before any process(); the loader was empty")
        y_true = torch.cat(self._y_true)  # [N]
        y_pred = torch.cat(self._y_pred)  # [N]
        acc = 100.0 * self._correct / self._total
        err = 100.0 - acc
        macro_f1 = 100.0 * macro_f1_score(y_true, y_pred)
        ece = 100.0 * self._calibration.ece()
        nll = self._calibration.nll()

        results = OrderedDict(accuracy=acc, error_rate=err, macro_f1=macro_f1, ece=ece, nll=nll)
        print(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.2f}%\n"
            f"* error: {err:.2f}%\n"
            f"* macro_f1: {macro_f1:.2f}%\n"
            f"* ece: {ece:.2f}%\n"
            f"* nll: {nll:.4f} nats"
        )

        if self._per_class_res is not None:
            results["perclass_accuracy"] = self._print_per_class()
        if self.cfg.TEST.COMPUTE_CMAT:
            self._save_confusion_matrix(y_true, y_pred)
        return results

    def _print_per_class(self):
        print("=> per-class result")
        accs = []
        for label in sorted(self._per_class_res):
            res = self._per_class_res[label]
            correct, total = sum(res), len(res)
            acc = 100.0 * correct / total
            accs.append(acc)
            classname = self._lab2cname[label] if self._lab2cname else str(label)
            print(f"* class: {label} ({classname})\ttotal: {total:,}\tcorrect: {correct:,}\tacc: {acc:.2f}%")
        mean_acc = sum(accs) / len(accs)
        print(f"* average: {mean_acc:.2f}%")
        return mean_acc

    def _save_confusion_matrix(self, y_true, y_pred):
        num_classes = max(len(self._lab2cname or {}), int(max(y_true.max(), y_pred.max())) + 1)
        cmat = confusion_matrix(y_true, y_pred, num_classes)  # [C, C]
        mkdir_if_missing(self.cfg.OUTPUT_DIR)
        save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
        torch.save(cmat, save_path)
        print(f"Confusion matrix is saved to {save_path}")
