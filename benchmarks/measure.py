"""One measurement in its own process, so that its peak memory is its own.

    python -m benchmarks.measure --spec '<json>' --result out.json

``spec`` keys: ``kind`` (train | eval | floor | data), ``trainer`` (a name of ``subjects.benchmark_subjects()``; not
for floor and data), ``straightforward`` (bool), ``backbone``, ``device``, ``prec``, ``threads``, ``classes``,
``batch``, ``repeats``, ``max_seconds``; optional ``family`` and ``weights`` (open_clip: the backbone's OpenAI-format
file, read through the open_clip family); data only: ``workers``, ``images``, ``jpeg_size``, ``epochs``; optional
(train, eval): ``text_chunk_classes`` (``MODEL.TEXT_CHUNK_CLASSES``; absent: the default), ``teacher_templates``
(a self-regulating trainer's teacher averages only its first N templates); train: ``warmup`` False times the first
step itself (no warm-up call), ``alternate_one_pass`` True times steps alternating the chunked text encoding
(``text_chunk_classes``) with the one-pass one instead (:func:`time_chunking_cost`).

Timing: one warm-up call (a full training step; for evaluation a 1-image batch, which also fills the trainer's text
feature cache as the first batch of a real evaluation does), then up to ``repeats`` timed calls, stopping early once
``max_seconds`` of timed work have accumulated (at least one call); wall and process CPU seconds are both kept.
Peak memory: ``ru_maxrss`` of this process on
CPU, ``torch.cuda.max_memory_allocated`` on CUDA.
"""
import json
import os
import resource
import statistics
import time

import torch

from dassl.cli import OneLineArgumentParser
from .subjects import (ZeroShotFloor, benchmark_classnames, build_cfg, build_trainer_without_data, input_resolution,
                       trainable_parameters, trainer_spec)

KINDS = ("train", "eval", "floor", "data")


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device):
    """Peak memory of this process so far: CUDA max allocated, or the resident set size (Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_calls(fn, device, repeats, max_seconds):
    """Wall and CPU seconds of up to ``repeats`` calls of ``fn``; stops once the wall sum reaches ``max_seconds``.

    CPU seconds (all threads of this process) grow only while the process runs, so on a shared machine they vary
    far less than wall seconds when other jobs compete for the cores.
    """
    times, cpu_times = [], []
    while len(times) < repeats and (not times or sum(times) < max_seconds):
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times


def random_batch(batch, classes, resolution, device, seed):
    """Images [B, 3, R, R] ~ N(0, 1) (already "normalised") and labels [B], from a private generator."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, resolution, resolution, generator=generator)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return images.to(device), labels.to(device)


def _summary(timed, batch):
    """Figures of ``timed_calls``'s (wall, cpu) lists: medians and images per wall / CPU second."""
    times, cpu_times = timed
    median, median_cpu = statistics.median(times), statistics.median(cpu_times)
    return {"times_s": times, "median_s": median, "images_per_s": batch / median,
            "cpu_times_s": cpu_times, "median_cpu_s": median_cpu, "images_per_cpu_s": batch / median_cpu}


def build_measured_trainer(spec):
    """The trainer of a train / eval spec, on its class names, with the spec's optional settings applied."""
    cfg = build_cfg(spec["trainer"], spec["backbone"], spec["device"], spec["prec"], spec["straightforward"],
                    spec.get("weights", ""), spec.get("text_chunk_classes"))
    trainer = build_trainer_without_data(cfg, benchmark_classnames(spec["classes"]))
    if spec.get("teacher_templates") and hasattr(trainer, "TEACHER_TEMPLATES"):
        trainer.TEACHER_TEMPLATES = trainer.TEACHER_TEMPLATES[: spec["teacher_templates"]]
    return trainer


def measure_train(spec, device):
    """Training step (forward, backward, optimizer step) through the trainer's own ``forward_backward``."""
    trainer = build_measured_trainer(spec)
    images, labels = random_batch(spec["batch"], spec["classes"], input_resolution(spec["backbone"]), device, 0)
    batch = {"img": images, "label": labels}
    trainer.set_model_mode("train")
    memory_after_build = peak_memory_mb(device)
    if spec.get("alternate_one_pass"):
        return {**time_chunking_cost(trainer, batch, device, spec["repeats"]),
                "memory_after_build_mb": memory_after_build, "trainable_params": trainable_parameters(trainer)}
    start = time.perf_counter()
    if spec.get("warmup", True):
        trainer.forward_backward(batch)
    synchronize(device)
    warmup = time.perf_counter() - start
    timed = timed_calls(lambda: trainer.forward_backward(batch), device, spec["repeats"], spec["max_seconds"])
    return {**_summary(timed, spec["batch"]), "warmup_s": warmup, "memory_after_build_mb": memory_after_build,
            "trainable_params": trainable_parameters(trainer)}


