"""Result tables and plots of an output tree: ``python scripts/results.py [OUTPUT] [--out-dir DIR]``.

Walks OUTPUT (default ``output``) for base-to-novel, open-world, cross-dataset, domain-generalization and
few-shot runs, and writes to DIR (default ``OUTPUT/results``): ``results.md`` (every table, also printed),
one ``<table>.csv`` per table, and the plots ``base2new_hm.png``, ``few_shot.png``, ``open_world.png``.
When runs recorded calibration and open-set metrics (ECE, NLL, open-set AUROC), a table of them is added
(``calibration.csv``); ``--no-calibration`` leaves it out.
Run directories without a finished result are listed on stderr and left out (gaps, never zeros).

OUTPUT is an output tree (its ``base2new/``, ``evaluation/`` or ``few_shot/`` holds runs where ``results.layout``
puts them). When it is not one but holds exactly one tree below it — ``output`` after the main job, whose runs are
in ``output/micro_benchmark`` — that tree is read (and its ``results/`` written); several trees below it are named,
to pick one (each is its own experiment). A folder inside a tree (``output/base2new``) names the tree to pass; a
folder of finished runs in another layout says so (``--diff`` and ``--curves`` take run folders anywhere).

``--published`` adds the table of our results next to the published ones (``results/published.yaml``, or
``--published-file FILE``): per cell our seed mean, the published value, Δ = ours − published, and whether the
published value lies outside the spread of our seeds (``results.versus_published``).

``--diff A B`` instead explains in a few lines why two runs (two run folders) or two sweeps (two output trees,
runs matched by path) differ: each part of their ``result.json`` fingerprints that differs (code, packages,
device, precision, data, transforms, config), with the values; the report itself ends with the table of what its
runs share (``Run fingerprints``: a part whose runs disagree is marked MIXED).

``--curves RUN [RUN ...]`` instead plots the per-epoch training curves (``curves.csv``) of a set of runs — run
directories, trees or globs such as ``'output/few_shot/micro_sketch/*/*_16shots/seed1'`` — into
``DIR/training_curves.png``: one panel per column (loss, accuracy, LR, val accuracy), one line per run.
"""
import argparse
import os
import sys
from pathlib import Path

from dassl.cli import OneLineArgumentParser
from results import aggregate, calibration, plots, tables
from results.collect import a_finished_run, collect, enclosing_tree, is_output_tree, output_trees
from results.curves import find_curve_files, read_curves, run_labels
from results.fingerprints import diff, fingerprint_section
from results.published import PUBLISHED_FILE, load as load_published
from results.versus_published import versus_published_section


