"""RandAugment: apply `n` image operations chosen at random, each at magnitude `m` (0..30).

Operations act on PIL images through torchvision's functional API and PIL.ImageOps. Signed
operations (rotation, shear, translation, enhancement factors) flip their sign at random.
"""

import random

import torchvision.transforms.functional as F
from PIL import ImageOps

MAX_MAGNITUDE = 30


def _signed(value):
    """Return `value` or `-value` with equal probability."""
    return value if random.random() < 0.5 else -value


def _auto_contrast(img, level):
    return ImageOps.autocontrast(img)


def _equalize(img, level):
    return ImageOps.equalize(img)


def _brightness(img, level):
    return F.adjust_brightness(img, 1.0 + _signed(0.9 * level))


def _color(img, level):
    return F.adjust_saturation(img, 1.0 + _signed(0.9 * level))


def _contrast(img, level):
    return F.adjust_contrast(img, 1.0 + _signed(0.9 * level))


def _sharpness(img, level):
    return F.adjust_sharpness(img, 1.0 + _signed(0.9 * level))


def _posterize(img, level):
    return F.posterize(img, 8 - int(round(4 * level)))


def _solarize(img, level):
    return F.solarize(img, int(round(256 * (1.0 - level))))


def _rotate(img, level):
    return F.rotate(img, _signed(30.0 * level), fill=[128, 128, 128])


def _shear_x(img, level):
    shear_deg = _signed(17.0 * level)  # ~0.3 rad at full magnitude
    return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[shear_deg, 0.0],
                    fill=[128, 128, 128])


def _shear_y(img, level):
    shear_deg = _signed(17.0 * level)
    return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, shear_deg],
                    fill=[128, 128, 128])


def _translate_x(img, level):
    shift = int(round(_signed(0.3 * level) * img.size[0]))
    return F.affine(img, angle=0.0, translate=[shift, 0], scale=1.0, shear=[0.0, 0.0],
                    fill=[128, 128, 128])


def _translate_y(img, level):
    shift = int(round(_signed(0.3 * level) * img.size[1]))
    return F.affine(img, angle=0.0, translate=[0, shift], scale=1.0, shear=[0.0, 0.0],
                    fill=[128, 128, 128])


# Every operation takes (PIL image, level in [0, 1]) and returns a PIL image of the same size.
RANDAUGMENT_OPS = [
    _auto_contrast,
    _equalize,
    _brightness,
    _color,
    _contrast,
    _sharpness,
    _posterize,
    _solarize,
    _rotate,
    _shear_x,
    _shear_y,
    _translate_x,
    _translate_y,
]


class RandAugment:
    """Apply `n` operations drawn with replacement from RANDAUGMENT_OPS at magnitude `m`.

    Args:
        n (int): number of operations per image (>= 0).
        m (int or float): magnitude in [0, 30].
    """

    def __init__(self, n=2, m=10):
        if n < 0:
            raise ValueError(f"RandAugment n must be >= 0, got {n}; set INPUT.RANDAUGMENT_N")
        if not 0 <= m <= MAX_MAGNITUDE:
            raise ValueError(
                f"RandAugment m must be in [0, {MAX_MAGNITUDE}], got {m}; set INPUT.RANDAUGMENT_M"
            )
        self.n = n
        self.m = m

    def __call__(self, img):
        level = self.m / MAX_MAGNITUDE
        for op in random.choices(RANDAUGMENT_OPS, k=self.n):
            img = op(img, level)
        return img

    def __repr__(self):
        return f"{type(self).__name__}(n={self.n}, m={self.m})"
