"""The released ProDA script forms (scripts/proda/*.sh: same arguments, config name, commands and output folders) run
end to end on generated ImageFolder data with the tiny random-weight CLIP. The published config name is resolved in a
temporary CONFIGS folder holding a tiny config with the published dataset keys (USE_RATIO True, SUBSAMPLE_RATIO 0).
``$PYTHON`` is the warm Python of tests/warm_python.py (train.py runs as a fork of one interpreter that imported torch
once)."""
import os
import subprocess
from pathlib import Path

import pytest

from tests.toy_data import make_toy_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "proda"
CFG = "vit_b16_c2_e100_ctx16_warmup5_BZ64_ProDA"
TINY_PRODA = """\
DATALOADER: {TRAIN_X: {BATCH_SIZE: 4}, TEST: {BATCH_SIZE: 8}, NUM_WORKERS: 0, MULTILABEL: False}
INPUT:
  SIZE: (32, 32)
  TRANSFORMS: [random_flip, normalize]
OPTIM: {NAME: sgd, LR: 0.01, MAX_EPOCH: 2, LR_SCHEDULER: cosine}
MODEL: {BACKBONE: {NAME: tiny-ViT}}
TRAINER: {ProDA: {PREC: fp32, N_CTX: 2, N_PROMPT: 8}}
TEST: {FINAL_MODEL: best_val}
DATASET: {USE_RATIO: True, SUBSAMPLE_RATIO: 0}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory, warm_python):
    root = tmp_path_factory.mktemp("proda_scripts")
    data, configs, cwd = root / "data", root / "configs", root / "work"
    make_toy_dataset(str(data))  # 6 classes: base = 3, novel = 3
    (configs / "datasets").mkdir(parents=True)
    (configs / "datasets" / "toy.yaml").write_text("DATASET: {NAME: ImageFolder, IMAGE_FOLDER: {DIR: toy}}\n")
    (configs / "trainers" / "ProDA").mkdir(parents=True)
    (configs / "trainers" / "ProDA" / f"{CFG}.yaml").write_text(TINY_PRODA)
    cwd.mkdir()
    return {"data": data, "configs": configs, "cwd": cwd, "python": warm_python}


def run_script(world, script, *args):
    env = {**os.environ, "DATA": str(world["data"]), "CONFIGS": str(world["configs"]), "PYTHON": world["python"],
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPTS / script), *map(str, args)], cwd=world["cwd"], env=env,
                          capture_output=True, text=True, timeout=600)


def log_of(run_dir):
    return max(run_dir.glob("log.txt*"), key=lambda p: p.stat().st_mtime).read_text()


@pytest.fixture(scope="module")
def trained(world):
    done = run_script(world, "base2new_train_proda.sh", "toy", 1, "cpu")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return world["cwd"] / "output" / "base2new" / "train_base" / "toy" / CFG / "seed1"


def test_train_writes_the_released_layout(trained):
    log = log_of(trained)
    assert "SUBSAMPLE BASE CLASSES!" in log and "Finish training" in log
    assert (trained / "prompt_learner" / "model-best.pth.tar").is_file()


@pytest.mark.parametrize("script, args, folder, space", [
    ("base2new_test_proda.sh", ("best",), Path("base2new", "test_new", "toy", CFG, "seed1"),
     "0 base + 3 novel classes (ratio 0%"),
    ("base2new_ratio.sh", (50,), Path("RATIO", CFG, "toy", "seed1", "RATIO_50"), "1 base + 2 novel classes (ratio 50%"),
])
def test_evaluations_load_the_best_model_on_the_open_world_space(world, trained, script, args, folder, space):
    done = run_script(world, script, "toy", 1, "cpu", *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = log_of(world["cwd"] / "output" / folder)
    assert f"train_base/toy/{CFG}/seed1/prompt_learner/model-best.pth.tar" in log
    assert f"OPEN-WORLD LABEL SPACE: {space}" in log and "* accuracy:" in log


def test_wrong_arguments_give_the_usage_line(world):
    done = run_script(world, "base2new_ratio.sh", "toy", 1, "cpu")
    assert done.returncode == 2
    assert done.stderr.strip() == f"usage: DATA=/path/to/datasets bash {SCRIPTS / 'base2new_ratio.sh'} DATASET SEED DEVICE RATIO"
