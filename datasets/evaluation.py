"""`BaseNovelClassification`: one evaluation run of a base-trained model over base + novel classes.

Select it with `TEST.EVALUATOR BaseNovelClassification` and `DATASET.SUBSAMPLE_CLASSES all`
(optionally with `DATASET.USE_RATIO True`). The first labels of the label space are the base
classes: ceil(n/2) of them for the "all" space, the count recorded by the dataset for the
open-world ratio space (`datasets.protocols.base_class_count`).
"""

from collections import OrderedDict

import torch

from dassl.evaluation import EVALUATOR_REGISTRY, Classification

from .protocols import base_class_count


def harmonic_mean(a, b):
    """2ab / (a + b), and 0 when both are 0."""
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


@EVALUATOR_REGISTRY.register()
class BaseNovelClassification(Classification):
    """Classification lines over all images, then accuracy on base images, on novel images and
    their harmonic mean (two decimals). Returns
    `OrderedDict(accuracy, error_rate, macro_f1, base_accuracy, novel_accuracy, harmonic_mean)`."""

    def __init__(self, cfg, lab2cname=None, **kwargs):
        if cfg.DATASET.SUBSAMPLE_CLASSES != "all":
            raise ValueError(
                "TEST.EVALUATOR BaseNovelClassification needs DATASET.SUBSAMPLE_CLASSES 'all' (base and "
                f"novel classes in one label space), got {cfg.DATASET.SUBSAMPLE_CLASSES!r}; use "
                "Classification for a base-only or novel-only test"
            )
        if not lab2cname:
            raise ValueError("BaseNovelClassification needs lab2cname (the label -> class name map of the test set)")
        super().__init__(cfg, lab2cname=lab2cname, **kwargs)
        classnames = [lab2cname[label] for label in sorted(lab2cname)]
        self.num_base = base_class_count(classnames)

    def reset(self):
        super().reset()
        self._labels = []
        self._hits = []

    def process(self, mo, gt):
        """Accumulate a batch: `mo` logits [B, C], `gt` labels [B]."""
        super().process(mo, gt)
        self._labels.append(gt.cpu())  # [B]
        self._hits.append(mo.argmax(dim=1).cpu().eq(gt.cpu()))  # [B]

    def evaluate(self):
        results = super().evaluate()
        labels = torch.cat(self._labels)  # [N]
        hits = torch.cat(self._hits)  # [N]
        is_base = labels < self.num_base  # [N]
        groups = {"base": is_base, "novel": ~is_base}
        empty = [name for name, mask in groups.items() if not mask.any()]
        if empty:
            raise RuntimeError(
                f"BaseNovelClassification saw no {' or '.join(empty)} test images (base = labels < "
                f"{self.num_base}); evaluate on a label space holding both base and novel classes"
            )
        base_acc, novel_acc = (100.0 * hits[mask].float().mean().item() for mask in groups.values())
        h_mean = harmonic_mean(base_acc, novel_acc)
        print(
            f"* base_accuracy: {base_acc:.2f}%\n"
            f"* novel_accuracy: {novel_acc:.2f}%\n"
            f"* harmonic_mean: {h_mean:.2f}%"
        )
        results.update(OrderedDict(base_accuracy=base_acc, novel_accuracy=novel_acc, harmonic_mean=h_mean))
        return results
