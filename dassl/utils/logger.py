"""Tee ``sys.stdout`` into a log file (Dassl's print-based logging)."""

import datetime
import os
import os.path as osp
import sys

from .tools import mkdir_if_missing

__all__ = ["Logger", "setup_logger", "close_logger"]


class Logger:
    """A file-like object writing everything to the console stream and to ``fpath``.

    The file is created exclusively (an existing file is never truncated) and flushed to the OS after every
    complete line, so a killed run's log holds every line it printed; ``flush()`` also syncs it to disk.

    Args:
        fpath (str): log file, created (its folder too); it must not exist yet.
        console: the stream to keep writing to (default: the current ``sys.stdout``).
    """

    def __init__(self, fpath, console=None):
        self.console = console if console is not None else sys.stdout
        mkdir_if_missing(osp.dirname(osp.abspath(fpath)))
        self.fpath = fpath
        self.file = open(fpath, "x")

    def write(self, msg):
        self.console.write(msg)
        if self.file is not None:
            self.file.write(msg)
            if "\n" in msg:
                self.file.flush()

    def flush(self):
        self.console.flush()
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self):
        """Close the log file; the console stream is left open."""
        if self.file is not None:
            self.file.close()
            self.file = None

    def __getattr__(self, name):
        # Anything else a stream offers (isatty, encoding, …) comes from the console.
        if name == "console":
            raise AttributeError(name)
        return getattr(self.console, name)


def _new_log_path(fpath):
    """``fpath`` if it does not exist, else ``<fpath>-YYYY-MM-DD-HH-MM-SS-<microseconds>`` (unique)."""
    if not osp.exists(fpath):
        return fpath
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S-%f")
    candidate, n = f"{fpath}-{stamp}", 1
    while osp.exists(candidate):
        candidate, n = f"{fpath}-{stamp}-{n}", n + 1
    return candidate


def close_logger():
    """Close the log file that ``setup_logger`` tees stdout into, if any, and restore its console; returns stdout."""
    if isinstance(sys.stdout, Logger):
        sys.stdout.close()
        sys.stdout = sys.stdout.console
    return sys.stdout


def setup_logger(output=None):
    """Tee ``sys.stdout`` into a log file and return the :class:`Logger` (None when ``output`` is None).

    ``output`` ending in ``.txt``/``.log`` is the file itself, otherwise the file is ``output/log.txt``.
    An existing file is never overwritten: the new log is named ``<file>-YYYY-MM-DD-HH-MM-SS-<microseconds>``.
    Calling it again replaces the previous tee instead of stacking a second one.
    """
    if output is None:
        return None
    if output.endswith(".txt") or output.endswith(".log"):
        fpath = output
    else:
        fpath = osp.join(output, "log.txt")

    console = close_logger()
    while True:
        try:
            logger = Logger(_new_log_path(fpath), console=console)
            break
        except FileExistsError:  # created by another process between the check and the exclusive open
            continue
    sys.stdout = logger
    return logger
