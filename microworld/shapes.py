"""Vectorised silhouettes of the micro-world shapes.

Each shape is an implicit region in object-local coordinates (u, v), where the object's radius is 1,
u points right and v points down. `shape_masks` evaluates a whole batch at once, one NumPy
expression per shape kind, so rendering never loops over pixels in Python.
"""

import numpy as np

from .vocabulary import SHAPES


def _regular_polygon(u, v, sides, rotation, apothem):
    """Inside test for a regular polygon whose inscribed circle has radius `apothem`."""
    angle = np.arctan2(v, u) - rotation
    sector = 2 * np.pi / sides
    local = np.mod(angle, sector) - sector / 2
    return np.hypot(u, v) * np.cos(local) <= apothem


def _circle(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.78


def _triangle(u, v):
    # Apex up: v points down, so the apex is at angle -90 degrees; a vertex sits at rotation + sector/2.
    return _regular_polygon(u, v + 0.15, 3, -np.pi / 2 - np.pi / 3, 0.55)


def _star(u, v):
    angle = np.arctan2(v, u) + np.pi / 2  # 0 at the top point
    phase = np.mod(angle * 5 / (2 * np.pi), 1.0)  # 0..1 between two points
    outline = 0.42 + 0.58 * np.abs(2 * phase - 1) ** 1.6  # 1 at the points, 0.42 at the notches
    return np.hypot(u, v) <= outline


def _cross(u, v):
    arm = 0.32
    return ((np.abs(u) <= arm) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= arm) & (np.abs(u) <= 0.95))


def _heart(u, v):
    x, y = u * 1.15, -(v * 1.15) + 0.2  # y up, shifted so the heart is centred
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


def _diamond(u, v):
    return np.abs(u) * 1.25 + np.abs(v) <= 1.0


def _hexagon(u, v):
    return _regular_polygon(u, v, 6, 0.0, 0.86)


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.52 ** 2)


def _moon(u, v):
    return (u * u + v * v <= 1.0) & ((u - 0.55) ** 2 + (v + 0.15) ** 2 >= 0.8 ** 2)


_SHAPE_FUNCTIONS = (_circle, _square, _triangle, _star, _cross, _heart, _diamond, _hexagon, _ring, _moon)
assert len(_SHAPE_FUNCTIONS) == len(SHAPES)


def shape_masks(shape_ids, u, v):
    """Boolean silhouettes for a batch.

    Args:
        shape_ids: int array [N], indices into `SHAPES`.
        u, v: float arrays [N, H, W], object-local coordinates (radius 1).
    Returns:
        bool array [N, H, W], True inside the shape.
    """
    masks = np.zeros(u.shape, dtype=bool)  # [N, H, W]
    for shape_id, function in enumerate(_SHAPE_FUNCTIONS):
        rows = np.flatnonzero(shape_ids == shape_id)
        if rows.size:
            masks[rows] = function(u[rows], v[rows])
    return masks
