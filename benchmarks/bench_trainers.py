"""Speed and memory of every CLIP prompt trainer, fast path vs the released code's straightforward path.

    python -m benchmarks.bench_trainers                      # CPU, fp32, 2 threads, ViT-B/16 shapes (docs/BENCHMARK.md)
    python -m benchmarks.bench_trainers --device cuda --prec amp --threads 8
    python -m benchmarks.bench_trainers --quick              # smoke run on tiny-ViT, about a minute, figures only
    python -m benchmarks.bench_trainers --families openai open_clip   # also through open_clip: ratio table
    python -m benchmarks.bench_trainers --trainers CoOp MaPLe BMIP-reference BMIP-per_sample \
        --large-classes 1000 --large-fit-classes 100 200 --large-only    # ImageNet-scale training memory
    python -m benchmarks.bench_trainers --trainers CoOp MaPLe BMIP-reference BMIP-per_sample PromptSRC \
        --scaling-classes 100 1000 --large-only       # class-chunked text: memory flat in the classes, its cost
    python -m benchmarks.bench_trainers --trainers BMIP-reference --eval-many-classes 21000 --large-only

CLIP has real architecture shapes and random weights (no download). Each measurement runs in its own process
(``benchmarks.runner``) so its peak memory is its own; see ``benchmarks.measure`` for the timing protocol. The run
prints a markdown table and the ratios the targets are stated in (with verdicts only for the full ViT-B/16 CPU run
the targets are stated for), and writes everything to ``--out`` (JSON). With ``--families openai open_clip`` every
measurement runs twice, on the same random weights (saved once as an OpenAI-format file and read through open_clip's
OpenAI converter for the second family), and a table of the open_clip / OpenAI time ratios follows.
"""
import datetime
import json
import multiprocessing
import os
import os.path as osp
import platform
import shlex
import sys
import tempfile
import time

import torch

from clip_patch import PRECISIONS
from clip_patch.chunked import AUTO
from dassl.cli import OneLineArgumentParser

from .report import (class_scaling_table, compute_ratios, family_ratio_table, format_ratios, large_class_table,
                     many_class_eval_table, markdown_table, path_name)
from .runner import preload, run_measurement
from .subjects import (JUDGED_BACKBONE, benchmark_backbone, benchmark_subjects, chunking_cost_spec,
                       class_scaling_spec, large_class_spec, openai_format_path, published_settings,
                       write_openai_format)

FAMILIES = ("openai", "open_clip")

FULL_DEFAULTS = {"backbone": "ViT-B/16", "threads": 2, "classes_train": 50, "classes_eval": [100, 1000],
                 "batch_eval": 32, "repeats": 3, "max_seconds": 30.0, "loader_images": 64, "loader_epochs": 2,
                 "out": osp.join("output", "benchmark", "bench_trainers.json")}
QUICK_DEFAULTS = {"backbone": "tiny-ViT", "threads": 1, "classes_train": 10, "classes_eval": [10, 20],
                  "batch_eval": 4, "repeats": 5, "max_seconds": 1.0, "loader_images": 8, "loader_epochs": 1,
                  "out": osp.join("output", "benchmark", "bench_trainers_quick.json")}


