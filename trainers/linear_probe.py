"""Linear-probe CLIP: the few-shot baseline of CoOp's figure (CoOp's ``lpclip/``; CLIP paper, appendix A.3).

A logistic regression on frozen CLIP image features — the image encoder's output, not normalised, computed with
the test-time transform, as lpclip extracts them — of the train split, with the inverse regularisation strength C
searched on the val split as lpclip searches it (scikit-learn, lbfgs, L2, MAX_ITER iterations per fit):

1. coarse: C in 1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6; the first C of highest val accuracy is the peak;
2. fine: SEARCH_STEPS rounds on [peak / 10, peak * 10] in log10 space: fit at both ends, keep the better end (the
   left, smaller C, on a tie) and halve the interval towards it; the classifier of the last round is the result.

Val images: at most min(K, 4) per class, as in lpclip (every dataset's few-shot val split already is; ImageNet,
whose val split is its test set, is subsampled with the run's seed).

"Training" has no epochs: features of train and val (cached on disk, :mod:`trainers.feature_cache`) -> search -> fit ->
the classifier (weight [n_cls, E], bias [n_cls]) saved as ``linear_probe/model.pth.tar-1`` -> the engine's end of
training (the final test through the normal evaluator, ``result.json``), so a finished run is skipped like any other;
the search is written to ``OUTPUT_DIR/c_search.csv``. ``--eval-only --model-dir`` loads it
like any model. The classifier keeps the names of the classes it was fitted on and is evaluated on any label space
made of them, matched by name (ImageNet -> ImageNet-V2/-Sketch, and the 200-class -A/-R); a class it has no weights
for (base-to-novel "new" classes, cross-dataset targets) stops the evaluation with one line.
"""
import csv
import functools
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import FrozenCLIPTrainer
from .feature_cache import cache_folder, cached_image_features, weights_digest

COARSE_C = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)  # lpclip's initial grid, in its order
MAX_VAL_SHOTS = 4  # lpclip's val images per class: min(K, 4)
SEARCH_FILE = "c_search.csv"


@register_config
def add_linear_probe_config(cfg):
    cfg.TRAINER.LINEAR_PROBE = CN()
    cfg.TRAINER.LINEAR_PROBE.PREC = "fp16"  # frozen image-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.LINEAR_PROBE.C = 0.0  # > 0: fit with this inverse regularisation strength, no search; 0: search on val
    cfg.TRAINER.LINEAR_PROBE.SEARCH_STEPS = 8  # fine-search rounds after the coarse grid (lpclip's num_step)
    cfg.TRAINER.LINEAR_PROBE.MAX_ITER = 1000  # lbfgs iterations per fit (lpclip: 1000)


# -- the C search (pure functions of features) ----------------------------------------------------------------------
@dataclass
class Trial:
    stage: str  # "coarse" | "fine <round>" | "fixed"
    C: float
    val_accuracy: float  # % (nan without val data)
    converged: bool


@dataclass
class SearchResult:
    C: float
    classifier: object  # a fitted sklearn.linear_model.LogisticRegression
    val_accuracy: float  # %
    trials: list = field(default_factory=list)  # [Trial], in the order they ran


def fit_logistic_regression(features, labels, C, max_iter):
    """L2-regularised multinomial logistic regression (lbfgs), as lpclip fits it."""
    from sklearn.exceptions import ConvergenceWarning  # (imported here: config building never needs scikit-learn)
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported per trial instead (Trial.converged)
        return LogisticRegression(solver="lbfgs", C=C, max_iter=max_iter).fit(features, labels)


def accuracy(classifier, features, labels):
    """Top-1 accuracy in % of a fitted classifier."""
    return 100.0 * float(np.mean(classifier.predict(features) == labels))


