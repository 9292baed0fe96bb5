"""Command-line entry points and one-off tools; the code they run lives in the ``sweeps`` and ``results`` packages.

Entry points (run from anywhere; shell scripts cd to the repository root): ``scripts/*.sh`` (one protocol each, through
``scripts/run_protocol.py``), ``scripts/sweep.py`` (the sweep runner), ``scripts/results.py`` (tables and plots),
``parse_test_res.py`` (at the repository root), ``python -m scripts.micro_benchmark`` (the main job),
``python -m scripts.export_checkpoint`` and ``scripts/pretrain_micro_clip.py``. Sweep files: ``scripts/sweeps/*.yaml``.
"""