def build_parser():
    parser = OneLineArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", help="backbone whose shapes to use, with random weights (default ViT-B/16; "
                                           "--quick: tiny-ViT; also ViT-L/14, ...)")
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "cuda:N"')
    parser.add_argument("--prec", default="fp32", choices=PRECISIONS,
                        help="frozen-encoder compute (fp16/amp need CUDA; on CPU they run fp32)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads of each measurement process (default 2; --quick: 1, as tiny-ViT's "
                             "operations are too small to share, and two spinning threads on a busy machine stall)")
    parser.add_argument("--classes-train", type=int, help="classes of the training step (default 50)")
    parser.add_argument("--classes-eval", type=int, nargs="+", help="class counts of evaluation (default 100 1000)")
    parser.add_argument("--straightforward-eval-classes", type=int, nargs="*",
                        help="class counts at which the straightforward path is also evaluated "
                             "(default: the smallest of --classes-eval; it re-encodes every class each batch)")
    parser.add_argument("--batch-train", type=int, default=4, help="training batch size")
    parser.add_argument("--batch-eval", type=int, help="evaluation batch size (default 32)")
    parser.add_argument("--cocoop-eval-batch", type=int, default=2,
                        help="evaluation batch cap for CoCoOp, which encodes every class prompt once per image")
    parser.add_argument("--repeats", type=int, help="timed repetitions per measurement, median reported (default 3)")
    parser.add_argument("--max-seconds", type=float,
                        help="stop repeating a measurement once its timed calls took this long (default 30)")
    subjects = list(benchmark_subjects())
    parser.add_argument("--trainers", nargs="+", default=subjects, choices=subjects,
                        help="trainers to measure (default: all)")
    parser.add_argument("--loader-workers", type=int, default=2, help="data-loader workers of the loading benchmark")
    parser.add_argument("--loader-images", type=int, help="generated JPEGs of the loading benchmark (default 64)")
    parser.add_argument("--jpeg-size", type=int, default=224, help="side of the generated JPEGs in pixels")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a measurement is abandoned")
    parser.add_argument("--large-classes", type=int,
                        help="also measure training at this many classes (e.g. 1000, ImageNet) at each method's "
                             "published batch size, fast and straightforward, for the trainers marked "
                             "large_class_memory in benchmarks/subjects.py")
    parser.add_argument("--large-fit-classes", type=int, nargs="*", default=[],
                        help="smaller class counts at which the large-class training is also measured, to "
                             "extrapolate its memory linearly to --large-classes (e.g. 100 200)")
    parser.add_argument("--scaling-classes", type=int, nargs=2, metavar=("SMALL", "LARGE"),
                        help="also measure the peak memory of one fast training step at SMALL and LARGE classes "
                             "with the class-chunked text encoding (MODEL.TEXT_CHUNK_CLASSES auto) and at LARGE "
                             "without it (0), and the step time chunked / one pass at LARGE (steps alternating in "
                             "one process), at each method's published batch size, for the trainers marked "
                             "large_class_memory (e.g. 100 1000)")
    parser.add_argument("--scaling-rounds", type=int, default=1,
                        help="timed rounds of --scaling-classes' step-time comparison at LARGE (one chunked step and "
                             "one one-pass step each, alternating, after one warm-up step each; default 1)")
    parser.add_argument("--eval-many-classes", type=int,
                        help="also measure evaluation of --trainers at this many classes (beyond ImageNet's 1000: "
                             "numbered copies of its names), class text features in chunks (e.g. 21000)")
    parser.add_argument("--large-only", action="store_true",
                        help="run only the class-count measurements (--large-classes, --scaling-classes, "
                             "--eval-many-classes)")
    parser.add_argument("--memory-cap-mb", type=float,
                        help="stop a measurement whose resident memory exceeds this (default: 80%% of RAM); it is "
                             "reported as needing more")
    parser.add_argument("--families", nargs="+", default=["openai"], choices=FAMILIES,
                        help="backbone families to measure (default openai); with both, the same random weights run "
                             "through each and a table of open_clip / openai ratios is printed")
    parser.add_argument("--out", help=f"JSON output path (default {FULL_DEFAULTS['out']}; "
                                      f"--quick: {QUICK_DEFAULTS['out']})")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny-ViT, 1 thread, 10/20 classes, eval batch 4, up to 5 repetitions within "
                             "about 1 s, figures only, its own output file (explicit flags still win)")
    return parser


def physical_memory_mb():
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 20


