"""Shared pytest fixtures."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dassl.utils import Logger


@pytest.fixture(autouse=True)
def restore_stdout():
    """runs.run.main() tees stdout into the run's log.txt; undo that after every test."""
    original = sys.stdout
    yield
    if isinstance(sys.stdout, Logger):
        sys.stdout.close()
    sys.stdout = original


@pytest.fixture(scope="session")
def slurm_tools():
    """For a test that needs SLURM's daemons and clients (a single-node cluster from tests/slurm/cluster.sh): skipped,
    with the reason, where they are not installed or the user is not root; with REQUIRE_SLURM=1 (set by .ci/run once
    it installed them) that is a failure instead."""
    script = Path(__file__).resolve().parent / "slurm" / "cluster.sh"
    check = subprocess.run(["bash", str(script), "check"], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:  # a tool is missing, or not root
        reason = f"needs SLURM: {check.stderr.strip()}"
        if os.environ.get("REQUIRE_SLURM") == "1":
            pytest.fail(f"{reason} (REQUIRE_SLURM=1)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A small toy dataset (4 train, 2 val, 2 test images per class) for command-line tests; a module may define its
    own ``data_root`` instead."""
    from tests.toy_data import make_toy_dataset

    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root), per_class=(4, 2, 2))
    return str(root)


@pytest.fixture(scope="session")
def warm_python():
    """A ``PYTHON`` for tests that run shell scripts: each ``$PYTHON ...`` command runs as a fork of one server that
    imported torch and this repository once (tests/warm_python.py), not in a fresh interpreter."""
    from tests.warm_python import write_client

    folder = Path(tempfile.mkdtemp(prefix="warm_python"))  # short: a socket path has at most 107 characters
    server = subprocess.Popen([sys.executable, "-m", "tests.warm_python", str(folder / "socket")],
                              cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n", "the warm Python server did not start (see its stderr)"
        yield str(write_client(folder / "python", folder / "socket"))
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
