"""`BaseNovelClassification`: one evaluation run of a base-trained model over base + novel classes.

Select it with `TEST.EVALUATOR BaseNovelClassification` and `DATASET.SUBSAMPLE_CLASSES all`
(optionally with `DATASET.USE_RATIO True`). The first labels of the label space are the base
classes: as many as the dataset says (`num_base_classes`, which the trainer passes on from
`DataManager.num_base_classes`), else ceil(n/2), the rule of the "all" space.

Open-set AUROC: how well the model tells images of novel classes from images of base classes, with the maximum
softmax probability (MSP) baseline (Hendrycks & Gimpel, 2017) taking the base classes as the known ones. Score of
an image: MSP over the base classes' logits only, max_k softmax(logits[:num_base])_k ("base-ness"); novel images
are the positives, scored by -MSP. AUROC = P(-MSP(novel) > -MSP(base)) + 1/2 P(tie) over all (novel, base)
pairs, exactly (`dassl.evaluation.auroc`). 50% is chance; with a single base class every score is 1, so 50%.
"""

from collections import OrderedDict

import torch

from dassl.evaluation import EVALUATOR_REGISTRY, Classification, auroc
from dassl.metrics import harmonic_mean

from .label_spaces import base_half_size


@EVALUATOR_REGISTRY.register()
class BaseNovelClassification(Classification):
    """Classification lines over all images, then accuracy on base images, on novel images, their harmonic
    mean and the open-set AUROC (module docstring), in percent with two decimals. Returns
    `OrderedDict(accuracy, error_rate, macro_f1, ece, nll, base_accuracy, novel_accuracy, harmonic_mean,
    open_set_auroc)`."""

    def __init__(self, cfg, lab2cname=None, num_base_classes=None, **kwargs):
        if cfg.DATASET.SUBSAMPLE_CLASSES != "all":
            raise ValueError(
                "TEST.EVALUATOR BaseNovelClassification needs DATASET.SUBSAMPLE_CLASSES 'all' (base and "
                f"novel classes in one label space), got {cfg.DATASET.SUBSAMPLE_CLASSES!r}; use "
                "Classification for a base-only or novel-only test"
            )
        if not lab2cname:
            raise ValueError("BaseNovelClassification needs lab2cname (the label -> class name map of the test set)")
        super().__init__(cfg, lab2cname=lab2cname, **kwargs)
        self.num_base = self.base_boundary(cfg, len(lab2cname), num_base_classes)

    @staticmethod
    def base_boundary(cfg, num_classes, num_base_classes):
        """How many leading labels are base: the dataset's count when given, else ceil(n/2) (the "all" space's
        rule). An open-world space (DATASET.USE_RATIO) has its own count, so there it must be given."""
        if num_base_classes is not None:
            return num_base_classes
        if cfg.DATASET.USE_RATIO:
            raise ValueError(
                "BaseNovelClassification on an open-world label space (DATASET.USE_RATIO True) needs "
                "num_base_classes, the dataset's count of base classes: build it through a trainer (which passes "
                "DataManager.num_base_classes) or pass num_base_classes=dataset.num_base_classes"
            )
        return base_half_size(num_classes)

    def reset(self):
        super().reset()
        self._labels = []
        self._hits = []
        self._base_msp = []

    def process(self, mo, gt):
        """Accumulate a batch: `mo` logits [B, C], `gt` labels [B]."""
        super().process(mo, gt)
        self._labels.append(gt.cpu())  # [B]
        self._hits.append(mo.argmax(dim=1).cpu().eq(gt.cpu()))  # [B]
        if self.num_base > 0:  # (a space without base classes is refused by evaluate(), with its reason)
            base_probs = torch.softmax(mo[:, : self.num_base].detach().double(), dim=1)  # [B, num_base]
            self._base_msp.append(base_probs.max(dim=1)[0].cpu())  # [B]

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
        base_msp = torch.cat(self._base_msp)  # [N]
        open_set_auroc = 100.0 * auroc(-base_msp[~is_base], -base_msp[is_base])
        print(
            f"* base_accuracy: {base_acc:.2f}%\n"
            f"* novel_accuracy: {novel_acc:.2f}%\n"
            f"* harmonic_mean: {h_mean:.2f}%\n"
            f"* open_set_auroc: {open_set_auroc:.2f}%"
        )
        results.update(OrderedDict(base_accuracy=base_acc, novel_accuracy=novel_acc, harmonic_mean=h_mean,
                                   open_set_auroc=open_set_auroc))
        return results
