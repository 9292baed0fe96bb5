"""Result tables and plots of an output tree: ``python scripts/results.py [OUTPUT] [--out-dir DIR]``
(``results.report``; ``--help`` describes it)."""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable instead of scripts/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from results.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
