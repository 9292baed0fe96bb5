"""Rendering styles: the domains of the micro world.

A style turns the parts of a scene (background, object silhouette, object colour) into pixels.
`severity` in [0, 1] sets how far a style moves away from the clean look, so the same style can
appear mildly in pre-training and strongly in a downstream domain.

    clean   filled object on a patterned background (the pre-training look)
    sketch  coloured pen outline on white paper, no background pattern, broken strokes
    noisy   sensor noise plus blotchy colour texture over the whole image
    retro   a different palette: hues rotated, saturation lowered, levels posterised
    night   dark, low-contrast, blue-tinted, with grain
"""

import numpy as np

STYLES = ("clean", "sketch", "noisy", "retro", "night")
# Styles that draw no background, so a background pattern is invisible and must not be captioned.
STYLES_WITHOUT_BACKGROUND = ("sketch",)


def _fill(background, mask, colour):
    """Composite the object colour [N, 3] over background [N, H, W, 3] where mask [N, H, W]."""
    return np.where(mask[..., None], colour[:, None, None, :], background)  # [N, H, W, 3]


def _outline(mask, thickness):
    """Pixels of `mask` [N, H, W] within `thickness` 4-neighbour steps of its boundary."""
    inner = mask.copy()
    for _ in range(thickness):
        shrunk = inner.copy()
        for axis in (1, 2):
            for step in (1, -1):
                shrunk &= np.roll(inner, step, axis=axis)
        inner = shrunk
    return mask & ~inner  # [N, H, W]


def _smooth_noise(rng, n, side, cells):
    """Low-frequency colour noise [n, side, side, 3] in [-1, 1], bilinear from a cells x cells lattice."""
    lattice = rng.uniform(-1.0, 1.0, size=(n, cells + 1, cells + 1, 3))  # [n, c+1, c+1, 3]
    position = np.linspace(0.0, cells, side, endpoint=False) + cells / (2 * side)  # [side]
    low = np.minimum(position.astype(int), cells - 1)
    frac = (position - low)[None, :, None, None]  # [1, side, 1, 1]
    rows = lattice[:, low] * (1 - frac) + lattice[:, low + 1] * frac  # [n, side, c+1, 3]
    frac = frac.transpose(0, 2, 1, 3)  # [1, 1, side, 1]
    return rows[:, :, low] * (1 - frac) + rows[:, :, low + 1] * frac  # [n, side, side, 3]


def _hue_rotation(angle):
    """3x3 matrix rotating RGB colours by `angle` radians about the grey axis."""
    axis = np.ones(3) / np.sqrt(3.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * np.outer(axis, axis)


def clean(background, mask, colour, rng, severity):
    """Filled object on the scene's background."""
    return _fill(background, mask, colour)


def sketch(background, mask, colour, rng, severity):
    """Outline strokes in the object's colour on white paper; severity thins and breaks them."""
    n, side = mask.shape[0], mask.shape[1]
    thickness = max(1, int(round(side / 16 * (1.0 - 0.5 * severity))))
    strokes = _outline(mask, thickness)
    strokes &= rng.uniform(size=mask.shape) >= 0.35 * severity  # broken pen strokes
    paper = rng.uniform(0.88, 1.0, size=(n, 1, 1, 1)) * np.ones((1, 1, 1, 3))  # [N, 1, 1, 3]
    paper = np.broadcast_to(paper, background.shape)
    ink = colour * (1.0 - 0.25 * severity)  # pens are a little darker than paint
    return _fill(paper, strokes, ink)


def noisy(background, mask, colour, rng, severity):
    """Clean image plus blotchy colour texture and per-pixel noise, both growing with severity."""
    image = _fill(background, mask, colour)
    n, side = mask.shape[0], mask.shape[1]
    blotches = _smooth_noise(rng, n, side, cells=4)
    image = image + (0.1 + 0.35 * severity) * blotches
    return image + rng.normal(0.0, 0.05 + 0.25 * severity, size=image.shape)


def retro(background, mask, colour, rng, severity):
    """Clean image with hues rotated, saturation lowered and levels posterised, by severity."""
    image = _fill(background, mask, colour)
    rotated = image @ _hue_rotation(np.deg2rad(75.0 * severity)).T
    grey = rotated.mean(axis=-1, keepdims=True)
    faded = grey + (1.0 - 0.45 * severity) * (rotated - grey)
    levels = 8 - int(round(4 * severity))
    return np.round(np.clip(faded, 0.0, 1.0) * (levels - 1)) / (levels - 1)


def night(background, mask, colour, rng, severity):
    """Darkened, moonlight-tinted, grainy clean image."""
    image = _fill(background, mask, colour)
    dark = 0.12 + image * (1.0 - 0.75 * severity)
    dark = dark * np.array([0.8, 0.9, 1.15])  # moonlight tint
    return dark + rng.normal(0.0, 0.03 + 0.06 * severity, size=image.shape)


_STYLE_FUNCTIONS = {"clean": clean, "sketch": sketch, "noisy": noisy, "retro": retro, "night": night}
assert tuple(_STYLE_FUNCTIONS) == STYLES


def apply_style(name, background, mask, colour, rng, severity):
    """Render a batch in style `name`.

    Args:
        name: one of STYLES.
        background: float [N, H, W, 3] in [0, 1].
        mask: bool [N, H, W], the object's silhouette.
        colour: float [N, 3] in [0, 1], the object's colour.
        rng: numpy Generator for the style's random parts.
        severity: float in [0, 1].
    Returns:
        float [N, H, W, 3], not yet clipped.
    """
    if name not in _STYLE_FUNCTIONS:
        raise ValueError(f"Unknown style '{name}'; choose from {list(STYLES)}.")
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"Style severity must lie in [0, 1]; got {severity}.")
    return _STYLE_FUNCTIONS[name](background, mask, colour, rng, severity)
