"""What an error means for the command line: bad input (exit 2) or a failed run (exit 1), in one line."""

TRACEBACK_ENV = "BMIP_TRACEBACK"  # =1: errors print the full traceback instead of one line
BAD_INPUT, RUN_FAILED, INTERRUPTED = 2, 1, 130  # exit statuses


class UsageError(ValueError):
    """Bad input found before any work: the message is one line saying what is wrong and the fix."""


def is_bad_input(err):
    """Errors that mean "fix the command, the config or the files" (exit 2) rather than "the run failed"."""
    if isinstance(err, UsageError):
        return True  # (found before torch was imported: keep it that way)
    from dassl.engine.run_dir import OutputDirBusy
    from dassl.utils.safe_pickle import ForbiddenPickleContent

    # ConfigMismatch and CheckpointError are ValueErrors; a DivergenceError (a FloatingPointError) is a failed run
    return isinstance(err, (OutputDirBusy, ForbiddenPickleContent, KeyError, ValueError, FileNotFoundError))


def exit_status(err):
    return BAD_INPUT if is_bad_input(err) else RUN_FAILED


def error_text(err):
    """The message of ``err`` on one line (prefixed by its type where the message alone would not say it)."""
    text = _without_worker_traceback(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err), err)
    if not (isinstance(err, (UsageError, KeyError, ValueError, FileNotFoundError, RuntimeError, OSError)) and text):
        text = f"{type(err).__name__}: {text}"
    return " ".join(text.split())


def _without_worker_traceback(text, err):
    """The original message of an error raised in a DataLoader worker: torch re-raises it in the main process as
    "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback ...\nValueError: <message>"."""
    marker = f"\n{type(err).__name__}: "
    if text.startswith("Caught ") and " in DataLoader worker process " in text and marker in text:
        return text[text.rindex(marker) + len(marker):]
    return text
