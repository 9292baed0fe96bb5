"""Image transforms: `build_transform` and the interpolation-name map."""

from .transforms import AVAI_CHOICES, INTERPOLATION_MODES, build_transform

__all__ = ["AVAI_CHOICES", "INTERPOLATION_MODES", "build_transform"]
