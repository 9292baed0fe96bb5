"""Zero-shot quality figures of a micro CLIP: held-out pre-training images and every micro
benchmark task (all classes, and the CoOp base/novel halves with their harmonic mean)."""

import math

from .benchmark import MICRO_TASKS, render_split
from .pretraining import COLOUR_SHAPE_CLASSNAMES, held_out_set
from .vocabulary import COLOURS, SHAPES
from .zeroshot import zero_shot_accuracy


def held_out_zero_shot(model, seed, n, image_size=32):
    """Zero-shot accuracy (%) on `n` held-out pre-training images: over the 100 colour-shape
    classes ("held_out_all_styles"), the same on the clean-style images ("held_out_clean"), and on
    those clean images each attribute alone: 10 "<colour> shape" prompts ("clean_colour_only") and
    10 shape names ("clean_shape_only")."""
    results = {}
    for key, clean_only in (("held_out_all_styles", False), ("held_out_clean", True)):
        images, labels = held_out_set(seed, n, image_size, clean_only)
        results[key] = round(zero_shot_accuracy(model, images, labels, COLOUR_SHAPE_CLASSNAMES), 2)
    colours, shapes = labels // len(SHAPES), labels % len(SHAPES)  # of the clean images
    results["clean_colour_only"] = round(zero_shot_accuracy(model, images, colours, [f"{c} shape" for c in COLOURS]), 2)
    results["clean_shape_only"] = round(zero_shot_accuracy(model, images, shapes, list(SHAPES)), 2)
    return results


def harmonic_mean(a, b):
    """HM of base and novel accuracy, as dassl.metrics.harmonic_mean (the micro world imports nothing of the
    project)."""
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def task_zero_shot(model, task):
    """Zero-shot accuracy (%) on a task's test split: all classes, base classes only (first
    ceil(n/2) labels, classified among base names), novel classes only, and HM(base, novel)."""
    images, labels = render_split(task, "test")
    names = task.classnames
    num_base = math.ceil(len(names) / 2)
    base = labels < num_base
    result = {
        "classes": len(names),
        "chance": round(100.0 / len(names), 2),
        "all": zero_shot_accuracy(model, images, labels, names),
        "base": zero_shot_accuracy(model, images[base], labels[base], names[:num_base]),
        "novel": zero_shot_accuracy(model, images[~base], labels[~base] - num_base, names[num_base:]),
    }
    result["hm"] = harmonic_mean(result["base"], result["novel"])
    return {key: round(value, 2) if isinstance(value, float) else value for key, value in result.items()}


def benchmark_zero_shot(model):
    """`{task name: task_zero_shot(...)}` for every task of the micro benchmark."""
    return {task.name: task_zero_shot(model, task) for task in MICRO_TASKS}
