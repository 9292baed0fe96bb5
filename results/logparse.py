"""Which runs have a result, and the result lines that ``train.py`` prints into ``OUTPUT_DIR/log.txt``.

A run is *finished* exactly when its output directory holds ``result.json``: ``train.py`` writes it atomically
after the final evaluation printed its result (``dassl.engine.run_dir``). A log line alone never makes a run
finished: ``Finish training`` is printed *before* the final test, so a run whose final test crashed has that
line and no result.

The numbers themselves are read from the logs, as printed (what the ecosystem's tools read): a run directory
holds ``log.txt`` (first run) and ``log.txt-<timestamp>`` (every later run in the same directory, e.g. a resumed
training). Results are the ``* <metric>: <value>%`` lines printed after an *end signal*: ``Finish training`` /
``Finished training`` for training runs (the final test of the deployed model), ``=> result`` for
evaluation-only runs; the negative log-likelihood is printed in nats (``* nll: <value> nats``). Counts
(``* total: 1,000``) carry no unit and are not metrics. Logs written before a metric existed (ECE, NLL, the
open-set AUROC) simply lack it.

*Foreign* run directories, made by the ecosystem's own code, hold neither ``result.json`` nor ``config.yaml``
(which this project's ``train.py`` writes when a run starts). Tables and ``parse_test_res.py`` accept their
results by the log rule above, as the ecosystem's scripts do. The sweep runner never counts them as finished:
re-running such a job lets ``train.py`` resume from its checkpoints and write ``result.json``.
"""
import collections
import re
from pathlib import Path

from dassl.engine.run_dir import CONFIG_FILE, RESULT_FILE, read_result

UNFINISHED = "no result.json: the run has not finished (still running, interrupted or failed)"

END_OF_TRAINING = ("Finish training", "Finished training")
RESULT_HEADER = "=> result"
NATS = " nats"  # the unit of the negative log-likelihood line (``* nll: 0.6931 nats``); other metrics are in %
METRIC_LINE = re.compile(rf"^\* (?P<name>\w+): (?P<value>[\.\deE+-]+)(?:%|{NATS}\b)")
LOG_NAME = "log.txt"


def unit(metric):
    """The unit ``metric`` is printed in: ``NATS`` for ``nll``, ``%`` for every other metric."""
    return NATS if metric == "nll" else "%"


def log_files(run_dir):
    """Return the log files of ``run_dir`` oldest first: ``log.txt`` then ``log.txt-<timestamp>`` sorted."""
    run_dir = Path(run_dir)
    first = run_dir / LOG_NAME
    later = sorted(p for p in run_dir.glob(LOG_NAME + "-*") if p.is_file())
    return ([first] if first.is_file() else []) + later


def metrics_after(lines, end_signals):
    """Metrics printed after the first line equal to one of ``end_signals``; the last value of a name wins.

    Returns ``{}`` when no end signal occurs or nothing follows it.
    """
    metrics = {}
    seen_signal = False
    for line in lines:
        line = line.strip()
        if line in end_signals:
            seen_signal = True
            continue
        match = METRIC_LINE.match(line) if seen_signal else None
        if match:
            metrics[match.group("name")] = float(match.group("value"))
    return metrics


def read_lines(path):
    """All lines of a text file (undecodable bytes replaced, so a truncated log never raises)."""
    return Path(path).read_text(encoding="utf-8", errors="replace").splitlines()


def tail(path, lines=10):
    """The last ``lines`` lines of a text file (``[]`` when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n") for line in collections.deque(f, maxlen=lines)]  # streamed: logs grow per resume


def finished(run_dir):
    """Whether the run in ``run_dir`` finished: its ``result.json`` exists (written after the final evaluation)."""
    return read_result(str(run_dir)) is not None


def is_foreign(run_dir):
    """Whether ``run_dir`` was made by other code (the ecosystem's scripts): no ``result.json``, no ``config.yaml``."""
    run_dir = Path(run_dir)
    return not (run_dir / RESULT_FILE).exists() and not (run_dir / CONFIG_FILE).exists()


def result_counts(run_dir):
    """Whether a result in the logs of ``run_dir`` counts: the run finished, or the directory is foreign."""
    return finished(run_dir) or is_foreign(run_dir)


def logged_metrics(run_dir, training):
    """Metrics of the newest log in ``run_dir`` that holds a result after the end signal, and that log's path.

    ``training=True`` reads what follows the end-of-training line (so validation results printed during
    training are never taken); ``training=False`` reads what follows ``=> result`` (evaluation-only runs).
    Returns ``({}, None)`` when no log holds a result. This reads logs only; see :func:`final_metrics`.
    """
    signals = END_OF_TRAINING if training else (RESULT_HEADER,)
    for path in reversed(log_files(run_dir)):
        metrics = metrics_after(read_lines(path), signals)
        if metrics:
            return metrics, path
    return {}, None


def final_metrics(run_dir, training):
    """The final metrics of a run that has a result, and the log they were read from; ``({}, None)`` otherwise.

    A run has a result when it finished (``result.json``) or, for a foreign directory, when a log holds the
    result lines (see the module docstring). A directory of this project's ``train.py`` without ``result.json``
    has no result, whatever its logs show.
    """
    return logged_metrics(run_dir, training) if result_counts(run_dir) else ({}, None)
