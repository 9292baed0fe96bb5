"""Shared pytest fixtures."""
import sys

import pytest

from dassl.utils import Logger


@pytest.fixture(autouse=True)
def restore_stdout():
    """train.main() tees stdout into the run's log.txt; undo that after every test."""
    original = sys.stdout
    yield
    if isinstance(sys.stdout, Logger):
        sys.stdout.close()
    sys.stdout = original
