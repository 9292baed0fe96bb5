"""The README's main job: base-to-novel on the micro benchmark, every method, on a CPU in minutes.

ZS-CLIP, CoOp, CoCoOp, MaPLe, BITP, BMIP (reference and per_sample), PromptSRC, PromptSRC+BMIP, UPT, ProDA, MMA,
KgCoOp, TCP, MMRL, MMRL++, CoPrompt and CoPrompt+BMIP are trained on the base classes (16 shots) of the synthetic
micro-world datasets and tested on base and novel classes, with the shipped MicroViT CLIP and the ``micro`` configs.
The datasets are generated on first use under ``--data``. Jobs run on ``--workers`` processes (one torch thread each),
inside the process (no interpreter start-up per job); a finished job is skipped, so a re-run only does what is
missing. At the end the Base / Novel / HM table is printed and written with a plot to ``<output>/results``. A Python
environment whose packages do not work together (e.g. a torchvision built for another torch) stops it before any job,
with one line naming the fix (exit status 2). This is a synthetic stand-in for the paper's benchmark, not the
benchmark itself.

    python -m scripts.micro_benchmark [--seeds 1 2 3] [--datasets micro_sketch ...] [--workers 2]
"""
import argparse
import multiprocessing
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from dassl.cli import OneLineArgumentParser
from sweeps.jobs import INCOMPLETE, REPO_ROOT, RunContext, SetupError, run_chain, summary_lines
from sweeps.preflight import check_imports
from sweeps.protocols import base2new
from results.report import build_report

DATASETS = ("micro_clean", "micro_sketch", "micro_noisy", "micro_retro", "micro_night")
RUNS = (("ZeroshotCLIP", "micro"), ("CoOp", "micro"), ("CoCoOp", "micro"), ("MaPLe", "micro"),
        ("BITP", "micro"), ("BMIP", "micro"), ("BMIP", "micro_per_sample"), ("PromptSRC", "micro"),
        ("PromptSRC_BMIP", "micro"), ("UPT", "micro"), ("ProDA", "micro"), ("MultiModalAdapter", "micro"),
        ("KgCoOp", "micro"), ("TCP", "micro"), ("MMRL", "micro"), ("MMRLpp", "micro"), ("CoPrompt", "micro"),
        ("CoPrompt_BMIP", "micro"))


def int_at_least(minimum, why):
    """An argparse ``type``: an integer >= ``minimum``; else a one-line error naming the value (and ``why``)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}: {why}")
        return value
    return parse


def build_parser():
    parser = OneLineArgumentParser(prog="python -m scripts.micro_benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("DATA", REPO_ROOT / "data")),
                        help="dataset root; the micro datasets are generated in <data>/micro_world (default: $DATA or ./data)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "output" / "micro_benchmark", help="output root")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS, metavar="DATASET",
                        help=f"micro datasets to run (default: all of {', '.join(DATASETS)})")
    parser.add_argument("--seeds", type=int_at_least(0, "seeds are >= 0 (a negative seed leaves a run unseeded)"),
                        nargs="+", default=[1], help="seeds >= 0 (few-shot samples and init)")
    parser.add_argument("--workers", type=int_at_least(1, "pass 1 or more worker processes"), default=2,
                        help="worker processes (one torch thread each)")
    return parser


def generate_datasets(names, data_root):
    """Render every micro dataset that is not on disk yet (once, before the workers start)."""
    from dassl.config import extend_cfg, get_cfg_default
    from dassl.data.datasets import DATASET_REGISTRY
    import datasets  # noqa: F401  (registers the micro datasets)

    for name in names:
        cfg = get_cfg_default()
        extend_cfg(cfg)
        cfg.merge_from_file(str(REPO_ROOT / "configs" / "datasets" / f"{name}.yaml"))
        cfg.DATASET.ROOT = str(data_root)
        DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)


def _run_chain_in_worker(chain, ctx):
    """Worker entry point: one thread, jobs run in this process; returns (outcomes, seconds)."""
    import torch

    torch.set_num_threads(1)
    start = time.time()
    outcomes = run_chain(chain, ctx, capture=True, report=lambda message: None)
    return outcomes, time.time() - start


def _describe(outcomes, seconds):
    job = outcomes[0].job
    statuses = ", ".join(sorted({o.status for o in outcomes}))
    return f"{job.trainer}/{job.cfg} on {job.dataset}, seed {job.seed}: {statuses} ({seconds:.0f} s)"


def run_all(chains, ctx, workers):
    """Run the chains on a pool of worker processes with a progress bar; return every Outcome."""
    outcomes = []
    progress = tqdm(total=sum(len(chain) for chain in chains), unit="job", desc="micro benchmark",
                    file=sys.stdout, dynamic_ncols=True, disable=None)  # the bar only on a terminal
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pending = [pool.apply_async(_run_chain_in_worker, (chain, ctx)) for chain in chains]
        for result in pending:
            chain_outcomes, seconds = result.get()
            outcomes += chain_outcomes
            progress.update(len(chain_outcomes))
            progress.write(f"[{len(outcomes)}/{progress.total} jobs] {_describe(chain_outcomes, seconds)}")
        pool.close()  # let the workers exit on their own: the context manager's terminate() kills them, which
        pool.join()  # leaves their semaphores behind ("resource_tracker: ... leaked semaphore objects")
    progress.close()
    return outcomes


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_imports()
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = time.time()
    print(f"Micro benchmark: {len(RUNS)} methods x {len(args.datasets)} datasets x {len(args.seeds)} seed(s), "
          f"base-to-novel, 16 shots; data in {args.data}, results in {args.output}")
    generate_datasets(args.datasets, args.data)
    chains = [base2new(args.output, trainer, cfg, dataset, seed)
              for seed in args.seeds for dataset in args.datasets for trainer, cfg in RUNS]
    ctx = replace(RunContext(data_root=args.data), in_process=True, device="cpu")
    outcomes = run_all(chains, ctx, args.workers)

    from results.collect import collect

    report = build_report(collect(args.output).results, args.output / "results")
    print("\n" + report)
    print(f"Plot: {args.output / 'results' / 'base2new_hm.png'}; tables: {args.output / 'results'}")
    incomplete = [o for o in outcomes if o.status in INCOMPLETE]
    if incomplete:
        print("\n".join(summary_lines(outcomes)))
    print(f"Done in {time.time() - start:.0f} s")
    return 1 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