def search_c(train_x, train_y, val_x, val_y, steps=8, max_iter=1000, log=print):
    """lpclip's search of C on val (module docstring); every fit at a given C runs once. Arrays are numpy."""
    fits = {}
    trials = []

    def trial(stage, log10_c):
        if log10_c not in fits:
            clf = fit_logistic_regression(train_x, train_y, 10.0 ** log10_c, max_iter)
            fits[log10_c] = (clf, accuracy(clf, val_x, val_y))
        clf, acc = fits[log10_c]
        trials.append(Trial(stage, 10.0 ** log10_c, acc, bool(np.all(clf.n_iter_ < max_iter))))
        log(f"  C = {10.0 ** log10_c:.4g} ({stage}): val accuracy {acc:.2f}%")
        return acc

    coarse = [trial("coarse", math.log10(c)) for c in COARSE_C]
    chosen = math.log10(COARSE_C[int(np.argmax(coarse))])
    left, right = chosen - 1.0, chosen + 1.0
    for step in range(steps):
        acc_left, acc_right = trial(f"fine {step + 1}", left), trial(f"fine {step + 1}", right)
        middle = 0.5 * (left + right)
        if acc_left < acc_right:
            chosen, left = right, middle
        else:
            chosen, right = left, middle
    clf, acc = fits[chosen]
    return SearchResult(10.0 ** chosen, clf, acc, trials)


def cap_per_class(labels, cap, seed):
    """Indices keeping at most ``cap`` items per label (a seeded random choice where a label has more)."""
    rng = np.random.default_rng(max(seed, 0))
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep.extend(members if len(members) <= cap else rng.choice(members, size=cap, replace=False))
    return np.sort(np.asarray(keep, dtype=np.int64))


def classifier_tensors(classifier, num_classes):
    """(weight [n_cls, E], bias [n_cls]) fp32 of a fitted classifier whose classes are 0..n_cls-1.

    Two classes: scikit-learn keeps one row w (P(class 1) = sigmoid(w x + b)); the rows [0, w] and biases [0, b]
    give the same probabilities under softmax.
    """
    if not np.array_equal(classifier.classes_, np.arange(num_classes)):
        missing = sorted(set(range(num_classes)) - set(classifier.classes_.tolist()))
        raise ValueError(f"The linear probe needs training images of every class; labels {missing} have none.")
    weight = torch.as_tensor(classifier.coef_, dtype=torch.float32)  # [n_cls, E] or [1, E]
    bias = torch.as_tensor(classifier.intercept_, dtype=torch.float32)  # [n_cls] or [1]
    if num_classes == 2:
        weight, bias = torch.cat([torch.zeros_like(weight), weight]), torch.cat([torch.zeros_like(bias), bias])
    return weight, bias


# -- the model ---------------------------------------------------------------------------------------------------------
def label_rows(trained, evaluated):
    """Row of the fitted classifier for each evaluated class name (label order); one clear error when one is absent."""
    if list(trained) == list(evaluated):
        return torch.arange(len(evaluated))
    index = {}
    for row, name in enumerate(trained):
        index[name] = -1 if name in index else row  # -1: the name is ambiguous
    missing = [name for name in evaluated if index.get(name, -1) < 0]
    if missing:
        raise ValueError(
            f"LinearProbeCLIP has no weights for {len(missing)} of the {len(evaluated)} evaluated classes (e.g. "
            f"{', '.join(repr(n) for n in missing[:3])}): it was fitted on {len(trained)} classes without them, and "
            f"a linear probe cannot classify classes without training images (base-to-novel 'new', cross-dataset "
            f"targets); evaluate it on the classes it was trained on or a subset of them (e.g. ImageNet -> "
            f"ImageNet-A/-R).")
    return torch.tensor([index[name] for name in evaluated])


