"""GPU readiness: every trainer in half precision against fp32, training stability, speed and memory, in one run.

    python -m benchmarks.gpu_check                                   # one CUDA GPU, ViT-B/16 shapes, 5-minute budget
    python -m benchmarks.gpu_check --device cpu --backbone tiny-ViT  # the same logic on the CPU (tests)

Checks, in this order (docs/BENCHMARK.md, "GPU check", says what each one means and how the tolerances are derived):

1. environment: the device, its bf16 support, the precision policy's decision for every PREC on it.
2. parity: for every trainer, the fast path in fp16 / amp / bf16 against the fp32 straightforward path and the
   fp32 fast path (logits and gradients, same weights and inputs; ``benchmarks.parity``), and fp32 fast against
   fp32 straightforward. On CPU, fp16 and amp are emulated (fp16 weights / fp16 autocast on CPU kernels).
3. training: every trainable method, 50 steps on one fixed synthetic batch in its published config's precision
   (fp16, or amp for MMA, MMRL and MMRL++) and batch size at the config's learning rate: finite losses, a sane
   GradScaler, a lower loss, every parameter, buffer and optimizer state on the device.
4. memory: training at 1000 classes (ImageNet) at the published batch size, fast and straightforward paths, for
   the trainers marked ``large_class_memory``: peak GPU memory, and whether the fast path fits a 16 GB GPU; then
   BMIP (both modes, fast path) on ``--memory-large-backbone`` (ViT-L/14 shapes), which should fit a 24 GB GPU.
5. speed: train step, evaluation throughput at 100 and 1000 classes and peak memory for the trainers marked
   ``gpu_table`` and the zero-shot floor, in fp32, fp16 and bf16, with the GPU goals.

Every check prints one verdict line per item: PASS / FAIL / ERROR / SKIPPED (correctness), MET / MISSED (goals,
judged only on CUDA with ViT-B/16 shapes), INFO (figures). The JSON (``--out``) is rewritten after every line, so a
run stopped by a timeout keeps what it measured; ``--budget-s`` skips what would start after the budget. Exit status
1 if anything FAILED, raised an ERROR or was SKIPPED; goals do not change it.
"""
import contextlib
import datetime
import gc
import io
import json
import math
import os
import os.path as osp
import platform
import shlex
import sys
import time
import traceback
import warnings

import torch

from clip_patch import PRECISIONS
from dassl.cli import OneLineArgumentParser

from . import measure, parity
from .report import find
from .subjects import (FLOOR, JUDGED_BACKBONE, benchmark_backbone, benchmark_subjects, build_trainer,
                       input_resolution, large_class_spec, published_settings, trainer_spec)

DEFAULT_OUT = osp.join("output", "benchmark", "gpu_check.json")
CHECKS = ("environment", "parity", "training", "memory", "speed")
FAILING = ("FAIL", "ERROR", "SKIPPED")
GIB = 2 ** 30
FITS_16GB_RESERVED_GIB = 14.0  # a 16 GB card has 15-15.8 GiB usable; ~1 GiB goes to the CUDA context and libraries
FITS_24GB_RESERVED_GIB = 22.0  # a 24 GB card has 23-23.6 GiB usable, less the same ~1 GiB
LARGE_BACKBONE = "ViT-L/14"  # the memory check's second backbone (checked when --backbone is ViT-B/16)
MAX_SKIPPED_STEPS = 8  # GradScaler halvings allowed in the 50 steps (initial scale 2^16 -> at least 2^8)
GOALS = {"train_vs_base": 1.1, "eval_vs_floor": 0.8, "half_speedup": 2.0}  # issue 16, "Goals for the GPU figures"


