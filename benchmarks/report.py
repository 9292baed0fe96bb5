"""Ratios against the targets and the markdown table, computed from the raw measurements alone.

A measurement is the dict ``benchmarks.measure`` returns (``kind``, ``trainer``, ``straightforward``, ``classes``,
``median_s``, ``images_per_s``, ``peak_memory_mb``, ``trainable_params``, ...) or, when its process failed, the spec
plus ``error``.
"""
import operator

from .subjects import FLOOR, benchmark_subjects

_COMPARE = {"<=": operator.le, ">=": operator.ge}


def path_name(straightforward):
    return "straightforward" if straightforward else "fast"


def find(measurements, kind, trainer=None, straightforward=False, classes=None, group=None):
    """The successful measurement matching the keys, or None. ``group`` "large_classes" selects the large-class
    training measurements, which are otherwise left out."""
    for m in measurements:
        if "error" in m or m["kind"] != kind or m.get("group") != group:
            continue
        if kind != "data" and (m.get("trainer") or FLOOR) != (trainer or FLOOR):
            continue
        if kind in ("train", "eval") and m["straightforward"] != straightforward:
            continue
        if classes is not None and m.get("classes") != classes:
            continue
        return m
    return None


def _ratio(name, numerator, denominator, key, cpu_key=None, target=None, judge=True):
    """``{name, value, value_cpu, target, met, met_cpu}`` from two measurements (None where one is missing).

    ``value`` uses ``key`` (wall-clock figures, what the targets are stated in); ``value_cpu`` uses ``cpu_key``
    (process CPU-time figures, robust to other jobs on a shared machine) when both measurements have it. With
    ``judge`` False the target is kept for reference but no verdict is given (``met`` None).
    """
    def value_of(k):
        if k is None or numerator is None or denominator is None or k not in numerator or k not in denominator:
            return None
        return numerator[k] / denominator[k]

    def verdict(value):
        if target is None or value is None or not judge:
            return None
        return bool(_COMPARE[target[0]](value, target[1]))

    value, value_cpu = value_of(key), value_of(cpu_key)
    return {"name": name, "value": value, "value_cpu": value_cpu,
            "target": None if target is None else f"{target[0]} {target[1]}",
            "met": verdict(value), "met_cpu": verdict(value_cpu), "judged": judge and target is not None}


def _memory_added(measurement):
    """``{"added_memory_mb": peak - memory after building the model}``: what the measured work itself added."""
    if measurement is None or "memory_after_build_mb" not in measurement:
        return None
    return {"added_memory_mb": measurement["peak_memory_mb"] - measurement["memory_after_build_mb"]}


def judged_trainers():
    """Trainers with stated targets: those compared with the method they extend (``TrainerSpec.compare_with``)."""
    return [trainer for trainer, spec in benchmark_subjects().items() if spec.compare_with]


