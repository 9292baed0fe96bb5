"""Turn a SceneBatch into RGB images: geometry, background patterns, style, anti-aliasing."""

import numpy as np

from .scenes import SceneBatch
from .shapes import shape_masks
from .styles import apply_style
from .vocabulary import COLOUR_RGB

SUPERSAMPLING = 2  # render at 2x and average 2x2 blocks, which anti-aliases edges

# Nominal object centre (x, y) for each entry of POSITIONS, as a fraction of the image side.
_POSITION_CENTRES = np.array([[0.5, 0.5], [0.28, 0.5], [0.72, 0.5], [0.5, 0.28], [0.5, 0.72]], dtype=np.float32)
# Nominal radius for each entry of SIZES, as a fraction of the image side.
_SIZE_RADII = np.array([0.15, 0.25], dtype=np.float32)
_COLOURS = np.array(COLOUR_RGB, dtype=np.float32) / 255.0  # [10, 3]


def _pattern_masks(scenes, x, y):
    """Second-colour regions of each background pattern: bool [N, H, W] (plain: none)."""
    pattern = scenes.column("pattern")[:, None, None]  # [N, 1, 1]
    period = scenes.pattern_period[:, None, None]
    px = x / period + scenes.pattern_phase[:, 0, None, None]  # [N, H, W] in periods
    py = y / period + scenes.pattern_phase[:, 1, None, None]
    vertical = (scenes.pattern_phase[:, 1] < 0.5)[:, None, None]
    stripes = np.where(vertical, np.mod(px, 1.0), np.mod(py, 1.0)) < 0.5
    dots = (np.mod(px, 1.0) - 0.5) ** 2 + (np.mod(py, 1.0) - 0.5) ** 2 < 0.28 ** 2
    checks = (np.floor(px) + np.floor(py)) % 2 == 0
    return ((pattern == 1) & stripes) | ((pattern == 2) & dots) | ((pattern == 3) & checks)


def render_scenes(scenes: SceneBatch, rng, style="clean", severity=0.0, size=32):
    """Render scenes as images.

    Args:
        scenes: the SceneBatch to draw (N scenes).
        rng: numpy Generator used by the style (noise, pen breaks); seed it for reproducible pixels.
        style: one of `styles.STYLES`.
        severity: style strength in [0, 1].
        size: output side in pixels.
    Returns:
        uint8 array [N, size, size, 3].
    """
    n = len(scenes)
    side = size * SUPERSAMPLING
    grid = (np.arange(side, dtype=np.float32) + 0.5) / side  # [side] pixel centres in [0, 1]
    x, y = grid[None, None, :], grid[None, :, None]  # [1, 1, side], [1, side, 1]

    centre = _POSITION_CENTRES[scenes.column("position")] + scenes.offset  # [N, 2]
    radius = _SIZE_RADII[scenes.column("size")] * scenes.radius_scale  # [N]
    dx = (x - centre[:, 0, None, None]) / radius[:, None, None]  # [N, side, side]
    dy = (y - centre[:, 1, None, None]) / radius[:, None, None]
    cos, sin = np.cos(scenes.rotation)[:, None, None], np.sin(scenes.rotation)[:, None, None]
    mask = shape_masks(scenes.column("shape"), cos * dx + sin * dy, -sin * dx + cos * dy)  # [N, side, side]

    base = scenes.background[:, None, None, :]  # [N, 1, 1, 3]
    second = np.where(base.mean(-1, keepdims=True) < 0.5, base + 0.22, base - 0.22)  # lighter or darker shade
    background = np.where(_pattern_masks(scenes, x, y)[..., None], second, base)  # [N, side, side, 3]
    colour = np.clip(_COLOURS[scenes.column("colour")] + scenes.tint, 0.0, 1.0)  # [N, 3]

    image = apply_style(style, background, mask, colour, rng, severity)  # [N, side, side, 3]
    image = image.reshape(n, size, SUPERSAMPLING, size, SUPERSAMPLING, 3).mean(axis=(2, 4))  # [N, size, size, 3]
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
