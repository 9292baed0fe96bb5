"""Decoded-image throughput of the training input pipeline, on JPEGs generated in a temporary directory.

The pipeline is the one a training run builds: BMIP's published INPUT settings (random resized crop, flip,
normalize, bicubic) through ``dassl``'s ``build_transform`` and ``build_data_loader`` (RandomSampler, batch 4,
``workers`` worker processes). The time includes each epoch's worker start-up, as in training.
"""
import os.path as osp
import tempfile
import time

import numpy as np
from PIL import Image

from dassl.data.data_manager import build_data_loader
from dassl.data.datasets import Datum
from dassl.data.transforms import build_transform

from .subjects import build_cfg


def write_jpegs(directory, count, size, seed=0):
    """``count`` smooth random RGB JPEGs of ``size`` x ``size`` pixels (photo-like file sizes); returns paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
        noise = rng.integers(-12, 13, size=(size, size, 3))
        pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        path = osp.join(directory, f"image_{i:04d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def loader_throughput(cfg, paths, batch, epochs):
    """Images per second delivered by the training loader over ``epochs`` epochs (worker start-up included)."""
    data = [Datum(impath=path, label=i % 2, classname=f"class {i % 2}") for i, path in enumerate(paths)]
    loader = build_data_loader(cfg, sampler_type="RandomSampler", data_source=data, batch_size=batch,
                               tfm=build_transform(cfg, is_train=True), is_train=True)
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for item in loader:
            images += item["img"].shape[0]  # [B, 3, H, W]
    return images / (time.perf_counter() - start)


def measure_data_loading(spec):
    """Loader images/s with ``spec['workers']`` workers on ``spec['images']`` generated JPEGs."""
    cfg = build_cfg("BMIP-reference", spec["backbone"], "cpu", "fp32", False)
    cfg.defrost()
    cfg.DATALOADER.NUM_WORKERS = spec["workers"]
    cfg.freeze()
    with tempfile.TemporaryDirectory(prefix="bench_jpegs_") as directory:
        paths = write_jpegs(directory, spec["images"], spec["jpeg_size"])
        images_per_s = loader_throughput(cfg, paths, spec["batch"], spec["epochs"])
    return {"images_per_s": images_per_s, "trainable_params": 0}