def compute_ratios(measurements, classes_train, classes_eval, consumer="BMIP-reference", judge=True):
    """The targets' ratios for each trainer that extends another (BMIP's modes over MaPLe), plus the data loader's
    throughput over the training consumption. ``judge`` False: values and targets without verdicts."""
    ratios, subjects = [], benchmark_subjects()
    for trainer in judged_trainers():
        base = subjects[trainer].compare_with
        base_train = find(measurements, "train", base, False, classes_train)
        fast = find(measurements, "train", trainer, False, classes_train)
        slow = find(measurements, "train", trainer, True, classes_train)
        ratios.append(_ratio(f"{trainer} train step / {base} train step (fast paths)", fast, base_train,
                             "median_s", "median_cpu_s", ("<=", 1.15), judge))
        ratios.append(_ratio(f"{trainer} train step: straightforward / fast (speed-up)", slow, fast,
                             "median_s", "median_cpu_s", (">=", 3.0), judge))
        ratios.append(_ratio(f"{trainer} train peak memory: fast / straightforward", fast, slow,
                             "peak_memory_mb", target=("<=", 0.5), judge=judge))
        ratios.append(_ratio(f"{trainer} train memory above the built model: fast / straightforward",
                             _memory_added(fast), _memory_added(slow), "added_memory_mb"))
        for classes in classes_eval:
            evaluation = find(measurements, "eval", trainer, False, classes)
            floor = find(measurements, "floor", classes=classes)
            bound = 0.8 if classes <= 100 else 0.7
            ratios.append(_ratio(f"{trainer} eval images/s / zero-shot floor @ {classes} classes", evaluation, floor,
                                 "images_per_s", "images_per_cpu_s", (">=", bound), judge))
            slow_eval = find(measurements, "eval", trainer, True, classes)
            if slow_eval is not None:
                ratios.append(_ratio(f"{trainer} eval images/s: fast / straightforward @ {classes} classes",
                                     evaluation, slow_eval, "images_per_s", "images_per_cpu_s"))
    for trainer, spec in subjects.items():
        fast = find(measurements, "train", trainer, False, classes_train)
        for base in spec.reported_against:
            base_train = find(measurements, "train", base, False, classes_train)
            ratios.append(_ratio(f"{trainer} train step / {base} train step (fast paths)", fast, base_train,
                                 "median_s", "median_cpu_s"))
    loader = find(measurements, "data")
    consumption = find(measurements, "train", consumer, False, classes_train)
    ratios.append(_ratio(f"data loader images/s / {consumer} training consumption images/s", loader, consumption,
                         "images_per_s", target=(">=", 1.0), judge=judge))
    return ratios


def _fmt(value, digits=2):
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _get(measurement, key):
    return None if measurement is None else measurement.get(key)


def _with_cpu(measurement, key, cpu_key):
    """``"wall (cpu)"`` cell, or just the wall figure for measurements without CPU times."""
    cell = _fmt(_get(measurement, key))
    cpu = _get(measurement, cpu_key)
    return cell if cpu is None else f"{cell} ({_fmt(cpu)})"


def _row_entries(measurements, trainer, straightforward, classes_train, classes_eval):
    if trainer == FLOOR:
        train, evals = None, [find(measurements, "floor", classes=c) for c in classes_eval]
    else:
        train = find(measurements, "train", trainer, straightforward, classes_train)
        evals = [find(measurements, "eval", trainer, straightforward, c) for c in classes_eval]
    params = next((m["trainable_params"] for m in [train, *evals] if m is not None), None)
    cells = [_fmt(params), _with_cpu(train, "median_s", "median_cpu_s"), _fmt(_get(train, "peak_memory_mb"), 0)]
    cells += [_with_cpu(m, "images_per_s", "images_per_cpu_s") for m in evals]
    cells += [_fmt(_get(m, "peak_memory_mb"), 0) for m in evals]
    return cells


def markdown_table(measurements, trainers, classes_train, classes_eval, batch_train, batch_eval):
    """One row per trainer and path (plus the floor); '—' where nothing was measured.

    Time cells read ``wall (cpu)``: the median wall-clock figure, then the same figure in process CPU seconds.
    """
    header = ["trainer", "path", "trainable params",
              f"train step s (batch {batch_train}, {classes_train} cls) wall (CPU)", "train peak MB"]
    header += [f"eval img/s @{c} (batch {batch_eval}) wall (per CPU s)" for c in classes_eval]
    header += [f"eval peak MB @{c}" for c in classes_eval]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [(FLOOR, False)] + [(t, sf) for t in trainers for sf in (False, True)]
    for trainer, straightforward in rows:
        cells = _row_entries(measurements, trainer, straightforward, classes_train, classes_eval)
        if all(c == "—" for c in cells[1:]):
            continue
        label = "zero-shot floor (image encoder only)" if trainer == FLOOR else trainer
        eval_batches = {m["batch"] for m in measurements
                        if "error" not in m and m["kind"] == "eval" and m.get("trainer") == trainer}
        if eval_batches - {batch_eval}:
            label += f" (eval batch {', '.join(map(str, sorted(eval_batches)))})"
        path = "—" if trainer == FLOOR else path_name(straightforward)
        lines.append("| " + " | ".join([label, path, *cells]) + " |")
    return "\n".join(lines)