class Report:
    """Verdict records: one printed line each, and the whole JSON rewritten after each."""

    def __init__(self, path, header):
        self.path, self.header, self.records, self.extra = path, header, [], {}
        self.started = time.time()

    def add(self, check, name, verdict, detail, **figures):
        line = f"{verdict:7} {check:11} {name}: {detail}"
        print(line, flush=True)
        self.records.append({"check": check, "name": name, "verdict": verdict, "line": line, **figures})
        self.write()

    def counts(self):
        counts = {}
        for r in self.records:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        return counts

    def exit_code(self):
        return 1 if any(r["verdict"] in FAILING for r in self.records) else 0

    def write(self):
        data = {**self.header, **self.extra, "records": self.records,
                "summary": {"counts": self.counts(), "exit_code": self.exit_code(),
                            "wall_s": time.time() - self.started}}
        os.makedirs(osp.dirname(osp.abspath(self.path)), exist_ok=True)
        with open(self.path + ".part", "w") as f:
            json.dump(data, f, indent=1, default=str)
        os.replace(self.path + ".part", self.path)


class Budget:
    def __init__(self, seconds):
        self.deadline = time.time() + seconds

    def left(self):
        return self.deadline - time.time()


@contextlib.contextmanager
def quiet():
    """Silence the trainers' build lines and the CPU fallback warning (reported as the effective precision)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", message="PREC .* needs")
        yield


def effective_precision(prec, device):
    with quiet():
        return parity.Precision(prec, device).prec


def release_memory(device):
    """Free the finished item's GPU memory, so that the next item's peak is its own. Nothing on the CPU, where no
    memory figure is taken (and a full collection costs about a second in a large process such as a test run)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def guarded(report, check, name, budget, device, fn):
    """Run one check item: SKIPPED past the budget, ERROR (with the exception's last lines) if it raises."""
    if budget.left() <= 0:
        report.add(check, name, "SKIPPED", "time budget (--budget-s) spent")
        return None
    try:
        return fn()
    except Exception as err:  # one failing item must not hide the others
        tail = " | ".join(traceback.format_exc().strip().splitlines()[-3:])
        report.add(check, name, "ERROR", f"{type(err).__name__}: {err}".splitlines()[0][:300], traceback=tail)
        return None
    finally:
        release_memory(device)


def _u(value, u):
    return f"{value / u:.1f}u" if math.isfinite(value) else "non-finite"


# -- 1. environment -----------------------------------------------------------------------------------------------
def environment(device):
    """Device facts and the precision policy's decision for every PREC on it."""
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", memory_gib=props.total_memory / GIB,
                    cuda=torch.version.cuda, native_bf16=props.major >= 8,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    policy = {}
    for prec in PRECISIONS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            p = parity.Precision(prec, device)
        policy[prec] = {"computes": p.prec, "dtype": str(p.compute_dtype).replace("torch.", ""),
                        "fp16_weights": p.casts_frozen_weights, "grad_scaler": p.uses_grad_scaler,
                        "warning": " ".join(str(w.message) for w in caught)}
    info["policy"] = policy
    return info


def check_environment(report, device):
    info = environment(device)
    report.extra["environment"] = info
    policy = ", ".join(f"{k}->{v['computes']}{' (fp16 weights, GradScaler)' if v['fp16_weights'] else ''}"
                       f"{' (GradScaler)' if v['grad_scaler'] and not v['fp16_weights'] else ''}"
                       for k, v in info["policy"].items())
    for dtype in (torch.float16, torch.bfloat16):  # the device computes in both half precisions
        x = torch.ones(8, 8, device=device, dtype=dtype)
        assert float((x @ x).sum()) == 512.0
    name = info.get("gpu", platform.processor() or "cpu")
    report.add("environment", name, "PASS", f"torch {info['torch']}, {device}; PREC policy: {policy}", **info)


