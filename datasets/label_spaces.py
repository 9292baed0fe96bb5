"""Label spaces: which classes a run sees, and which of them are base.

* base/new (`DATASET.SUBSAMPLE_CLASSES`): `subsample_classes` (base = first ceil(n/2) sorted labels,
  new = the rest), relabelled from 0;
* the open-world ratio space (`DATASET.USE_RATIO`, `SUBSAMPLE_RATIO`): `open_world_counts`,
  `sample_open_world_labels`;
* `select_label_space` applies the config to a dataset's three splits and returns how many leading labels
  of the result are base classes; the dataset keeps that count (`num_base_classes`) for the evaluator.
"""

import hashlib
import json
import math
import random

from dassl.config import register_config
from dassl.data.datasets import Datum

from .splits import Entry

SUBSAMPLE_CHOICES = ("all", "base", "new")


@register_config
def add_dataset_protocol_config(cfg):
    """Config keys of the label-space protocols (base/new and open-world ratio)."""
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # label space: "all" | "base" (first ceil(n/2) labels) | "new" (the rest)
    cfg.DATASET.USE_RATIO = False  # open-world test: ceil(n/2) classes, SUBSAMPLE_RATIO % of them base (needs SUBSAMPLE_CLASSES "all")
    cfg.DATASET.SUBSAMPLE_RATIO = 100  # open-world r: percent (0-100) of the evaluated label space taken from base classes


def relabel(item, label):
    """A copy of `item` (Entry or Datum) carrying `label`."""
    if isinstance(item, Entry):
        return item._replace(label=label)
    return Datum(impath=item.impath, label=label, domain=item.domain, classname=item.classname)


def keep_classes(selected, *splits):
    """Keep the items of `selected` labels in every split, relabelled 0.. in `selected` order."""
    relabeler = {label: new_label for new_label, label in enumerate(selected)}
    return [
        [relabel(item, relabeler[item.label]) for item in items if item.label in relabeler]
        for items in splits
    ]


def base_half_size(num_classes):
    """How many of n classes are base in the base/new split: ceil(n/2) (the ecosystem's rule)."""
    return math.ceil(num_classes / 2)


def base_novel_labels(labels):
    """Split a label set into (base, novel): sorted, base = first ceil(n/2), novel = the rest."""
    labels = sorted(set(labels))
    num_base = base_half_size(len(labels))
    return labels[:num_base], labels[num_base:]


def subsample_classes(*args, subsample="all"):
    """Ecosystem API: restrict every list in `args` to the base or new classes of `args[0]`
    (relabelled from 0); "all" returns `args` unchanged."""
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(
            f"DATASET.SUBSAMPLE_CLASSES must be one of {list(SUBSAMPLE_CHOICES)}, got {subsample!r}"
        )
    if subsample == "all":
        return args
    base, novel = base_novel_labels(item.label for item in args[0])
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    return keep_classes(base if subsample == "base" else novel, *args)


def open_world_counts(num_classes, ratio):
    """(#base, #novel) classes of the open-world label space for n classes and ratio r (percent).

    The space has m = ceil(n/2) classes; floor(r * m / 100) are base (the released BMIP code's
    rule) and the rest novel. Clamp: when more novel classes are asked for than exist (odd n: n - m =
    m - 1 novel classes), all novel classes are taken and base classes fill the remaining slots.
    """
    if not 0 <= ratio <= 100:
        raise ValueError(f"DATASET.SUBSAMPLE_RATIO must lie in [0, 100] (percent), got {ratio}")
    m = base_half_size(num_classes)  # as many classes as the base half
    available_novel = num_classes - m  # the novel half
    num_base = math.floor(ratio * m / 100 + 1e-9)  # (the epsilon keeps e.g. 29 * 100 / 100 from rounding down)
    num_novel = m - num_base
    if num_novel > available_novel:
        num_novel = available_novel
        num_base = m - num_novel
    return num_base, num_novel


def open_world_rng(classnames, ratio, seed):
    """A private RNG determined by (class names in label order, ratio, seed) only."""
    key = json.dumps([list(classnames), ratio, seed]).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def sample_open_world_labels(labels, classnames, ratio, seed):
    """The open-world label space: sorted original labels, base classes first.

    `labels` are the dataset's labels, `classnames` its names in label order. Base and novel
    classes are drawn without replacement from the base / novel halves (`base_novel_labels`)
    by `open_world_rng`, so the result is the same for the same dataset, ratio and seed and
    does not touch the global RNG. Returns `(selected_labels, num_base)`.
    """
    base, novel = base_novel_labels(labels)
    num_base, num_novel = open_world_counts(len(base) + len(novel), ratio)
    rng = open_world_rng(classnames, ratio, seed)
    chosen_base = sorted(rng.sample(base, num_base))
    chosen_novel = sorted(rng.sample(novel, num_novel))
    return chosen_base + chosen_novel, num_base


def classnames_by_label(items):
    """Class names of `items` ordered by label."""
    names = {}
    for item in items:
        names.setdefault(item.label, item.classname)
    return [names[label] for label in sorted(names)]


def select_label_space(cfg, train, val, test):
    """Apply DATASET.SUBSAMPLE_CLASSES / USE_RATIO / SUBSAMPLE_RATIO to the three splits.

    * "base" / "new": the ecosystem's `subsample_classes`.
    * "all" or "new" with USE_RATIO: the open-world ratio space (`sample_open_world_labels`, seeded
      with cfg.SEED); every test image of a selected class is kept, relabelled 0.. (base first).
      ("new" is how the released BMIP scripts ask for it: their test script passes "new".)
    * "base" with USE_RATIO trains on the base classes (the ratio applies to the evaluation).
    Returns `(train, val, test, num_base)`: the restricted splits, and how many leading labels of
    their label space are base classes (ceil(n/2) for "all", all of them for "base", none for "new").
    """
    subsample = cfg.DATASET.SUBSAMPLE_CLASSES
    if cfg.DATASET.USE_RATIO and subsample in ("all", "new"):
        classnames = classnames_by_label(train)
        selected, num_base = sample_open_world_labels(
            [item.label for item in train], classnames, cfg.DATASET.SUBSAMPLE_RATIO, cfg.SEED
        )
        print(
            f"OPEN-WORLD LABEL SPACE: {num_base} base + {len(selected) - num_base} novel classes "
            f"(ratio {cfg.DATASET.SUBSAMPLE_RATIO}%, seed {cfg.SEED})"
        )
        train, val, test = keep_classes(selected, train, val, test)
    else:
        if cfg.DATASET.USE_RATIO:
            print("DATASET.USE_RATIO: training on the base classes; the ratio applies to the evaluation")
        train, val, test = subsample_classes(train, val, test, subsample=subsample)
        num_classes = len(classnames_by_label(train))
        num_base = {"all": base_half_size(num_classes), "base": num_classes, "new": 0}[subsample]
    return list(train), list(val), list(test), num_base
