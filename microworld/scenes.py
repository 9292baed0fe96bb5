"""Random scene descriptions: the discrete attributes a caption can name plus the continuous
nuisance parameters (exact placement, tint, background shade) that it cannot."""

from dataclasses import dataclass

import numpy as np

from .vocabulary import ATTRIBUTES, COLOURS, PATTERNS, POSITIONS, SHAPES, SIZES

_NUM_VALUES = {"shape": len(SHAPES), "colour": len(COLOURS), "size": len(SIZES),
               "position": len(POSITIONS), "pattern": len(PATTERNS)}


@dataclass
class SceneBatch:
    """N scenes, one object each.

    attributes: int64 [N, 5], columns in the order of `vocabulary.ATTRIBUTES`.
    offset: float32 [N, 2], jitter of the object centre (fraction of the image side).
    radius_scale: float32 [N], multiplies the nominal radius of the object's size word.
    rotation: float32 [N], radians.
    tint: float32 [N, 3], added to the colour word's RGB (0-1 scale).
    background: float32 [N, 3], background base colour (0-1 scale).
    pattern_period: float32 [N], pattern period as a fraction of the image side.
    pattern_phase: float32 [N, 2], pattern phase in periods.
    """

    attributes: np.ndarray
    offset: np.ndarray
    radius_scale: np.ndarray
    rotation: np.ndarray
    tint: np.ndarray
    background: np.ndarray
    pattern_period: np.ndarray
    pattern_phase: np.ndarray

    def __len__(self):
        return self.attributes.shape[0]

    def column(self, name):
        """Int array [N] of one attribute, e.g. `batch.column("shape")`."""
        return self.attributes[:, ATTRIBUTES.index(name)]


def sample_scenes(rng, n, **fixed):
    """Draw `n` random scenes.

    Args:
        rng: `numpy.random.Generator`; the only source of randomness, so a seed fixes the scenes.
        n: number of scenes.
        **fixed: optional attribute values by name (`shape=`, `colour=`, `size=`, `position=`,
            `pattern=`), each an int or an int array [n]; unnamed attributes are uniform.
    Returns:
        SceneBatch of length n.
    """
    unknown = sorted(set(fixed) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"Unknown scene attribute(s) {unknown}; choose from {list(ATTRIBUTES)}.")
    columns = []
    for name in ATTRIBUTES:
        if name in fixed:
            values = np.broadcast_to(np.asarray(fixed[name], dtype=np.int64), (n,)).copy()
            if values.min(initial=0) < 0 or values.max(initial=0) >= _NUM_VALUES[name]:
                raise ValueError(f"Attribute '{name}' must lie in [0, {_NUM_VALUES[name]}); got {values.min()}..{values.max()}.")
        else:
            values = rng.integers(0, _NUM_VALUES[name], size=n)
        columns.append(values)
    # Background: desaturated mid-tone so white, black and every hue stay visible on it.
    grey = rng.uniform(0.35, 0.65, size=(n, 1))
    background = np.clip(grey + rng.normal(0.0, 0.05, size=(n, 3)), 0.0, 1.0)
    return SceneBatch(
        attributes=np.stack(columns, axis=1),
        offset=rng.uniform(-0.05, 0.05, size=(n, 2)).astype(np.float32),
        radius_scale=rng.uniform(0.88, 1.12, size=n).astype(np.float32),
        rotation=rng.uniform(-0.25, 0.25, size=n).astype(np.float32),
        tint=rng.normal(0.0, 0.05, size=(n, 3)).astype(np.float32),
        background=background.astype(np.float32),
        pattern_period=rng.uniform(0.16, 0.28, size=n).astype(np.float32),
        pattern_phase=rng.uniform(0.0, 1.0, size=(n, 2)).astype(np.float32),
    )