# -- 2. parity ----------------------------------------------------------------------------------------------------
def check_parity(report, trainer_id, args, device):
    classes = args.parity_classes
    batch = 2 if trainer_spec(trainer_id).per_image_text else 4
    generator = torch.Generator().manual_seed(0)
    resolution = input_resolution(args.backbone_name)
    images = torch.randn(batch, 3, resolution, resolution, generator=generator)  # [B, 3, R, R]
    labels = torch.randint(0, classes, (batch,), generator=generator)  # [B]

    def build(tid, prec):
        with quiet():
            return build_trainer(tid, args.backbone_name, str(device), prec, classes)

    records = parity.check_trainer(build, trainer_id, images, labels, args.parity_precs,
                                   emulate_on_cpu=not args.no_emulation, released_in_prec=device.type == "cuda")
    for r in records:
        u, tol, errors = r["unit_roundoff"], r["tolerances"], r["errors"]
        parts = [f"{key.replace('_', ' ')} logits {_u(e['logits_err'], u)} grads {_u(e['grads_err'], u)}"
                 + (f" (worst family {e['worst_family']} {_u(e['family_err'], u)}"
                    f"{'' if r['families_judged'] else ', not judged'})" if e["worst_family"] else "")
                 for key, e in errors.items()]
        computes = r["effective_prec"] + (", emulated on CPU" if r["emulated"] else "")
        detail = (f"{'; '.join(parts)}; eval path {_u(r['eval_vs_train_logits_err'], u)}; tolerance logits "
                  f"{_u(tol['logits'], u)} grads {_u(tol['grads'], u)} (u = 2^{round(math.log2(u))})")
        report.add("parity", f"{trainer_id} {r['prec']} ({computes})", "PASS" if r["passed"] else "FAIL", detail,
                   **r)


# -- 3. training --------------------------------------------------------------------------------------------------
def misplaced_tensors(trainer, device):
    """Names of the model's parameters / buffers and the optimizer's state tensors that are not on ``device``."""
    def off(t):
        return t.device.type != device.type or (device.index is not None and t.device.index != device.index)

    names = [n for n, t in [*trainer.model.named_parameters(), *trainer.model.named_buffers()] if off(t)]
    for optim in trainer._optims.values():
        for state in optim.state.values():
            names += [f"optimizer state {k}" for k, t in state.items() if torch.is_tensor(t) and t.dim() and off(t)]
    return names