def resolve_args(args):
    """Fill unset options from the full or quick defaults and check every value; returns ``args``."""
    defaults = QUICK_DEFAULTS if args.quick else FULL_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.straightforward_eval_classes is None:
        args.straightforward_eval_classes = [min(args.classes_eval)]
    try:
        args.backbone_name = benchmark_backbone(args.backbone)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} but CUDA is not available here; use --device cpu.")
    if args.memory_cap_mb is None and device.type == "cpu":
        args.memory_cap_mb = 0.8 * physical_memory_mb()
    args.judge = not args.quick and args.backbone_name == JUDGED_BACKBONE and device.type == "cpu"
    large = ([args.large_classes] if args.large_classes else []) + args.large_fit_classes
    if args.large_fit_classes and not args.large_classes:
        raise SystemExit("--large-fit-classes extrapolates to --large-classes; give --large-classes too.")
    if args.large_only and not (args.large_classes or args.scaling_classes or args.eval_many_classes):
        raise SystemExit("--large-only runs the class-count measurements; give --large-classes, --scaling-classes "
                         "or --eval-many-classes too.")
    if args.scaling_classes and not 1 <= args.scaling_classes[0] < args.scaling_classes[1]:
        raise SystemExit(f"--scaling-classes SMALL LARGE needs 1 <= SMALL < LARGE, got {args.scaling_classes}.")
    large += list(args.scaling_classes or [])
    if args.eval_many_classes is not None and args.eval_many_classes < 1:
        raise SystemExit(f"--eval-many-classes must be at least 1, got {args.eval_many_classes}.")
    for name in ("threads", "batch_train", "batch_eval", "cocoop_eval_batch", "repeats", "loader_images",
                 "scaling_rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    for count in [args.classes_train, *args.classes_eval, *args.straightforward_eval_classes, *large]:
        if not 1 <= count <= 1000:
            raise SystemExit(f"Class counts must be in 1..1000 (real ImageNet class names), got {count}.")
    extra = set(args.straightforward_eval_classes) - set(args.classes_eval)
    if extra:
        raise SystemExit(f"--straightforward-eval-classes {sorted(extra)} not in --classes-eval {args.classes_eval}.")
    return args


def large_class_specs(args, common):
    """Training at ``--large-classes`` (and the fit points) at each method's published batch size, both paths."""
    if not args.large_classes:
        return []
    specs, subjects = [], benchmark_subjects()
    for trainer in args.trainers:
        if not subjects[trainer].large_class_memory:
            continue
        _, batch, _ = published_settings(trainer, args.backbone_name)
        for classes in [args.large_classes, *args.large_fit_classes]:
            for straightforward in (False, True):
                specs.append(large_class_spec(trainer, straightforward, classes, batch, **common))
    return specs


def class_scaling_specs(args, common):
    """The ``--scaling-classes`` measurements: chunked at SMALL and LARGE, one pass at LARGE, per trainer."""
    if not args.scaling_classes:
        return []
    small, large = args.scaling_classes
    specs, subjects = [], benchmark_subjects()
    for trainer in args.trainers:
        if subjects[trainer].large_class_memory:
            _, batch, _ = published_settings(trainer, args.backbone_name)
            specs += [class_scaling_spec(trainer, classes, batch, chunk, **common)
                      for classes, chunk in ((small, AUTO), (large, AUTO), (large, 0))]
            specs.append(chunking_cost_spec(trainer, large, batch, args.scaling_rounds, **common))
    return specs


def many_class_eval_specs(args, common):
    """The ``--eval-many-classes`` measurements: one evaluation per trainer (warm-up fills the text cache, then one
    timed batch), fast path, chunked text features."""
    if not args.eval_many_classes:
        return []
    return [{**common, "kind": "eval", "group": "many_classes", "trainer": trainer, "straightforward": False,
             "classes": args.eval_many_classes, "batch": args.batch_eval, "repeats": 1, "max_seconds": 0.0}
            for trainer in args.trainers]


def class_count_specs(args, common):
    return large_class_specs(args, common) + class_scaling_specs(args, common) + many_class_eval_specs(args, common)


def plan(args):
    """The measurement specs, in the order they run (the fast paths next to the floor they are compared with)."""
    common = {"backbone": args.backbone_name, "device": args.device, "prec": args.prec, "threads": args.threads,
              "repeats": args.repeats, "max_seconds": args.max_seconds}
    if args.large_only:
        return class_count_specs(args, common)
    specs = [{**common, "kind": "data", "batch": args.batch_train, "workers": args.loader_workers,
              "images": args.loader_images, "jpeg_size": args.jpeg_size, "epochs": args.loader_epochs,
              "device": "cpu"}]
    subjects = benchmark_subjects()
    for trainer in args.trainers:
        if subjects[trainer].trains:
            for straightforward in (False, True):
                specs.append({**common, "kind": "train", "trainer": trainer, "straightforward": straightforward,
                              "classes": args.classes_train, "batch": args.batch_train})

    def eval_spec(trainer, classes, straightforward):
        per_image = subjects[trainer].per_image_text
        batch = min(args.batch_eval, args.cocoop_eval_batch) if per_image else args.batch_eval
        return {**common, "kind": "eval", "trainer": trainer, "straightforward": straightforward,
                "classes": classes, "batch": batch}

    for classes in args.classes_eval:
        specs.append({**common, "kind": "floor", "classes": classes, "batch": args.batch_eval})
        specs += [eval_spec(trainer, classes, False) for trainer in args.trainers]
    for classes in args.straightforward_eval_classes:
        specs += [eval_spec(trainer, classes, True) for trainer in args.trainers]
    return specs + class_count_specs(args, common)


def openai_format_file(backbone, folder):
    """The backbone's OpenAI-format file, written by a fresh interpreter: building it here would start torch's
    thread pool in this process, which the measurements are forked from (a forked pool can deadlock)."""
    process = multiprocessing.get_context("spawn").Process(target=write_openai_format, args=(backbone, folder))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"Could not write the OpenAI-format file of {backbone} for the open_clip family "
                         f"(exit code {process.exitcode}).")
    return openai_format_path(backbone, folder)


