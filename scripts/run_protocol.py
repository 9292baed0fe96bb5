"""Run one protocol for one trainer / config / seed: ``python scripts/run_protocol.py PROTOCOL ...``
(``sweeps.protocol_runner``); the shell scripts ``scripts/<protocol>.sh`` call this."""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable instead of scripts/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from sweeps.protocol_runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
