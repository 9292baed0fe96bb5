"""The argument parser of the project's command lines: a wrong or missing argument is one line on stderr (what is
wrong, and where the arguments are listed), exit status 2, like every other bad input; ``--help`` is argparse's."""
import argparse
import sys

__all__ = ["OneLineArgumentParser"]


class OneLineArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors print ``error: <what is wrong> (<prog> --help lists the arguments)``
    instead of the usage block before the message."""

    def error(self, message):
        print(f"error: {message} ({self.prog} --help lists the arguments)", file=sys.stderr)
        raise SystemExit(2)
