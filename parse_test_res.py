"""Summarize the results of the seed runs in a directory, with the ecosystem's command line.

    python parse_test_res.py output/base2new/train_base/dtd/shots_16/CoOp/vit_b16_ctxv1
    python parse_test_res.py output/base2new/test_new/dtd/shots_16/CoOp/vit_b16_ctxv1 --test-log
    python parse_test_res.py output/evaluation/CoOp/vit_b16_ep50_16shots --test-log --multi-exp

Every non-hidden subdirectory of DIRECTORY is one run (a seed); DIRECTORY itself is the run when it holds
``log.txt``. Only runs with a result count: a run of this project's ``train.py`` has one once its
``result.json`` exists (written after the final evaluation; ``Finish training`` alone is printed before the
final test); a foreign run (made by the ecosystem's scripts: no ``result.json``, no ``config.yaml``) has one
when its log holds the value, as in the ecosystem. A run's value is the last ``* <keyword>: X%`` line (``X nats``
for ``nll``) after the end signal: ``Finish training`` or ``Finished training`` (both accepted), or ``=> result``
with ``--test-log``. Unlike the ecosystem's script, a resumed run's newer ``log.txt-<timestamp>`` is read too (the
newest log with a value wins), and a run without a result is reported and skipped instead of stopping the
summary.
Spread: population std (numpy.std), or the 95% interval half-width 1.96·std/√n with ``--ci95``.
"""
import argparse
import sys
from pathlib import Path

from dassl.cli import OneLineArgumentParser
from results import logparse
from results.stats import ci95, summarize


def run_dirs(directory):
    """The runs of ``directory``: its sorted non-hidden subdirectories, or itself when it holds a log."""
    directory = Path(directory)
    if logparse.log_files(directory):
        return [directory]
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def run_value(run_dir, keyword, end_signals):
    """(value, log path) of the newest log of ``run_dir`` holding ``keyword`` after an end signal; None when the
    run has no result (see the module docstring) or no log holds the value."""
    if not logparse.result_counts(run_dir):
        return None
    for path in reversed(logparse.log_files(run_dir)):
        metrics = logparse.metrics_after(logparse.read_lines(path), end_signals)
        if keyword in metrics:
            return metrics[keyword], path
    return None


def parse_directory(directory, keyword, end_signals, use_ci95, out=print):
    """Print one line per run and the summary of ``directory``; return the mean (None if nothing found)."""
    out(f"Parsing files in {directory}")
    values, unit = [], logparse.unit(keyword)
    for run_dir in run_dirs(directory):
        found = run_value(run_dir, keyword, end_signals)
        if found is None:
            reason = (f"no '* {keyword}: X{unit}' line after {' / '.join(end_signals)} in its logs"
                      if logparse.result_counts(run_dir) else logparse.UNFINISHED)
            print(f"skipped {run_dir}: {reason}", file=sys.stderr)
            continue
        value, path = found
        values.append(value)
        out(f"file: {path}. {keyword}: {value:.2f}{unit}. ")
    if not values:
        print(f"Nothing found in {directory}: no run has finished (check the run logs, or pass --test-log "
              f"for evaluation-only runs)", file=sys.stderr)
        return None
    summary = summarize(values)
    spread = ci95(values) if use_ci95 else summary.std
    out("===")
    out(f"Summary of directory: {directory}")
    out(f"* {keyword}: {summary.mean:.2f}{unit} +- {spread:.2f}{unit}")
    out("===")
    return summary.mean


def main(argv=None):
    """Command-line entry; exit status 1 when nothing was found."""
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="path to a directory of seed runs")
    parser.add_argument("--ci95", action="store_true", help="report the 95%% confidence interval half-width")
    parser.add_argument("--test-log", action="store_true", help="parse evaluation-only logs (after '=> result')")
    parser.add_argument("--multi-exp", action="store_true", help="every subdirectory is an experiment of seeds")
    parser.add_argument("--keyword", default="accuracy", help="metric name to parse (default: accuracy)")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"error: {args.directory} is not a directory", file=sys.stderr)
        return 2
    signals = (logparse.RESULT_HEADER,) if args.test_log else logparse.END_OF_TRAINING
    if not args.multi_exp:
        return 0 if parse_directory(args.directory, args.keyword, signals, args.ci95) is not None else 1
    experiments = sorted(p for p in args.directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    means = [m for m in (parse_directory(e, args.keyword, signals, args.ci95) for e in experiments)
             if m is not None]
    if not means:
        return 1
    print("===")
    print("Average performance")
    print(f"* {args.keyword}: {sum(means) / len(means):.2f}{logparse.unit(args.keyword)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
