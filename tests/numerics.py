"""Numerical comparisons the fidelity tests share."""


def relative_error(a, b):
    """||a - b|| / ||b|| of two tensors (b the reference), as a float."""
    return ((a - b).norm() / b.norm()).item()