def check_training(report, trainer_id, args, device):
    prec, batch, lr = published_settings(trainer_id, args.backbone_name, str(device))
    with quiet():
        trainer = build_trainer(trainer_id, args.backbone_name, str(device), prec, args.train_classes)
    precision = parity.precision_for(prec, device, emulate_on_cpu=not args.no_emulation)
    if isinstance(precision, parity.EmulatedPrecision):
        parity.set_precision(trainer, precision)
    for group in trainer.optim.param_groups:
        group["lr"] = lr  # the published rate after warm-up (the warm-up rate, 1e-5, moves nothing)
    generator = torch.Generator().manual_seed(0)
    resolution = input_resolution(args.backbone_name)
    fixed = {"img": torch.randn(batch, 3, resolution, resolution, generator=generator),  # [B, 3, R, R]
             "label": torch.randint(0, args.train_classes, (batch,), generator=generator)}  # [B]
    trainer.set_model_mode("train")
    losses, scales = [], []
    for step in range(args.train_steps):
        try:
            losses.append(trainer.forward_backward(fixed)["loss"])
        except FloatingPointError as err:
            losses.append(math.nan)
            report.add("training", f"{trainer_id} {precision.prec}", "FAIL", f"step {step}: {err}", losses=losses)
            return
        scales.append(trainer.scaler.get_scale() if trainer.scaler is not None else None)
    misplaced = misplaced_tensors(trainer, device)
    k = max(1, min(5, len(losses) // 2))
    last = sum(losses[-k:]) / k
    skipped = sum(1 for a, b in zip([parity.INITIAL_LOSS_SCALE] + scales, scales) if b is not None and b < a)
    scaler_ok = all(s is None or (math.isfinite(s) and s >= parity.INITIAL_LOSS_SCALE / 2 ** MAX_SKIPPED_STEPS)
                    for s in scales)
    finite = all(math.isfinite(x) for x in losses)
    learner = parity.learner_of(trainer)
    params_ok = all(p.dtype == torch.float32 and bool(torch.isfinite(p).all()) for p in learner.parameters())
    passed = finite and scaler_ok and last < losses[0] and params_ok and not misplaced
    scaler = ("no GradScaler" if scales[-1] is None else
              f"GradScaler {parity.INITIAL_LOSS_SCALE:.0f} -> {scales[-1]:.0f} ({skipped} skipped steps, "
              f"at most {MAX_SKIPPED_STEPS} allowed)")
    computes = precision.prec + (", emulated on CPU" if isinstance(precision, parity.EmulatedPrecision) else "")
    detail = (f"PREC {prec} ({computes}), batch {batch}, {args.train_classes} classes, lr {lr:g}, "
              f"{len(losses)} steps: loss {losses[0]:.4f} -> {last:.4f} (mean of the last {k}); "
              f"{'finite' if finite else 'NON-FINITE'}; {scaler}; trainable tensors "
              f"{'fp32 and finite' if params_ok else 'NOT fp32/finite'}; "
              f"{'all tensors on ' + str(device) if not misplaced else 'OFF DEVICE: ' + ', '.join(misplaced[:5])}")
    report.add("training", f"{trainer_id} {prec}", "PASS" if passed else "FAIL", detail, losses=losses,
               scales=scales, skipped_steps=skipped, misplaced=misplaced, batch=batch, lr=lr)


# -- 4. memory at 1000 classes --------------------------------------------------------------------------------------
def run_spec(spec, device):
    """One ``benchmarks.measure`` measurement in this process (peak GPU memory is reset first; on CPU the process's
    peak is not the measurement's, so no memory figure is given)."""
    release_memory(device)
    with quiet():
        result = measure.measure(spec)
    if device.type == "cuda":
        result["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2 ** 20
    else:
        result["peak_memory_mb"], result["memory_kind"] = None, "not measured (one CPU process for every check)"
    return result


def check_memory(report, trainer_id, straightforward, args, device, backbone=None):
    """One training step at ``--memory-classes``; the fast path judged against a 16 GB GPU, or against a 24 GB GPU
    on ``backbone`` (the large backbone)."""
    large = backbone is not None
    backbone = backbone or args.backbone_name
    prec, batch, _ = published_settings(trainer_id, backbone, str(device))
    path = "straightforward" if straightforward else "fast"
    name = f"{trainer_id} {path} @{args.memory_classes} classes, batch {batch}, PREC {prec}"
    name += f", {backbone}" if large else ""
    card, fits_gib = ("24 GB", FITS_24GB_RESERVED_GIB) if large else ("16 GB", FITS_16GB_RESERVED_GIB)
    spec = large_class_spec(trainer_id, straightforward, args.memory_classes, batch, backbone=backbone,
                            device=str(device), prec=prec, threads=args.threads)
    try:
        result = run_spec(spec, device)
    except torch.cuda.OutOfMemoryError:
        release_memory(device)
        total = torch.cuda.get_device_properties(device).total_memory / GIB
        verdict = "INFO" if straightforward else "MISSED"
        report.add("memory", name, verdict, f"out of memory on this {total:.0f} GiB GPU", **spec, oom=True)
        return
    step = f"step {result['median_s'] * 1000:.0f} ms"
    if result["peak_memory_mb"] is None:
        report.add("memory", name, "INFO", f"{step}; {result['memory_kind']}", **result)
        return
    reserved_gib = result["peak_reserved_mb"] / 1024
    fits = reserved_gib <= fits_gib
    verdict = "INFO" if straightforward else ("MET" if fits else "MISSED")
    report.add("memory", name, verdict,
               f"peak {result['peak_memory_mb'] / 1024:.2f} GiB allocated, {reserved_gib:.2f} GiB reserved: "
               f"{'fits' if fits else 'does NOT fit'} a {card} GPU (goal for the fast path: reserved <= "
               f"{fits_gib} GiB); {step}", fits=fits, card=card, **result)


# -- 5. speed -----------------------------------------------------------------------------------------------------
def speed_specs(args, device, prec):
    common = {"backbone": args.backbone_name, "device": str(device), "prec": prec, "threads": args.threads,
              "repeats": args.repeats, "max_seconds": args.max_seconds}
    trainers = [t for t in args.trainers if trainer_spec(t).gpu_table]
    specs = [{**common, "kind": "train", "trainer": t, "straightforward": False, "classes": args.speed_train_classes,
              "batch": args.speed_train_batch} for t in trainers]
    for classes in args.speed_eval_classes:
        specs.append({**common, "kind": "floor", "classes": classes, "batch": args.speed_eval_batch})
        specs += [{**common, "kind": "eval", "trainer": t, "straightforward": False, "classes": classes,
                   "batch": args.speed_eval_batch} for t in trainers]
    return specs


def _describe(spec):
    what = "zero-shot floor" if spec["kind"] == "floor" else spec["trainer"]
    return f"{spec['kind']} {what} @{spec['classes']} classes, batch {spec['batch']}, {spec['prec']}"


def speed_table(results, trainers, args):
    """Markdown: one row per trainer (and the floor), for one precision."""
    header = ["trainer", f"train step ms (batch {args.speed_train_batch}, {args.speed_train_classes} cls)",
              "train peak MB"]
    header += [f"eval img/s @{c} (batch {args.speed_eval_batch})" for c in args.speed_eval_classes]
    header += [f"eval peak MB @{c}" for c in args.speed_eval_classes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(m, key, scale=1.0, digits=1):
        return "—" if m is None or m.get(key) is None else f"{m[key] * scale:.{digits}f}"

    for trainer in [FLOOR, *trainers]:
        train = None if trainer == FLOOR else find(results, "train", trainer, False, args.speed_train_classes)
        evals = [find(results, "floor" if trainer == FLOOR else "eval", None if trainer == FLOOR else trainer,
                      False, c) for c in args.speed_eval_classes]
        cells = [cell(train, "median_s", 1000), cell(train, "peak_memory_mb", digits=0)]
        cells += [cell(m, "images_per_s") for m in evals] + [cell(m, "peak_memory_mb", digits=0) for m in evals]
        label = "zero-shot floor (image encoder only)" if trainer == FLOOR else trainer
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def speed_goals(results_by_prec, trainers, args, judge):
    """``(name, value, goal, met)`` for the GPU goals; ``met`` None when the run is not one the goals are for."""
    goals = []

    def ratio(name, top, bottom, field, goal, at_most=False):
        """Goal on top[field] / bottom[field], when both measurements exist."""
        if top and bottom:
            value, bound = top[field] / bottom[field], GOALS[goal]
            met = value <= bound if at_most else value >= bound
            goals.append((name, value, f"{'<=' if at_most else '>='} {bound}", met))

    small, n_train = min(args.speed_eval_classes), args.speed_train_classes
    for prec, results in results_by_prec.items():
        for trainer in trainers:
            base = trainer_spec(trainer).compare_with
            fast = find(results, "train", trainer, False, n_train)
            evaluation = find(results, "eval", trainer, False, small)
            if base:
                ratio(f"{trainer} {prec}: train step / {base}'s", fast, find(results, "train", base, False, n_train),
                      "median_s", "train_vs_base", at_most=True)
                ratio(f"{trainer} {prec}: eval @{small} classes / zero-shot floor", evaluation,
                      find(results, "floor", None, False, small), "images_per_s", "eval_vs_floor")
            if prec != "fp32" and "fp32" in results_by_prec:
                reference = results_by_prec["fp32"]
                ratio(f"{trainer} {prec}: train step speed-up over fp32", find(reference, "train", trainer, False,
                      n_train), fast, "median_s", "half_speedup")
                ratio(f"{trainer} {prec}: eval @{small} speed-up over fp32", evaluation,
                      find(reference, "eval", trainer, False, small), "images_per_s", "half_speedup")
    return [(name, value, goal, met if judge else None) for name, value, goal, met in goals]


def check_speed(report, args, device, budget, judge):
    trainers = [t for t in args.trainers if trainer_spec(t).gpu_table]
    results_by_prec, tables = {}, {}
    for prec in args.speed_precs:
        results = []
        for spec in speed_specs(args, device, prec):
            def measure_one(spec=spec):
                result = run_spec(spec, device)
                figure = (f"{result['median_s'] * 1000:.1f} ms/step" if spec["kind"] == "train"
                          else f"{result['images_per_s']:.1f} images/s")
                memory = ("" if result["peak_memory_mb"] is None else
                          f", peak {result['peak_memory_mb']:.0f} MB allocated")
                report.add("speed", _describe(spec), "INFO",
                           f"{figure} (median of {len(result['times_s'])}){memory}", **result)
                return result
            result = guarded(report, "speed", _describe(spec), budget, device, measure_one)
            if result is not None:
                results.append(result)
        results_by_prec[prec] = results
        tables[prec] = speed_table(results, trainers, args)
        computes = effective_precision(prec, device)
        title = prec if computes == prec else f"{prec} (computes {computes} on {device.type})"
        print(f"\nSpeed, {title} ({args.backbone_name}, {device}):\n{tables[prec]}\n", flush=True)
        report.extra["speed_tables"] = tables
    for name, value, goal, met in speed_goals(results_by_prec, trainers, args, judge):
        verdict = "INFO" if met is None else ("MET" if met else "MISSED")
        suffix = "" if met is not None else " (goals are judged only on CUDA with ViT-B/16 shapes)"
        report.add("speed", name, verdict, f"{value:.2f}, goal {goal}{suffix}", value=value, goal=goal)


# -- command line -------------------------------------------------------------------------------------------------
def build_parser():
    parser = OneLineArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help='"cuda", "cuda:N" or "cpu" (default cuda)')
    parser.add_argument("--backbone", default="ViT-B/16", help="backbone shapes, random weights (default ViT-B/16)")
    parser.add_argument("--checks", nargs="+", default=list(CHECKS), choices=CHECKS, help="checks to run (all)")
    subjects = list(benchmark_subjects())
    parser.add_argument("--trainers", nargs="+", default=subjects, choices=subjects, help="trainers to check (all)")
    parser.add_argument("--budget-s", type=float, default=280.0,
                        help="start nothing after this many seconds (default 280: the run ends within 5 min)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1), help="torch CPU threads")
    parser.add_argument("--parity-precs", nargs="+", default=list(parity.HALF_PRECISIONS),
                        choices=parity.HALF_PRECISIONS, help="half precisions compared with fp32 (all three)")
    parser.add_argument("--parity-classes", type=int, default=10, help="classes of the parity batch (10)")
    parser.add_argument("--no-emulation", action="store_true",
                        help="on CPU, run fp16 / amp as the policy does (fp32) instead of emulating them")
    parser.add_argument("--train-steps", type=int, default=50, help="training steps per trainer (50)")
    parser.add_argument("--train-classes", type=int, default=10, help="classes of the training batch (10)")
    parser.add_argument("--memory-classes", type=int, default=1000, help="classes of the memory check (1000)")
    parser.add_argument("--memory-large-backbone",
                        help=f"backbone shapes on which BMIP's fast path must fit a 24 GB GPU in the memory check "
                             f"(default {LARGE_BACKBONE} when --backbone is ViT-B/16, else none; 'none': skip)")
    parser.add_argument("--speed-precs", nargs="+", default=["fp32", "fp16", "bf16"], choices=PRECISIONS,
                        help="precisions of the speed table (fp32 fp16 bf16)")
    parser.add_argument("--speed-train-classes", type=int, default=50, help="classes of the timed train step (50)")
    parser.add_argument("--speed-train-batch", type=int, default=4, help="batch of the timed train step (4)")
    parser.add_argument("--speed-eval-classes", type=int, nargs="+", default=[100, 1000],
                        help="class counts of the evaluation throughput (100 1000)")
    parser.add_argument("--speed-eval-batch", type=int, default=100,
                        help="evaluation batch (100, the published configs' test batch)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per speed measurement (10)")
    parser.add_argument("--max-seconds", type=float, default=3.0, help="timed seconds per speed measurement (3)")
    return parser


def resolve_args(argv):
    """Parse and check the arguments (one line naming the problem, before any heavy work)."""
    args = build_parser().parse_args(argv)
    try:
        args.backbone_name = benchmark_backbone(args.backbone)
        large = args.memory_large_backbone or (LARGE_BACKBONE if args.backbone_name == JUDGED_BACKBONE else "none")
        args.large_backbone_name = None if large == "none" else benchmark_backbone(large)
        device = torch.device(args.device)
    except (ValueError, RuntimeError) as err:
        raise SystemExit(f"gpu_check: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: --device {args.device} but CUDA is not available here; on a machine without a "
                         f"GPU run --device cpu --backbone tiny-ViT.")
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"gpu_check: --device must be cuda, cuda:N or cpu, got {args.device}.")
    if device.type == "cuda" and device.index is None:
        device = torch.device(device.type, torch.cuda.current_device())
    for name in ("threads", "train_steps", "repeats", "speed_train_batch", "speed_eval_batch"):
        if getattr(args, name) < 1:
            raise SystemExit(f"gpu_check: --{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    counts = [args.parity_classes, args.train_classes, args.memory_classes, args.speed_train_classes,
              *args.speed_eval_classes]
    if not all(1 <= c <= 1000 for c in counts):
        raise SystemExit(f"gpu_check: class counts must be in 1..1000 (real ImageNet class names), got {counts}.")
    args.device_obj = device
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = resolve_args(argv)
    device = args.device_obj
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means IEEE fp32 here, the parity reference included
    torch.backends.cudnn.allow_tf32 = False
    budget = Budget(args.budget_s)
    judge = device.type == "cuda" and args.backbone_name == JUDGED_BACKBONE
    header = {"command": " ".join(["python -m benchmarks.gpu_check", shlex.join(argv)]).strip(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "settings": {k: v for k, v in vars(args).items() if k != "device_obj"},
              "goals_judged": judge}
    report = Report(args.out, header)
    print(f"gpu_check: {args.backbone_name} on {device}, budget {args.budget_s:.0f} s, checks {args.checks}",
          flush=True)
    if "environment" in args.checks:
        guarded(report, "environment", str(device), budget, device, lambda: check_environment(report, device))
    if "parity" in args.checks:
        for trainer in args.trainers:
            guarded(report, "parity", trainer, budget, device, lambda t=trainer: check_parity(report, t, args, device))
    if "training" in args.checks:
        for trainer in [t for t in args.trainers if trainer_spec(t).trains]:
            guarded(report, "training", trainer, budget, device,
                    lambda t=trainer: check_training(report, t, args, device))
    if "memory" in args.checks:
        for trainer in [t for t in args.trainers if trainer_spec(t).large_class_memory]:
            for straightforward in (False, True):
                guarded(report, "memory", f"{trainer} {'straightforward' if straightforward else 'fast'}", budget,
                        device, lambda t=trainer, s=straightforward: check_memory(report, t, s, args, device))
        bmip = [t for t in args.trainers if trainer_spec(t).trainer == "BMIP"]
        for trainer in bmip if args.large_backbone_name else []:
            guarded(report, "memory", f"{trainer} fast, {args.large_backbone_name}", budget, device,
                    lambda t=trainer: check_memory(report, t, False, args, device, args.large_backbone_name))
    if "speed" in args.checks:
        check_speed(report, args, device, budget, judge)
    counts = report.counts()
    report.write()
    print(f"\ngpu_check: {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))} in "
          f"{time.time() - report.started:.0f} s; wrote {args.out}; exit status {report.exit_code()}", flush=True)
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
