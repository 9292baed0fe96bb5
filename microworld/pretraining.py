"""The pre-training distribution of the micro CLIP: mostly clean renderings, with mild doses of
some styles, captioned with full and partial descriptions. Batches are a pure function of
(seed, step), so a run is reproducible and never sees the same image twice."""

from dataclasses import dataclass

import numpy as np

from .captions import caption_scenes
from .render import render_scenes
from .scenes import sample_scenes
from .styles import STYLES, STYLES_WITHOUT_BACKGROUND
from .vocabulary import COLOURS, SHAPES

# Share of each style in pre-training and the largest severity used for it. "retro" is absent:
# its palette shift is first met in the downstream tasks.
PRETRAIN_STYLE_MIX = {"clean": 0.7, "sketch": 0.1, "noisy": 0.1, "night": 0.1}
PRETRAIN_MAX_SEVERITY = 0.3


@dataclass
class CaptionedBatch:
    """images uint8 [N, H, W, 3]; attributes int [N, 5]; styles int [N] (index into STYLES);
    captions list of N str; mentions bool [N, 5]; names_style bool [N]."""

    images: np.ndarray
    attributes: np.ndarray
    styles: np.ndarray
    captions: list
    mentions: np.ndarray
    names_style: np.ndarray


def _styled_part(rng, style, count, image_size):
    """`count` captioned images in one style, as a CaptionedBatch."""
    # Scenes of a style without background are all "plain", so attributes stay truthful.
    fixed = {"pattern": 0} if style in STYLES_WITHOUT_BACKGROUND else {}
    scenes = sample_scenes(rng, count, **fixed)
    severity = float(rng.uniform(0.0, PRETRAIN_MAX_SEVERITY)) if style != "clean" else 0.0
    images = render_scenes(scenes, rng, style, severity, image_size)
    captions, mentions, names_style = caption_scenes(scenes.attributes, rng, style)
    return CaptionedBatch(images, scenes.attributes, np.full(count, STYLES.index(style)),
                          captions, mentions, names_style)


def pretraining_batch(seed, step, batch_size, image_size=32):
    """Batch number `step` of the pre-training stream with base seed `seed` (shuffled styles)."""
    rng = np.random.default_rng([seed, step])
    styles = list(PRETRAIN_STYLE_MIX)
    counts = rng.multinomial(batch_size, [PRETRAIN_STYLE_MIX[style] for style in styles])
    parts = [_styled_part(rng, style, int(count), image_size) for style, count in zip(styles, counts) if count]
    order = rng.permutation(batch_size)
    captions = [caption for part in parts for caption in part.captions]
    return CaptionedBatch(
        images=np.concatenate([part.images for part in parts])[order],
        attributes=np.concatenate([part.attributes for part in parts])[order],
        styles=np.concatenate([part.styles for part in parts])[order],
        captions=[captions[i] for i in order],
        mentions=np.concatenate([part.mentions for part in parts])[order],
        names_style=np.concatenate([part.names_style for part in parts])[order],
    )


HELD_OUT_SEED_OFFSET = 1_000_003  # held-out images come from a stream that training never draws
# The 100 "<colour> <shape>" names, colour-major: label = colour * len(SHAPES) + shape.
COLOUR_SHAPE_CLASSNAMES = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def held_out_set(seed, n, image_size=32, clean_only=False):
    """Held-out pre-training images labelled by COLOUR_SHAPE_CLASSNAMES.

    Draws `n` images of the pre-training mixture from a stream disjoint from training
    (seed + HELD_OUT_SEED_OFFSET); `clean_only` keeps only the clean-style ones.
    Returns images uint8 [M, H, W, 3] and labels int [M] (M = n, or the clean share of n).
    """
    batch = pretraining_batch(seed + HELD_OUT_SEED_OFFSET, 0, n, image_size)
    keep = batch.styles == STYLES.index("clean") if clean_only else np.ones(n, dtype=bool)
    labels = batch.attributes[keep, 1] * len(SHAPES) + batch.attributes[keep, 0]  # colour-major
    return batch.images[keep], labels
