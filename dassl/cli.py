"""The argument parser of the project's command lines: a wrong or missing argument is one line on stderr (what is
wrong, and where the arguments are listed), exit status 2, like every other bad input; ``--help`` is argparse's."""
import argparse
import os
import sys

__all__ = ["OneLineArgumentParser"]


def command_as_typed():
    """How this process was started, as a user would type it: ``python -m scripts.micro_benchmark`` for a module run
    with -m, ``python scripts/results.py`` for a file (argparse's default is the file's bare name)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    return f"python {sys.argv[0]}" if sys.argv and sys.argv[0].endswith(".py") else os.path.basename(sys.argv[0])


class OneLineArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors print ``error: <what is wrong> (<command> --help lists the
    arguments)`` instead of the usage block before the message; ``prog`` defaults to the command as typed."""

    def __init__(self, *args, prog=None, **kwargs):
        super().__init__(*args, prog=prog or command_as_typed(), **kwargs)

    def error(self, message):
        print(f"error: {message} ({self.prog} --help lists the arguments)", file=sys.stderr)
        raise SystemExit(2)