def with_family(specs, family, weights):
    """The specs again, for ``family`` (open_clip: ``weights``, the OpenAI-format file of the same backbone); the
    data-loading measurement does not depend on the backbone and runs once."""
    if family == "openai":
        return [{**spec, "family": family} for spec in specs]
    return [{**spec, "family": family, "weights": weights} for spec in specs if spec["kind"] != "data"]


def describe(spec):
    family = "" if spec.get("family", "openai") == "openai" else f"[{spec['family']}] "
    return family + _describe(spec)


def _describe(spec):
    if spec["kind"] == "data":
        return f"data loading ({spec['workers']} workers, {spec['images']} JPEGs)"
    if spec["kind"] == "floor":
        return f"eval  zero-shot floor @ {spec['classes']} classes"
    batch = f", batch {spec['batch']}" if spec.get("group") else ""
    chunk = {None: "", AUTO: ", text in class chunks", 0: ", text in one pass"}[spec.get("text_chunk_classes")]
    chunk = ", step time: text in class chunks / in one pass, alternating" if spec.get("alternate_one_pass") else chunk
    return (f"{spec['kind']:5} {spec['trainer']} {path_name(spec['straightforward'])} @ {spec['classes']} "
            f"classes{batch}{chunk}")


def summary_line(result):
    if "peak_memory_mb_above" in result:
        return f"stopped: needs more than the {result['peak_memory_mb_above']:.0f} MB memory cap"
    if "error" in result:
        return f"FAILED: {result['error']}"
    if result["kind"] == "data":
        return f"{result['images_per_s']:.1f} images/s"
    reps = len(result["times_s"])
    speed = (f"{result['median_s']:.2f} s/step" if result["kind"] == "train"
             else f"{result['images_per_s']:.2f} images/s")
    if "one_pass_median_s" in result:
        speed += f" in class chunks, {result['one_pass_median_s']:.2f} s/step in one pass"
    return f"{speed} (median of {reps}), peak {result['peak_memory_mb']:.0f} MB"


def machine_info(device):
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "cpu": platform.processor()}
    if osp.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if models:
            info["cpu"] = models[0]
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = resolve_args(build_parser().parse_args(argv))
    started = time.time()
    results = []
    if args.device == "cpu":
        preload()  # imported once here; each measurement is forked from this process
    with tempfile.TemporaryDirectory(prefix="bench_trainers_") as workdir:
        weights = openai_format_file(args.backbone_name, workdir) if "open_clip" in args.families else ""
        specs = [spec for family in args.families for spec in with_family(plan(args), family, weights)]
        for index, spec in enumerate(specs):
            print(f"[{index + 1}/{len(specs)}] {describe(spec)} ...", flush=True)
            result = run_measurement(spec, workdir, index, args.timeout, args.memory_cap_mb)
            print(f"    {summary_line(result)}", flush=True)
            results.append(result)
    first = [r for r in results if r.get("family", "openai") == args.families[0] or r["kind"] == "data"]
    ratios = compute_ratios(first, args.classes_train, args.classes_eval, judge=args.judge)
    table = markdown_table(first, args.trainers, args.classes_train, args.classes_eval, args.batch_train,
                           args.batch_eval)
    families = family_ratio_table(results) if len(args.families) > 1 else ""
    large = large_class_table(results, args.large_classes) if args.large_classes else ""
    if args.scaling_classes:
        large += "\n\n" + class_scaling_table(results, *args.scaling_classes)
    if args.eval_many_classes:
        large += "\n\n" + many_class_eval_table(results, args.eval_many_classes)
    large = large.strip()
    report = {
        "command": " ".join(["python -m benchmarks.bench_trainers", shlex.join(argv)]).strip(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(args.device),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "wall_s": time.time() - started,
        "measurements": results,
        "ratios": ratios,
        "table_markdown": table,
        "large_class_table_markdown": large,
        "family_ratio_table_markdown": families,
    }
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    if not args.large_only:
        print("\n" + table + "\n\nRatios:\n" + format_ratios(ratios))
        if not args.judge:
            print("\nFigures only: the targets are stated for the full run on ViT-B/16 shapes on the CPU "
                  "(python -m benchmarks.bench_trainers); GPU goals are judged by python -m benchmarks.gpu_check.")
    if families:
        print("\n" + families)
    if large:
        print("\n" + large)
    print(f"\nWrote {args.out} ({report['wall_s'] / 60:.1f} min)")
    failed = [describe(r) for r in results if "error" in r and "peak_memory_mb_above" not in r]
    if failed:
        print(f"{len(failed)} measurement(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
