"""Run one protocol for one trainer / config / seed: ``python scripts/run_protocol.py PROTOCOL ...``.

The shell scripts ``scripts/<protocol>.sh`` call this. Everything after ``--`` is passed to every
``train.py`` call as ``KEY VALUE`` opts (they do not change the output directory: use ``--output``).
Before the first job it checks, once, that the jobs' packages import (torch, torchvision, clip)
and that their datasets are under ``$DATA`` (``sweeps.preflight``).
Exit status: 0 when every job finished or was skipped, 1 when a job failed, 2 on bad input, 3 when a job
runs elsewhere (its output folder is locked), 128+N when stopped by signal N (SIGINT / SIGTERM stop the
running train.py, which runs in its own process group).
"""
import argparse
import sys
from pathlib import Path

from dassl.cli import OneLineArgumentParser
from results import layout
from sweeps import protocols
from sweeps.cli import add_common_options, context_from_args, split_opts
from sweeps.jobs import INCOMPLETE, SetupError, exit_status, run_chain
from sweeps.preflight import check_before_jobs
from sweeps.processes import stop_on_signals


def build_parser():
    """Argument parser with one sub-command per protocol."""
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="protocol", required=True)

    def protocol_parser(name, help_text, with_dataset=True):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("trainer", help="trainer name, e.g. CoOp, MaPLe, BMIP, ZeroshotCLIP")
        p.add_argument("cfg", help="config name: configs/trainers/<TRAINER>/<CFG>.yaml")
        if with_dataset:
            p.add_argument("dataset", help="dataset name: configs/datasets/<DATASET>.yaml")
        p.add_argument("seed", type=int)
        p.add_argument("--output", type=Path, default=Path("output"), help="root of the output tree")
        p.add_argument("--device", default=None, help="passed to train.py --device (e.g. cpu, cuda:1)")
        add_common_options(p)
        return p

    p = protocol_parser("base2new", "train on base classes, test on base and novel")
    p.add_argument("--shots", type=int, default=layout.BASE2NEW_SHOTS)
    p = protocol_parser("open_world", "evaluate the base model at ratios r and on base+novel")
    p.add_argument("--shots", type=int, default=layout.BASE2NEW_SHOTS)
    p.add_argument("--ratios", type=int, nargs="+", default=list(layout.OPEN_WORLD_RATIOS),
                   help="percent of base classes in the label space")
    for name, targets, text in (("cross_dataset", layout.CROSS_DATASET_TARGETS, "train on the source, test on other datasets"),
                                ("domain_generalization", layout.DG_TARGETS, "test the source model on its variants")):
        p = protocol_parser(name, text, with_dataset=False)
        p.add_argument("--source", default=layout.DEFAULT_SOURCE)
        p.add_argument("--targets", nargs="+", default=list(targets))
        p.add_argument("--shots", type=int, default=layout.BASE2NEW_SHOTS)
    p = protocol_parser("few_shot", "train on all classes with K shots, one run per K")
    p.add_argument("--shots", type=int, nargs="+", default=list(layout.FEW_SHOT_SHOTS))
    return parser


def chains_for(args):
    """The job chains the parsed arguments ask for."""
    common = (args.output, args.trainer, args.cfg)
    if args.protocol == "base2new":
        return [protocols.base2new(*common, args.dataset, args.seed, shots=args.shots)]
    if args.protocol == "open_world":
        return [protocols.open_world(*common, args.dataset, args.seed, args.ratios, shots=args.shots)]
    if args.protocol in ("cross_dataset", "domain_generalization"):
        return [protocols.cross_dataset(*common, args.seed, args.targets, source=args.source,
                                        shots=args.shots)]
    return protocols.few_shot(*common, args.dataset, args.seed, args.shots)


def main(argv=None):
    """Parse, check the setup, run the chains in order; return the exit status."""
    runner_args, opts = split_opts(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(runner_args)
    try:
        chains = chains_for(args)
        ctx = context_from_args(args, opts, device=args.device)
        jobs = [job for chain in chains for job in chain]
        check_before_jobs(jobs, ctx, args.dry_run)
    except (SetupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with stop_on_signals() as received:
        outcomes = [o for chain in chains for o in run_chain(chain, ctx, dry_run=args.dry_run)]
    for outcome in (o for o in outcomes if o.status in INCOMPLETE):
        logs = ", ".join(str(p) for p in outcome.logs) or "no log"
        print(f"{outcome.status.upper()} {outcome.job.output_dir}: {outcome.message} ({logs})", file=sys.stderr)
    if received["signal"]:
        return 128 + received["signal"]
    return exit_status(outcomes)