class LinearProbeHead(nn.Module):
    """``logits = features @ weight.T + bias`` over the fitted classes, mapped by name onto the evaluated classes.

    ``weight`` [n_fit, E] and ``bias`` [n_fit] are buffers (fitted, never trained by gradient); the fitted class
    names and C are saved with them (``get_extra_state``). Loading a checkpoint fitted on more classes (ImageNet
    -> ImageNet-A) resizes the buffers and selects the evaluated classes' rows.
    """

    def __init__(self, classnames, embed_dim):
        super().__init__()
        self.classnames = list(classnames)  # the evaluated label space, in label order
        self.fitted_classnames = list(classnames)
        self.C = float("nan")
        self.register_buffer("weight", torch.zeros(len(classnames), embed_dim))  # [n_fit, E]
        self.register_buffer("bias", torch.zeros(len(classnames)))  # [n_fit]
        self.register_buffer("rows", torch.arange(len(classnames)), persistent=False)  # [n_cls] rows of weight

    def set_classifier(self, weight, bias, C):
        """Install a classifier fitted on the evaluated classes."""
        self.weight, self.bias = weight.to(self.weight.device), bias.to(self.bias.device)
        self.fitted_classnames, self.C = list(self.classnames), float(C)
        self.rows = torch.arange(len(self.classnames), device=self.weight.device)

    def get_extra_state(self):
        return {"classnames": self.fitted_classnames, "C": self.C}

    def set_extra_state(self, state):
        self.fitted_classnames, self.C = list(state["classnames"]), float(state["C"])
        self.rows = label_rows(self.fitted_classnames, self.classnames).to(self.weight.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("weight", "bias"):  # the checkpoint's class count, not the evaluated one
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, features):
        """features [B, E] -> logits [B, n_cls]."""
        return features.float() @ self.weight[self.rows].t() + self.bias[self.rows]


class LinearProbeCLIPModel(nn.Module):
    """The frozen CLIP image encoder followed by the linear probe; ``forward(image) -> logits [B, n_cls]``."""

    def __init__(self, backbone, head):
        super().__init__()
        self.image_encoder = backbone.image_encoder
        self.head = head

    def image_features(self, image):
        """The image encoder's output [B, E], not normalised (what lpclip fits on)."""
        return self.image_encoder(image)

    def forward(self, image):
        return self.head(self.image_features(image))