def time_chunking_cost(trainer, batch, device, rounds):
    """The cost of the class-chunked text encoding: training steps with the trainer's chunk setting and with one pass
    (``text_chunk_classes`` 0), one warm-up step each, then ``rounds`` rounds of one timed step each, alternating, so
    that a shared machine's changing load falls on both alike. Figures of the chunked steps as ``_summary``'s, of the
    one-pass steps prefixed ``one_pass_``."""
    model, step = trainer.model, lambda: trainer.forward_backward(batch)
    settings = {"chunked": model.text_chunk_classes, "one_pass": 0}
    times = {name: ([], []) for name in settings}
    for round_ in range(rounds + 1):  # round 0: the warm-up steps
        for name, setting in settings.items():
            model.text_chunk_classes = setting
            wall, cpu = timed_calls(step, device, 1, 0.0)
            if round_:
                times[name][0].extend(wall)
                times[name][1].extend(cpu)
    model.text_chunk_classes = settings["chunked"]
    one_pass = _summary(times["one_pass"], batch["img"].shape[0])
    return {**_summary(times["chunked"], batch["img"].shape[0]),
            **{f"one_pass_{key}": value for key, value in one_pass.items()}}


def measure_eval(spec, device):
    """Evaluation throughput through the trainer's own ``model_inference`` under ``no_grad`` (as ``test()``)."""
    trainer = build_measured_trainer(spec)
    resolution = input_resolution(spec["backbone"])
    images, _ = random_batch(spec["batch"], spec["classes"], resolution, device, 1)
    warmup_images, _ = random_batch(1, spec["classes"], resolution, device, 2)
    if trainer.get_model_names():
        trainer.set_model_mode("eval")
    memory_after_build = peak_memory_mb(device)
    with torch.no_grad(), trainer.evaluation_scope():  # one evaluation, as test() opens it
        start = time.perf_counter()
        trainer.model_inference(warmup_images)
        synchronize(device)
        warmup = time.perf_counter() - start
        timed = timed_calls(lambda: trainer.model_inference(images), device, spec["repeats"], spec["max_seconds"])
    return {**_summary(timed, spec["batch"]), "warmup_s": warmup, "memory_after_build_mb": memory_after_build,
            "trainable_params": trainable_parameters(trainer)}


def measure_floor(spec, device):
    """The floor: zero-shot CLIP's image encoder per batch, text features encoded once before timing."""
    floor = ZeroShotFloor(spec["backbone"], device, spec["prec"], benchmark_classnames(spec["classes"]),
                          spec.get("weights", ""))
    resolution = input_resolution(spec["backbone"])
    images, _ = random_batch(spec["batch"], spec["classes"], resolution, device, 1)
    warmup_images, _ = random_batch(1, spec["classes"], resolution, device, 2)
    memory_after_build = peak_memory_mb(device)
    start = time.perf_counter()
    floor(warmup_images)
    synchronize(device)
    warmup = time.perf_counter() - start
    timed = timed_calls(lambda: floor(images), device, spec["repeats"], spec["max_seconds"])
    return {**_summary(timed, spec["batch"]), "warmup_s": warmup, "memory_after_build_mb": memory_after_build,
            "trainable_params": 0}


def measure(spec):
    """Run the measurement ``spec`` describes in this process; returns the spec plus its figures."""
    if spec["kind"] not in KINDS:
        raise ValueError(f"Measurement kind must be one of {KINDS}, got '{spec['kind']}'")
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if spec["kind"] == "data":
        from .data_loading import measure_data_loading
        figures = measure_data_loading(spec)
    elif spec["kind"] == "floor":
        figures = measure_floor(spec, device)
    else:
        trainer_spec(spec["trainer"])  # a clear error for an unknown trainer before anything is built
        figures = (measure_train if spec["kind"] == "train" else measure_eval)(spec, device)
    memory_kind = "cuda_max_allocated" if device.type == "cuda" else "max_rss"
    return {**spec, **figures, "peak_memory_mb": peak_memory_mb(device), "memory_kind": memory_kind}


def main(argv=None):
    parser = OneLineArgumentParser(description="Run one benchmark measurement in this process.")
    parser.add_argument("--spec", required=True, help="the measurement, as a JSON object")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    args = parser.parse_args(argv)
    result = measure(json.loads(args.spec))
    tmp = args.result + ".part"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.result)


if __name__ == "__main__":
    main()