def build_report(results, out_dir, make_plots=True, calibration_table=True, published=None):
    """Write every table (markdown + CSV) and plot for ``results`` into ``out_dir``; return the markdown.
    ``calibration_table``: add the ECE / NLL / open-set AUROC table when runs recorded them. With ``published``
    (``results.published.load()``) the tables end with ours next to the published values."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    b2n = aggregate.base2new(results)
    if b2n is not None:
        sections.append(tables.base2new_section(b2n))
        if make_plots:
            plots.plot_base2new_hm(b2n, out_dir / "base2new_hm.png")
    sections += [tables.transfer_section(t) for t in aggregate.transfer(results)]
    shots = aggregate.few_shot(results)
    if shots is not None:
        sections.append(tables.curve_section(shots, "few_shot", "Few-shot learning (all classes)", "shots",
                                             lambda x: f"{x} shot" + ("s" if x != 1 else "")))
        if make_plots:
            plots.plot_curves(shots, out_dir / "few_shot.png", "shots per class", "Few-shot accuracy",
                              log2_x=True)
    ratios = aggregate.open_world(results)
    if ratios is not None:
        sections.append(tables.curve_section(ratios, "open_world", "Open-world: accuracy vs ratio r of base "
                                             "classes in the label space", "ratio", lambda x: f"r={x}"))
        if make_plots:
            plots.plot_curves(ratios, out_dir / "open_world.png", "r (% base classes)",
                              "Open-world accuracy vs ratio r", reverse_x=True)
    all_space = aggregate.open_world_all(results)
    if all_space is not None:
        sections.append(tables.open_world_all_section(all_space))
    calibration_cells = calibration.calibration(results) if calibration_table else None
    if calibration_cells is not None:
        sections.append(calibration.calibration_section(calibration_cells))
    if published is not None:
        sections.append(versus_published_section(results, published))
    shared = fingerprint_section(sorted({r.log.parent for r in results}))
    if shared is not None:
        sections.append(shared)
    for section in sections:
        tables.write_csv(section, out_dir / f"{section.name}.csv")
    markdown = "\n".join(line for section in sections for line in section.markdown + [""])
    (out_dir / "results.md").write_text(markdown, encoding="utf-8")
    return markdown


def plot_training_curves(patterns, out_dir):
    """Plot the curves of the runs named by ``patterns`` into ``out_dir/training_curves.png``; return the path."""
    paths = find_curve_files(patterns)
    runs = [read_curves(p) for p in paths]
    labels = run_labels(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "training_curves.png"
    plots.plot_training_curves(runs, labels, target, title=f"Training curves of {len(runs)} run(s)")
    for run, label in zip(runs, labels):
        val = [v for v in run.columns.get("val_accuracy", []) if v is not None]
        best = f", best val accuracy {max(val):.2f}" if val else ""
        print(f"{label}: {len(run.epochs)} epochs{best}")
    return target


TREES_LISTED = 5  # the trees a folder with several below it names (its error stays one readable line)


def resolve_tree(output):
    """The output tree to report for the folder ``output`` (module docstring); raises ``ValueError`` (one line
    naming them) when several trees are below it, or (``refuse_misplaced``) when it lies inside a tree or holds
    finished runs in another layout. The trees below a tree are named on stderr."""
    if not output.is_dir():
        return output  # collect() says that it does not exist
    below = output_trees(output)
    if is_output_tree(output):
        for other in below:
            print(f"note: {other} holds other runs: python scripts/results.py {other}", file=sys.stderr)
        return output
    if len(below) > 1:
        listed = ", ".join(map(str, below[:TREES_LISTED])) + (
            f" and {len(below) - TREES_LISTED} more" if len(below) > TREES_LISTED else "")
        raise ValueError(f"{output} holds no runs itself but {len(below)} output trees: {listed}; pass one of them, "
                         f"e.g. python scripts/results.py {below[0]}")
    if below:
        print(f"reading the runs of {below[0]} ({output} holds no runs itself)", file=sys.stderr)
        return below[0]
    refuse_misplaced(output)
    return output


def refuse_misplaced(output):
    """Raise ``ValueError`` (one line: what ``output`` is, what to pass) when the folder ``output``, with no output
    tree in or below it, lies inside a tree or holds finished runs in another layout."""
    tree = enclosing_tree(output)
    if tree is not None:
        shown = tree if output.is_absolute() else Path(os.path.relpath(tree))
        raise ValueError(f"{output} is a folder inside the output tree {shown}, not its root: pass the root, "
                         f"python scripts/results.py {shown}")
    run = a_finished_run(output)
    if run is not None:
        raise ValueError(f"{output} holds finished runs (e.g. {run}) but no output tree: the tables read the layout "
                         f"of results/layout.py (<tree>/base2new/, evaluation/ or few_shot/, as the protocol and "
                         f"sweep scripts write it); run folders anywhere go to --diff A B or --curves RUN")


def main(argv=None):
    """Collect, report; exit status 1 when the tree holds no finished run, 2 for a folder to fix."""
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", nargs="?", type=Path, default=Path("output"), help="root of the output tree")
    parser.add_argument("--out-dir", type=Path, default=None, help="where to write (default: OUTPUT/results)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument("--no-calibration", action="store_true", help="leave out the calibration and open-set "
                        "table (ECE, NLL, open-set AUROC; shown when runs recorded them)")
    parser.add_argument("--curves", nargs="+", metavar="RUN", help="plot the training curves of these runs "
                        "(directories, trees or globs) instead of the tables")
    parser.add_argument("--published", action="store_true", help="add the table of our results next to the "
                        "published ones: delta per cell, flagged when outside the spread of our seeds")
    parser.add_argument("--published-file", type=Path, default=PUBLISHED_FILE, metavar="FILE",
                        help="the published results to compare with (default: %(default)s)")
    parser.add_argument("--diff", nargs=2, metavar=("A", "B"), type=Path, help="explain how two runs (run "
                        "folders) or two sweeps (output trees) differ, by the parts of their fingerprints, instead "
                        "of the tables")
    args = parser.parse_args(argv)
    if args.diff:
        try:
            print("\n".join(diff(*args.diff)))
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    if args.curves:
        try:
            target = plot_training_curves(args.curves, args.out_dir or args.output / "results")
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"training curves written to {target}", file=sys.stderr)
        return 0
    try:
        published = load_published(args.published_file) if args.published else None
        tree = resolve_tree(args.output)
        collection = collect(tree)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for directory in collection.incomplete:
        print(f"no finished result (unfinished or failed run): {directory}", file=sys.stderr)
    if not collection.results:
        no_tree = "" if is_output_tree(tree) else " (nor an output tree in it: pass the --output of your runs)"
        print(f"error: no finished run under {tree}{no_tree}", file=sys.stderr)
        return 1
    out_dir = args.out_dir or tree / "results"
    print(build_report(collection.results, out_dir, make_plots=not args.no_plots,
                       calibration_table=not args.no_calibration, published=published))
    print(f"tables {'written' if args.no_plots else 'and plots written'} to {out_dir}", file=sys.stderr)
    return 0
