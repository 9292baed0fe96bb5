"""Reading the result lines that ``train.py`` prints into ``OUTPUT_DIR/log.txt``.

A run directory holds ``log.txt`` (first run) and ``log.txt-<timestamp>`` (every later run in the same
directory, e.g. a resumed training). Results are the ``* <metric>: <value>%`` lines printed after an
*end signal*: ``Finish training`` / ``Finished training`` for training runs (the final test of the deployed
model), ``=> result`` for evaluation-only runs.
"""
import re
from pathlib import Path

END_OF_TRAINING = ("Finish training", "Finished training")
RESULT_HEADER = "=> result"
METRIC_LINE = re.compile(r"^\* (?P<name>\w+): (?P<value>[\.\deE+-]+)%")
LOG_NAME = "log.txt"


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


def has_line(path, candidates):
    """True when one line of ``path`` equals (after stripping) one of ``candidates``."""
    return any(line.strip() in candidates for line in read_lines(path))


def final_metrics(run_dir, training):
    """Metrics of the newest log in ``run_dir`` that holds a complete result, and that log's path.

    ``training=True`` reads what follows the end-of-training line (so validation results printed during
    training are never taken); ``training=False`` reads what follows ``=> result`` (evaluation-only runs).
    Returns ``({}, None)`` when no log holds a result.
    """
    signals = END_OF_TRAINING if training else (RESULT_HEADER,)
    for path in reversed(log_files(run_dir)):
        metrics = metrics_after(read_lines(path), signals)
        if metrics:
            return metrics, path
    return {}, None


def run_finished(run_dir, training):
    """Whether the run in ``run_dir`` completed: a log shows the end of training (training runs) or a
    result with at least one metric (evaluation-only runs)."""
    if training:
        return any(has_line(path, END_OF_TRAINING) for path in log_files(run_dir))
    return bool(final_metrics(run_dir, training=False)[0])
