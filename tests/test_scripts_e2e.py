"""End to end: the sweep runner drives the real train.py (tiny random-weight CLIP, two generated
ImageFolder datasets): 2 datasets x 2 seeds x 2 trainers base-to-novel plus one cross-dataset pair, then
skip / resume, parse_test_res.py and the result tables are checked against the logs.

The 26 train.py processes run as ``--python`` = the warm Python of tests/warm_python.py (each a fork of one
interpreter that imported torch and CLIP once, instead of a fresh interpreter that imports them again).
"""
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from results import layout

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("tiny_a", "tiny_b")
TRAINERS = (("CoOp", "vit_b16", "prompt_learner"), ("BMIP", "BMIP_ctx2_dp9_lr2", "MultiModalPromptLearner"))
ACCURACY = re.compile(r"^\* accuracy: ([\d.]+)%$")


def make_world(tmp_path):
    """Two 4-class ImageFolder datasets of 32x32 images, their YAMLs, and a sweep file."""
    rng = np.random.default_rng(0)
    data, configs = tmp_path / "data", tmp_path / "configs"
    (configs / "datasets").mkdir(parents=True)
    (configs / "trainers").symlink_to(REPO / "configs" / "trainers")
    for shift, name in enumerate(DATASETS):
        for label, cls in enumerate(("red_cube", "green_ball", "blue_cone", "grey_ring")):
            folder = data / name / cls
            folder.mkdir(parents=True)
            for i in range(10):
                pixels = (rng.random((32, 32, 3)) * 60).astype(np.uint8)
                pixels[..., (label + shift) % 3] += 150
                Image.fromarray(pixels).save(folder / f"{i}.png")
        (configs / "datasets" / f"{name}.yaml").write_text(
            f'DATASET:\n  NAME: "ImageFolder"\n  IMAGE_FOLDER:\n    DIR: "{name}"\n')
    runs = "\n".join(f"      - {{trainer: {t}, cfg: {c}}}" for t, c, _ in TRAINERS)
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(f"""\
output: {tmp_path / "output"}
opts: [MODEL.BACKBONE.NAME, tiny-ViT, INPUT.SIZE, "(32, 32)", OPTIM.MAX_EPOCH, 1,
       DATALOADER.NUM_WORKERS, 0, DATALOADER.TRAIN_X.BATCH_SIZE, 4, DATALOADER.TEST.BATCH_SIZE, 8]
experiments:
  - protocol: base2new
    datasets: [{", ".join(DATASETS)}]
    seeds: [1, 2]
    runs:
{runs}
  - protocol: cross_dataset
    source: tiny_a
    targets: [tiny_b]
    seeds: [1]
    runs:
      - {{trainer: CoOp, cfg: vit_b16}}
""")
    return data, configs, sweep


def run(*args, data):
    env = {**os.environ, "DATA": str(data), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=900)


def log_accuracy(run_dir, after):
    """The last accuracy printed after the line ``after`` in the newest log that has one."""
    for log in sorted(run_dir.glob("log.txt*"), key=lambda p: (p.name != "log.txt", p.name), reverse=True):
        lines = log.read_text().splitlines()
        if after in lines:
            values = [float(m.group(1)) for line in lines[lines.index(after):] if (m := ACCURACY.match(line))]
            if values:
                return values[-1]
    raise AssertionError(f"no accuracy after {after!r} in {run_dir}")


def test_sweep_end_to_end_with_skip_resume_and_tables(tmp_path, warm_python):
    data, configs, sweep = make_world(tmp_path)
    out = tmp_path / "output"
    sweep_args = (str(REPO / "scripts" / "sweep.py"), str(sweep), "--workers", "2", "--configs", str(configs),
                  "--python", warm_python)
    first = run(*sweep_args, data=data)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.splitlines()[-1] == "=== sweep summary: 26 ok"
    for trainer, cfg, folder in TRAINERS:
        for dataset in DATASETS:
            for seed in (1, 2):
                train_dir = layout.base2new_dir(out, "train_base", dataset, 16, trainer, cfg, seed)
                assert (train_dir / folder / "checkpoint").is_file()
                for split in ("test_base", "test_new"):
                    assert (layout.base2new_dir(out, split, dataset, 16, trainer, cfg, seed) / "log.txt").is_file()
    assert (layout.evaluation_dir(out, "CoOp", "vit_b16", 16, "tiny_a", "tiny_b", 1) / "log.txt").is_file()

    # finished jobs are skipped; a training run whose final test did not complete (no result.json, although
    # its log says "Finish training") resumes from its checkpoint and runs the final test again
    interrupted = layout.base2new_dir(out, "train_base", "tiny_b", 16, "CoOp", "vit_b16", 2)
    (interrupted / "result.json").unlink()
    again = run(*sweep_args, data=data)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"# resume (unfinished): {interrupted}" in again.stdout
    assert again.stdout.splitlines()[-1] == "=== sweep summary: 1 ok, 25 skipped"
    resumed = [p for p in interrupted.glob("log.txt-*")]
    assert len(resumed) == 1 and "Found checkpoint" in resumed[0].read_text()

    # parse_test_res.py against the log lines
    new_dir = layout.base2new_dir(out, "test_new", "tiny_a", 16, "BMIP", "BMIP_ctx2_dp9_lr2", 1).parent
    expected = [log_accuracy(new_dir / f"seed{s}", "=> result") for s in (1, 2)]
    parsed = run(str(REPO / "parse_test_res.py"), str(new_dir), "--test-log", data=data)
    assert parsed.returncode == 0, parsed.stderr
    assert f"* accuracy: {np.mean(expected):.2f}% +- {np.std(expected):.2f}%" in parsed.stdout

    # the tables: Base from test_base, Novel from test_new, HM of the seed means
    report = run(str(REPO / "scripts" / "results.py"), str(out), data=data)
    assert report.returncode == 0, report.stderr
    with open(out / "results" / "base2new.csv", newline="") as handle:
        rows = {(r["trainer"], r["dataset"]): r for r in csv.DictReader(handle)}
    for trainer, cfg, _ in TRAINERS:
        for dataset in DATASETS:
            base = [log_accuracy(layout.base2new_dir(out, "test_base", dataset, 16, trainer, cfg, s),
                                 "=> result") for s in (1, 2)]
            novel = [log_accuracy(layout.base2new_dir(out, "test_new", dataset, 16, trainer, cfg, s),
                                  "=> result") for s in (1, 2)]
            row = rows[trainer, dataset]
            assert float(row["base_mean"]) == pytest.approx(np.mean(base), abs=1e-4)
            assert float(row["novel_std"]) == pytest.approx(np.std(novel), abs=1e-4)
            hm = 1 / ((1 / np.mean(base) + 1 / np.mean(novel)) / 2)  # (the toy runs score above 0 on both)
            assert float(row["hm"]) == pytest.approx(hm, abs=1e-4)
    source = log_accuracy(layout.source_dir(out, "tiny_a", "CoOp", "vit_b16", 16, 1), "Finish training")
    assert f"| CoOp | {source:.2f} ± 0.00 |" in report.stdout
    with Image.open(out / "results" / "base2new_hm.png") as image:
        assert image.format == "PNG" and image.width >= 300
