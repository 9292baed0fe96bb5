"""Experiment tooling: protocol runners, the sweep runner, log parsing and result tables/plots.

Entry points (run from anywhere; shell scripts cd to the repository root):
``scripts/*.sh`` (one protocol each), ``scripts/sweep.py``, ``scripts/results.py`` and ``parse_test_res.py``.
"""
