"""Classification evaluator: accuracy, error, macro-F1, optional per-class results and confusion matrix."""

import os.path as osp
from collections import OrderedDict, defaultdict

import torch

from dassl.utils import mkdir_if_missing

from .build import EVALUATOR_REGISTRY

__all__ = ["EvaluatorBase", "Classification", "macro_f1_score", "confusion_matrix"]


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


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Evaluator for classification; prints the ``=> result`` block that ``parse_test_res.py`` scrapes.

    Percentages are printed with two decimals (Dassl 0.6.3 prints one; the parser accepts both).
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
        if self._per_class_res is not None:
            for label, match in zip(gt.tolist(), matches.tolist()):
                self._per_class_res[label].append(int(match))

    def evaluate(self):
        """Print and return ``OrderedDict(accuracy, error_rate, macro_f1[, perclass_accuracy])`` in percent."""
        if self._total == 0:
            raise RuntimeError("Classification.evaluate() called before any process(); the loader was empty")
        y_true = torch.cat(self._y_true)  # [N]
        y_pred = torch.cat(self._y_pred)  # [N]
        acc = 100.0 * self._correct / self._total
        err = 100.0 - acc
        macro_f1 = 100.0 * macro_f1_score(y_true, y_pred)

        results = OrderedDict(accuracy=acc, error_rate=err, macro_f1=macro_f1)
        print(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.2f}%\n"
            f"* error: {err:.2f}%\n"
            f"* macro_f1: {macro_f1:.2f}%"
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