def _large_peak(measurements, trainer, straightforward, classes):
    """``(peak MB, cell)`` of a large-class training measurement: measured, stopped at the cap, or missing."""
    for m in measurements:
        if (m.get("group") == "large_classes" and m["trainer"] == trainer and m["straightforward"] == straightforward
                and m["classes"] == classes):
            if "error" not in m:
                return m["peak_memory_mb"], f"{m['peak_memory_mb']:.0f}"
            if "peak_memory_mb_above" in m:
                return None, f"> {m['peak_memory_mb_above']:.0f} (stopped at the cap)"
            return None, "failed"
    return None, "—"


def extrapolate_peak(points, classes):
    """Least-squares line through ``[(classes, peak MB), ...]`` evaluated at ``classes`` (None with < 2 points).

    Training memory is a constant (weights, runtime, image side) plus the text side's activations, which grow
    exactly linearly with the number of class prompts, so a line through two or more class counts is the model.
    """
    if len({c for c, _ in points}) < 2:
        return None
    n = len(points)
    mean_c = sum(c for c, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    slope = (sum((c - mean_c) * (m - mean_m) for c, m in points) /
             sum((c - mean_c) ** 2 for c, _ in points))
    return mean_m + slope * (classes - mean_c)


def large_class_table(measurements, classes):
    """Training memory at ``classes`` classes and the published batch size: fast vs straightforward per trainer,
    measured where it fit under the memory cap, and extrapolated linearly from the smaller class counts."""
    header = ["trainer", "batch", f"fast peak MB @{classes}", f"straightforward peak MB @{classes}",
              f"straightforward extrapolated MB @{classes} (from)", "fast / straightforward"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    trainers = list(dict.fromkeys(m["trainer"] for m in measurements if m.get("group") == "large_classes"))
    for trainer in trainers:
        batch = next(m["batch"] for m in measurements if m.get("group") == "large_classes" and
                     m["trainer"] == trainer)
        fast, fast_cell = _large_peak(measurements, trainer, False, classes)
        slow, slow_cell = _large_peak(measurements, trainer, True, classes)
        points = [(m["classes"], m["peak_memory_mb"]) for m in measurements
                  if m.get("group") == "large_classes" and m["trainer"] == trainer and m["straightforward"]
                  and "error" not in m and m["classes"] != classes]
        fitted = extrapolate_peak(points, classes)
        fit_cell = "—" if fitted is None else f"{fitted:.0f} ({', '.join(str(c) for c, _ in sorted(points))})"
        reference = slow if slow is not None else fitted
        ratio = "—" if fast is None or reference is None else f"{fast / reference:.2f}"
        lines.append(f"| {trainer} | {batch} | {fast_cell} | {slow_cell} | {fit_cell} | {ratio} |")
    return "\n".join(lines)


def _group_measurement(measurements, group, trainer, classes, text_chunk_classes=None):
    """The measurement of ``group`` for trainer / classes (/ chunk setting), failed or not, or None."""
    for m in measurements:
        if (m.get("group") == group and m["trainer"] == trainer and m["classes"] == classes
                and m.get("text_chunk_classes") == text_chunk_classes):
            return m
    return None


def _mb(m):
    if m is None:
        return "—"
    if "peak_memory_mb_above" in m:
        return f"> {m['peak_memory_mb_above']:.0f} (stopped at the cap)"
    return "failed" if "error" in m else f"{m['peak_memory_mb']:.0f}"


def _quotient(top, bottom, key, bottom_key=None):
    ok = top is not None and bottom is not None and "error" not in top and "error" not in bottom
    return f"{top[key] / bottom[bottom_key or key]:.2f}" if ok else "—"


def class_scaling_table(measurements, small, large):
    """The class-chunked text encoding (``--scaling-classes``): training peak memory at ``large`` classes against
    ``small`` (both chunked; target <= 1.3), the one-pass peak at ``large``, and the chunked step against the
    one-pass step at ``large`` from the alternating steps of one process (the cost of recomputing the text encoder
    in backward; goal <= 1.35), wall and CPU seconds."""
    header = ["trainer", "batch", f"peak MB @{small}", f"peak MB @{large}", f"@{large} / @{small}",
              f"one-pass peak MB @{large}", f"step s @{large} chunked / one pass", "step ratio (CPU time)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    trainers = list(dict.fromkeys(m["trainer"] for m in measurements if m.get("group") == "class_scaling"))
    for trainer in trainers:
        lo, hi, whole = (_group_measurement(measurements, "class_scaling", trainer, c, chunk)
                         for c, chunk in ((small, -1), (large, -1), (large, 0)))
        cost = _group_measurement(measurements, "chunking_cost", trainer, large, -1)
        batch = next(m["batch"] for m in (lo, hi, whole) if m is not None)
        timed = _quotient(cost, cost, "median_s", "one_pass_median_s") != "—"
        steps = f"{cost['median_s']:.1f} / {cost['one_pass_median_s']:.1f}" if timed else "—"
        lines.append(f"| {trainer} | {batch} | {_mb(lo)} | {_mb(hi)} | {_quotient(hi, lo, 'peak_memory_mb')} | "
                     f"{_mb(whole)} | {steps} | {_quotient(cost, cost, 'median_s', 'one_pass_median_s')} "
                     f"({_quotient(cost, cost, 'median_cpu_s', 'one_pass_median_cpu_s')}) |")
    return "\n".join(lines)


def many_class_eval_table(measurements, classes):
    """Evaluation at ``classes`` classes (``--eval-many-classes``): peak memory, the memory after the build, the
    warm-up batch (which computes the class text features, in chunks, once for the evaluation) and throughput."""
    header = ["trainer", "batch", f"peak MB @{classes}", "MB after build", "warm-up s (text features)", "images/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in measurements:
        if m.get("group") != "many_classes" or m["classes"] != classes:
            continue
        ok = "error" not in m
        cells = [f"{m['memory_after_build_mb']:.0f}", f"{m['warmup_s']:.1f}", f"{m['images_per_s']:.2f}"] if ok \
            else ["—"] * 3
        lines.append("| " + " | ".join([m["trainer"], str(m["batch"]), _mb(m), *cells]) + " |")
    return "\n".join(lines)


def family_ratio_table(measurements, other="open_clip", base="openai"):
    """Markdown: each measurement taken through both families (same shapes, same weights) with its median seconds
    per call (wall and process CPU) and the ratio ``other`` / ``base``, then the geometric mean of the CPU ratios."""
    def key(m):
        return m["kind"], m.get("trainer"), m.get("straightforward"), m.get("classes"), m.get("group")

    bases = {key(m): m for m in measurements if "error" not in m and m.get("family") == base}
    header = ["measurement", "path", "classes", f"{base} s (CPU s)", f"{other} s (CPU s)", "ratio (CPU ratio)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cpu_ratios = []
    for m in measurements:
        if "error" in m or m.get("family") != other or key(m) not in bases:
            continue
        b = bases[key(m)]
        cpu_ratios.append(m["median_cpu_s"] / b["median_cpu_s"])
        what = "eval zero-shot floor" if m["kind"] == "floor" else f"{m['kind']} {m['trainer']}"
        lines.append(f"| {what} | "
                     f"{path_name(m['straightforward']) if 'straightforward' in m else ''} | {m.get('classes', '')} | "
                     f"{_fmt(b['median_s'], 3)} ({_fmt(b['median_cpu_s'], 3)}) | "
                     f"{_fmt(m['median_s'], 3)} ({_fmt(m['median_cpu_s'], 3)}) | "
                     f"{_fmt(m['median_s'] / b['median_s'])} ({_fmt(cpu_ratios[-1])}) |")
    if cpu_ratios:
        product = 1.0
        for ratio in cpu_ratios:
            product *= ratio
        lines.append(f"\n{other} / {base}, geometric mean of the CPU-time ratios over {len(cpu_ratios)} "
                     f"measurements: {product ** (1 / len(cpu_ratios)):.3f} (range {min(cpu_ratios):.3f} .. "
                     f"{max(cpu_ratios):.3f})")
    return "\n".join(lines)


def _verdict(met):
    return "" if met is None else ("met" if met else "MISSED")


def format_ratios(ratios):
    """One markdown bullet per ratio: wall-clock value, CPU-time value, target and verdicts (or, for a run the
    targets are not stated for, the target alone)."""
    lines = []
    for r in ratios:
        line = f"- {r['name']}: {_fmt(r['value'])}"
        if r.get("value_cpu") is not None:
            line += f" (CPU time: {_fmt(r['value_cpu'])})"
        if r["target"] and not r.get("judged", True):
            line += f" (target {r['target']} is stated for the full ViT-B/16 CPU run; not judged here)"
        elif r["target"]:
            verdicts = [v for v in (_verdict(r["met"]), r.get("value_cpu") is not None and
                                    f"CPU time {_verdict(r['met_cpu'])}") if v]
            line += f", target {r['target']}: " + "; ".join(verdicts)
        lines.append(line)
    return "\n".join(lines)


def read_run(path):
    """The saved run in ``path`` (``{"settings", "measurements", ...}``, written by ``benchmarks.bench_trainers``).

    Raises ``ValueError`` with one line naming the file and the fix when it is missing (naming the saved runs there,
    e.g. ``bench_trainers_quick.json``, which ``--quick`` writes) or is not such a run.
    """
    import glob
    import json
    import os.path as osp

    if not osp.isfile(path):
        folder = path if osp.isdir(path) else osp.dirname(path) or "."
        saved = sorted(glob.glob(osp.join(glob.escape(folder), "bench_trainers*.json")))
        fix = (f"{folder} holds {', '.join(map(osp.basename, saved))}: e.g. python -m benchmarks.report {saved[0]}"
               if saved else
               "write it with python -m benchmarks.bench_trainers (--quick writes "
               "output/benchmark/bench_trainers_quick.json)")
        raise ValueError(f"{path} {'is a folder' if osp.isdir(path) else 'does not exist'}: {fix}")
    problem = "it holds no settings and measurements"
    try:
        with open(path) as f:
            run = json.load(f)
    except (OSError, ValueError) as err:  # unreadable, or not JSON
        run, problem = None, f"{type(err).__name__}: {' '.join(str(err).split())}"
    if not (isinstance(run, dict) and isinstance(run.get("settings"), dict) and "measurements" in run):
        raise ValueError(f"{path} is not a run saved by benchmarks.bench_trainers ({problem}): pass the JSON file "
                         "it wrote (--out; default output/benchmark/bench_trainers.json)")
    return run


def main(argv=None):
    """Re-print the table and ratios of a saved run: ``python -m benchmarks.report output/benchmark/x.json``.
    Returns the exit status: 0, or 2 (one line on stderr) when the file is missing or not a saved run."""
    from dassl.cli import OneLineArgumentParser
    import sys

    parser = OneLineArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("result", help="JSON written by benchmarks.bench_trainers")
    args = parser.parse_args(argv)
    try:
        run = read_run(args.result)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    settings, measurements = run["settings"], run["measurements"]
    if not settings.get("large_only"):
        print(markdown_table(measurements, settings["trainers"], settings["classes_train"], settings["classes_eval"],
                             settings["batch_train"], settings["batch_eval"]))
        print("\nRatios:\n" + format_ratios(compute_ratios(measurements, settings["classes_train"],
                                                            settings["classes_eval"],
                                                            judge=settings.get("judge", True))))
    if settings.get("large_classes"):
        print("\n" + large_class_table(measurements, settings["large_classes"]))
    if settings.get("scaling_classes"):
        print("\n" + class_scaling_table(measurements, *settings["scaling_classes"]))
    if settings.get("eval_many_classes"):
        print("\n" + many_class_eval_table(measurements, settings["eval_many_classes"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