# -- the trainer -------------------------------------------------------------------------------------------------------
@TRAINER_REGISTRY.register()
class LinearProbeCLIP(FrozenCLIPTrainer):
    DISPLAY_RANK = 80  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "LINEAR_PROBE"
    CHECKPOINT_NAME = "linear_probe"
    LEARNS = True  # its fit: evaluations load the fitted classifier

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.LINEAR_PROBE
        check_range("TRAINER.LINEAR_PROBE.C", m.C, 0.0, meaning="inverse regularisation strength; 0 = search it on val")
        check_range("TRAINER.LINEAR_PROBE.SEARCH_STEPS", m.SEARCH_STEPS, 0, meaning="fine-search rounds")
        check_range("TRAINER.LINEAR_PROBE.MAX_ITER", m.MAX_ITER, 1, meaning="lbfgs iterations per fit")

    def build_frozen_model(self, backbone):
        self.head = LinearProbeHead(self.dm.dataset.classnames, backbone.embed_dim)
        self.register_model(self.CHECKPOINT_NAME, self.head)
        return LinearProbeCLIPModel(backbone, self.head)

    def load_model(self, directory, epoch=None):
        if not directory:
            raise ValueError("LinearProbeCLIP has no classifier before it is fitted: pass --model-dir (the training "
                             "run's --output-dir) with --eval-only")
        super().load_model(directory, epoch)

    # -- features ------------------------------------------------------------------------------------------------------
    def encode(self, image):
        with self.precision.autocast():
            return self.model.image_features(image.to(self.device))  # [B, E]

    @functools.cached_property
    def encoder_identity(self):
        """What the feature cache is keyed on besides the images: backbone name, weights digest, dtype, PREC."""
        image_encoder = self.model.image_encoder
        return {"backbone": self.cfg.MODEL.BACKBONE.NAME, "weights": weights_digest(image_encoder),
                "dtype": next(image_encoder.parameters()).dtype, "prec": self.precision.prec}

    def split_features(self, split, loader):
        """(features [N, E], labels [N]) numpy arrays of a split, from the feature cache or extracted."""
        dataset = self.dm.dataset
        features, labels = cached_image_features(self.encode, loader, split, cache_folder(self.cfg, dataset),
                                                 self.encoder_identity, getattr(dataset, "dataset_dir", ""))
        return features.numpy(), labels.numpy()

    def transforms_used(self):
        """The features of train_x are extracted under the test-time transform (``train_features``)."""
        used = super().transforms_used()
        return {"train": used["test"], "test": used["test"]}

    def train_features(self):
        """Features of train_x under the test-time transform (lpclip extracts them without augmentation)."""
        from dassl.data.data_manager import build_data_loader
        from dassl.data.transforms import build_transform

        loader = build_data_loader(self.cfg, sampler_type="SequentialSampler", data_source=self.dm.dataset.train_x,
                                   batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                                   tfm=build_transform(self.cfg, is_train=False), is_train=False, split="train_x")
        return self.split_features("train", loader)

    def val_features(self):
        """Features of the val split, at most min(K, 4) images per class (lpclip's val shots)."""
        if self.val_loader is None:
            raise ValueError(f"LinearProbeCLIP searches C on the val split, but {self.cfg.DATASET.NAME} has none: set "
                             f"TRAINER.LINEAR_PROBE.C to a positive value to fit without a search")
        features, labels = self.split_features("val", self.val_loader)
        shots = self.cfg.DATASET.NUM_SHOTS
        if shots >= 1:
            keep = cap_per_class(labels, min(shots, MAX_VAL_SHOTS), self.cfg.SEED)
            features, labels = features[keep], labels[keep]
        return features, labels

    # -- "training" ----------------------------------------------------------------------------------------------------
    def fit(self):
        """Search C (or take TRAINER.LINEAR_PROBE.C), fit, install the classifier and write the search to
        ``OUTPUT_DIR/c_search.csv``; the engine then saves the classifier as epoch 1."""
        m = self.method_cfg
        train_x, train_y = self.train_features()
        print(f"Linear probe on {train_x.shape[0]} training features of dimension {train_x.shape[1]}")
        if m.C > 0:
            classifier = fit_logistic_regression(train_x, train_y, m.C, m.MAX_ITER)
            val_accuracy = accuracy(classifier, *self.val_features()) if self.val_loader is not None else math.nan
            converged = bool(np.all(classifier.n_iter_ < m.MAX_ITER))
            result = SearchResult(m.C, classifier, val_accuracy, [Trial("fixed", m.C, val_accuracy, converged)])
        else:
            val_x, val_y = self.val_features()
            print(f"Searching C on {val_x.shape[0]} val features (coarse grid, then {m.SEARCH_STEPS} fine rounds)")
            result = search_c(train_x, train_y, val_x, val_y, m.SEARCH_STEPS, m.MAX_ITER)
        unconverged = sum(not t.converged for t in result.trials)
        if unconverged:
            print(f"Note: {unconverged} of {len(result.trials)} fits stopped at MAX_ITER {m.MAX_ITER} iterations")
        print(f"Chosen C = {result.C:.4g} (val accuracy {result.val_accuracy:.2f}%)")
        self.head.set_classifier(*classifier_tensors(result.classifier, len(self.dm.dataset.classnames)), result.C)
        write_search(result, os.path.join(self.output_dir, SEARCH_FILE))


def write_search(result, path):
    """The search as CSV: one row per trial (stage, C, val accuracy, converged), then the chosen C."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stage", "C", "val_accuracy", "converged"])
        for t in result.trials:
            writer.writerow([t.stage, f"{t.C:.6g}", f"{t.val_accuracy:.4f}", int(t.converged)])
        writer.writerow(["chosen", f"{result.C:.6g}", f"{result.val_accuracy:.4f}", ""])
