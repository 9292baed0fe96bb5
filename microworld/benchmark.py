"""The micro benchmark: downstream classification tasks in shifted domains of the micro world.

Each task fixes a class set (combinations of attribute words, e.g. "red star") and a rendering
style/severity; every other attribute (size, position, background, jitter) varies freely. Splits
are a pure function of the task, so the files written by `datasets/micro_world.py` and the
in-memory images used to measure zero-shot accuracy are identical.
"""

import os
import shutil
from dataclasses import dataclass

import numpy as np

from .render import render_scenes
from .scenes import sample_scenes
from .styles import STYLES, STYLES_WITHOUT_BACKGROUND
from .vocabulary import ATTRIBUTES, COLOURS, PATTERNS, SHAPES

SPLITS = ("train", "val", "test")
# Images per class in each split: 16-shot training needs >= 16 train images, val gets min(16, 4).
IMAGES_PER_CLASS = {"train": 20, "val": 5, "test": 30}
IMAGE_SIZE = 32


@dataclass(frozen=True)
class MicroTask:
    """One downstream dataset.

    name: the registered dataset name (also the split-file suffix), e.g. "MicroSketch".
    folder: its folder under `<DATASET.ROOT>/micro_world/`.
    style, severity: the rendering domain (see microworld.styles).
    classes: per class, a tuple of (attribute name, value index) pairs, in label order.
    seed: seeds the pixels of every split.
    """

    name: str
    folder: str
    style: str
    severity: float
    classes: tuple
    seed: int

    @property
    def classnames(self):
        return [class_name(dict(attributes)) for attributes in self.classes]


def class_name(attributes):
    """Readable class name of an attribute combination: {"colour": 0, "shape": 3} -> "red star",
    {"shape": 3, "pattern": 1} -> "star on a striped background"."""
    words = []
    if "colour" in attributes:
        words.append(COLOURS[attributes["colour"]])
    words.append(SHAPES[attributes["shape"]])
    name = " ".join(words)
    if "pattern" in attributes:
        name += f" on a {PATTERNS[attributes['pattern']]} background"
    return name


def colour_shape_classes(num_classes, seed, colours=range(len(COLOURS))):
    """`num_classes` distinct (colour, shape) combinations drawn with `seed`, in draw order."""
    combos = [(("colour", c), ("shape", s)) for c in colours for s in range(len(SHAPES))]
    order = np.random.default_rng(seed).permutation(len(combos))[:num_classes]
    return tuple(combos[i] for i in order)


def shape_pattern_classes(num_classes, seed):
    """`num_classes` distinct (shape, non-plain pattern) combinations drawn with `seed`."""
    combos = [(("shape", s), ("pattern", p)) for s in range(len(SHAPES)) for p in range(1, len(PATTERNS))]
    order = np.random.default_rng(seed).permutation(len(combos))[:num_classes]
    return tuple(combos[i] for i in order)


_VISIBLE_ON_PAPER = [c for c in range(len(COLOURS)) if COLOURS[c] != "white"]

MICRO_TASKS = (
    MicroTask("MicroClean", "clean", "clean", 0.0, colour_shape_classes(30, seed=11), seed=101),
    MicroTask("MicroSketch", "sketch", "sketch", 0.8, colour_shape_classes(24, seed=12, colours=_VISIBLE_ON_PAPER), seed=102),
    MicroTask("MicroNoisy", "noisy", "noisy", 0.7, colour_shape_classes(24, seed=13), seed=103),
    MicroTask("MicroRetro", "retro", "retro", 1.0, colour_shape_classes(24, seed=14), seed=104),
    MicroTask("MicroNight", "night", "night", 0.5, shape_pattern_classes(24, seed=15), seed=105),
)
TASKS_BY_NAME = {task.name: task for task in MICRO_TASKS}


def render_split(task, split):
    """Images and labels of one split of a task.

    Returns:
        images uint8 [N, 32, 32, 3], labels int [N] (class-major: all images of label 0 first).
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split '{split}'; choose from {list(SPLITS)}.")
    if task.style not in STYLES:
        raise ValueError(f"Task {task.name} uses unknown style '{task.style}'; choose from {list(STYLES)}.")
    per_class = IMAGES_PER_CLASS[split]
    labels = np.repeat(np.arange(len(task.classes)), per_class)  # [N]
    fixed = {}
    for name in ATTRIBUTES:
        values = [dict(attributes).get(name) for attributes in task.classes]
        if all(value is not None for value in values):
            fixed[name] = np.asarray(values)[labels]
    if task.style in STYLES_WITHOUT_BACKGROUND:
        fixed.setdefault("pattern", 0)
    rng = np.random.default_rng([task.seed, SPLITS.index(split)])
    scenes = sample_scenes(rng, len(labels), **fixed)
    return render_scenes(scenes, rng, task.style, task.severity, IMAGE_SIZE), labels


def split_listing(task):
    """`{split: [(relpath, label, classname)]}` of the task's image files, in render order
    (relpaths relative to the task's image folder, e.g. "red_star/test_007.png")."""
    names = task.classnames
    listing = {}
    for split in SPLITS:
        per_class = IMAGES_PER_CLASS[split]
        listing[split] = [(f"{names[label].replace(' ', '_')}/{split}_{index:03d}.png", label, names[label])
                          for label in range(len(names)) for index in range(per_class)]
    return listing


def export_task(task, image_dir):
    """Render every split of `task` as PNG files under `image_dir` (created atomically: files are
    written to a private temporary folder that is renamed into place, so concurrent runs never see a
    half-written folder, and that is removed when writing fails, e.g. on a full disk). Returns
    `split_listing(task)`."""
    from PIL import Image

    listing = split_listing(task)
    staging = f"{image_dir.rstrip(os.sep)}.tmp{os.getpid()}"
    try:
        for split in SPLITS:
            images, _ = render_split(task, split)
            for image, (relpath, _, _) in zip(images, listing[split]):
                path = os.path.join(staging, relpath)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(image).save(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.rename(staging, image_dir)
    except OSError:  # another process finished first; its files are identical
        if not os.path.isdir(image_dir):
            raise
        shutil.rmtree(staging)
    return listing
