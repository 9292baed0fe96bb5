"""Sweep runner: ``python scripts/sweep.py SWEEP.yaml ... [--executor local|slurm ...]`` and
``python scripts/sweep.py status SWEEP.yaml ...`` (``sweeps.runner``; ``--help`` describes it)."""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable instead of scripts/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from sweeps.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
