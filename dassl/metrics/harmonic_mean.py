"""The harmonic mean of base and novel accuracy (HM), the headline number of the base-to-novel protocol."""

__all__ = ["harmonic_mean"]


def harmonic_mean(base, novel):
    """``2 * base * novel / (base + novel)``; 0.0 when both are 0, ``None`` when either is missing (``None``)."""
    if base is None or novel is None:
        return None
    if base + novel == 0:
        return 0.0
    return 2.0 * base * novel / (base + novel)
