"""Output-directory trees of every protocol: one directory per experimental factor, so runs never collide.

The trees follow the ecosystem (CoOp / CoCoOp / MaPLe scripts) so its tools keep working::

    <root>/base2new/<split>/<dataset>/shots_<K>/<trainer>/<cfg>/seed<S>
        split = train_base | test_base | test_new | test_all | test_ratio_<r>
    <root>/<source>/<trainer>/<cfg>_<K>shots/seed<S>                          cross-dataset / DG training
    <root>/evaluation/<trainer>/<cfg>_<K>shots/<target>/seed<S>               its evaluations (source imagenet)
    <root>/evaluation/<trainer>/<cfg>_<K>shots_from_<source>/<target>/seed<S> (any other source)
    <root>/few_shot/<dataset>/<trainer>/<cfg>_<K>shots/seed<S>                few-shot (all classes)
"""
import re
from pathlib import Path

# Dataset names are the stems of configs/datasets/<name>.yaml, in the order the papers list them.
BASE2NEW_DATASETS = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)
CROSS_DATASET_TARGETS = BASE2NEW_DATASETS[1:]
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
DEFAULT_SOURCE = "imagenet"
FEW_SHOT_SHOTS = (1, 2, 4, 8, 16)
OPEN_WORLD_RATIOS = (100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 0)
# The folders at the top of an output tree (cross-dataset sources are found from evaluation/), each with the glob,
# below it, of the parents of its seed<S> run directories.
SEED_PARENTS = {"base2new": "*/*/shots_*/*/*", "evaluation": "*/*/*", "few_shot": "*/*/*"}
PROTOCOL_FOLDERS = tuple(SEED_PARENTS)
BASE2NEW_SHOTS = 16

SEED_DIR = re.compile(r"^seed(?P<seed>-?\d+)$")
SHOTS_DIR = re.compile(r"^shots_(?P<shots>\d+)$")
CFG_SHOTS_DIR = re.compile(r"^(?P<cfg>.+)_(?P<shots>\d+)shots(?:_from_(?P<source>.+))?$")
RATIO_SPLIT = re.compile(r"^test_ratio_(?P<ratio>\d+)$")


def trains(trainer):
    """Whether ``trainer`` learns anything (``trainers.lookup.learns``: its class's ``LEARNS``). The trainers, and
    so torch, are imported on the first call only: the rest of this module needs neither."""
    from trainers.lookup import learns  # (importing the package registers every trainer)

    return learns(trainer)


def seed_dir(seed):
    """Name of a seed directory: ``seed<S>``."""
    return f"seed{seed}"


def base2new_dir(root, split, dataset, shots, trainer, cfg, seed):
    """``<root>/base2new/<split>/<dataset>/shots_<K>/<trainer>/<cfg>/seed<S>``."""
    return Path(root, "base2new", split, dataset, f"shots_{shots}", trainer, cfg, seed_dir(seed))


def ratio_split(ratio):
    """Split name of the open-world evaluation at ratio ``r`` (percent of base classes): ``test_ratio_<r>``."""
    return f"test_ratio_{ratio}"


def source_runs_dir(root, source, trainer, cfg, shots):
    """Parent of the seed directories of cross-dataset / DG training: ``<root>/<source>/<trainer>/<cfg>_<K>shots``."""
    return Path(root, source, trainer, f"{cfg}_{shots}shots")


def source_dir(root, source, trainer, cfg, shots, seed):
    """Training directory of a cross-dataset / DG model: ``<root>/<source>/<trainer>/<cfg>_<K>shots/seed<S>``."""
    return source_runs_dir(root, source, trainer, cfg, shots) / seed_dir(seed)


def evaluation_dir(root, trainer, cfg, shots, source, target, seed):
    """Evaluation of a ``source``-trained model on ``target`` (ecosystem path when source is ImageNet)."""
    suffix = "" if source == DEFAULT_SOURCE else f"_from_{source}"
    return Path(root, "evaluation", trainer, f"{cfg}_{shots}shots{suffix}", target, seed_dir(seed))


def few_shot_dir(root, dataset, trainer, cfg, shots, seed):
    """``<root>/few_shot/<dataset>/<trainer>/<cfg>_<K>shots/seed<S>``."""
    return Path(root, "few_shot", dataset, trainer, f"{cfg}_{shots}shots", seed_dir(seed))


def dataset_order(names):
    """Sort dataset names: the papers' order first, then any other dataset alphabetically."""
    known = BASE2NEW_DATASETS + DG_TARGETS
    return sorted(set(names), key=lambda n: (known.index(n), "") if n in known else (len(known), n))
