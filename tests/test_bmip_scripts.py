"""The released BMIP, BITP and UPT script forms (scripts/bmip/*.sh, scripts/bitp/xd_*.sh, scripts/upt/*.sh: same
arguments, commands and output folders) run end to end on generated ImageFolder data with the tiny random-weight CLIP,
selected the way a user selects anything: DATA, and the DATASET / CFG names, here resolved in a temporary CONFIGS
folder. Each script starts train.py (8 runs in all), as ``$PYTHON`` = the warm Python of tests/warm_python.py (a fork
of one interpreter that imported torch once, instead of a fresh one per run)."""
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.toy_data import make_toy_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "bmip"
TINY_BMIP = """\
DATALOADER: {TRAIN_X: {BATCH_SIZE: 4}, TEST: {BATCH_SIZE: 8}, NUM_WORKERS: 0}
INPUT:
  SIZE: (32, 32)
  TRANSFORMS: [random_flip, normalize]
OPTIM: {NAME: adam, LR: 0.002, MAX_EPOCH: 2, LR_SCHEDULER: cosine}
MODEL: {BACKBONE: {NAME: tiny-ViT}}
TRAINER: {BMIP: {PREC: fp32}}
TEST: {FINAL_MODEL: best_val}
"""


UPT_CFG = "vit_b16_c2_ep5_batch4_1ctxUPT"
TINY_UPT = TINY_BMIP.replace("BMIP", "UPT").replace("MAX_EPOCH: 2", "MAX_EPOCH: 5").replace(
    "TEST: {FINAL_MODEL: best_val}\n", "")


@pytest.fixture(scope="module")
def world(tmp_path_factory, warm_python):
    """DATA with three toy datasets, a CONFIGS folder naming them (imagenet = the cross-dataset source) and a tiny
    BMIP config, and the working directory the scripts write ./output into."""
    root = tmp_path_factory.mktemp("bmip_scripts")
    data, configs, cwd = root / "data", root / "configs", root / "work"
    for name, classnames in (("toy", None), ("source", None), ("other", ["teapot", "violin", "zebra", "kettle"])):
        make_toy_dataset(str(data), name=name, **({"classnames": classnames} if classnames else {}))
    (configs / "datasets").mkdir(parents=True)
    for config, folder in (("toy", "toy"), ("imagenet", "source"), ("other", "other")):
        (configs / "datasets" / f"{config}.yaml").write_text(
            f"DATASET: {{NAME: ImageFolder, IMAGE_FOLDER: {{DIR: {folder}}}}}\n")
    (configs / "trainers" / "BMIP").mkdir(parents=True)
    (configs / "trainers" / "BMIP" / "tiny.yaml").write_text(TINY_BMIP)
    (configs / "trainers" / "BITP").mkdir(parents=True)
    (configs / "trainers" / "BITP" / "tiny.yaml").write_text(TINY_BMIP.replace(
        "{BMIP: {PREC: fp32}}", "{BITP: {PREC: fp32, CONNECT_METHOD: exchange}}"))
    (configs / "trainers" / "UPT").mkdir()  # the config name the released UPT scripts fix, with tiny settings
    (configs / "trainers" / "UPT" / f"{UPT_CFG}.yaml").write_text(TINY_UPT)
    cwd.mkdir()
    return {"data": data, "configs": configs, "cwd": cwd, "python": warm_python}


def run_script(world, script, *args, **env):
    folder = REPO / "scripts" / "upt" if script.endswith("_upt.sh") else SCRIPTS
    env = {**os.environ, "DATA": str(world["data"]), "CONFIGS": str(world["configs"]), "PYTHON": world["python"],
           "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(folder / script), *map(str, args)], cwd=world["cwd"], env=env,
                          capture_output=True, text=True, timeout=600)


def newest_log(run_dir):
    return max(run_dir.glob("log.txt*"), key=lambda p: p.stat().st_mtime).read_text()


@pytest.fixture(scope="module")
def base2new_train(world):
    done = run_script(world, "base2new_train_bmip.sh", "toy", 1, "cpu", "tiny")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_base2new_train_writes_the_released_layout(world, base2new_train):
    run_dir = world["cwd"] / "output" / "base2new" / "train_base" / "tiny" / "toy" / "seed1"
    assert "Run this job and save the output to ./output/base2new/train_base/tiny/toy/seed1" in base2new_train.stdout
    log = newest_log(run_dir)
    assert "SUBSAMPLE BASE CLASSES!" in log and "Finish training" in log and "Deploy the model with the best" in log
    for name in ("model-best.pth.tar", "model.pth.tar-2"):
        assert (run_dir / "MultiModalPromptLearner" / name).is_file()


def test_base2new_test_loads_the_best_model_on_the_novel_classes(world, base2new_train):
    done = run_script(world, "base2new_test_bmip.sh", "toy", 1, "cpu", "tiny")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = newest_log(world["cwd"] / "output" / "base2new" / "test_new" / "tiny" / "toy" / "seed1")
    # --best wins over the script's --load-epoch 5 (no model.pth.tar-5 exists after 2 epochs)
    assert "train_base/tiny/toy/seed1/MultiModalPromptLearner/model-best.pth.tar" in log
    assert "SUBSAMPLE NEW CLASSES!" in log and "=> result" in log and "* accuracy:" in log


def test_cross_dataset_train_then_test_and_skip(world):
    done = run_script(world, "xd_train.sh", "imagenet", 1, "cpu", "tiny")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    model_dir = world["cwd"] / "output" / "imagenet" / "BMIP" / "tiny_16shots" / "seed1"
    assert (model_dir / "MultiModalPromptLearner" / "model.pth.tar-2").is_file()
    assert "Finish training" in newest_log(model_dir)

    done = run_script(world, "xd_test.sh", "other", 1, "cpu", "tiny", 2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = newest_log(world["cwd"] / "output" / "evaluation" / "BMIP" / "tiny" / "other" / "seed1")
    assert "imagenet/BMIP/tiny_16shots/seed1/MultiModalPromptLearner/model.pth.tar-2" in log
    assert "# classes  4" in log and "=> result" in log

    again = run_script(world, "xd_test.sh", "other", 1, "cpu", "tiny", 2)
    assert again.returncode == 0 and "Skip this job" in again.stdout
    again = run_script(world, "xd_train.sh", "imagenet", 1, "cpu", "tiny")
    assert again.returncode == 0 and "Results are available in" in again.stdout


def test_bitp_cross_dataset_scripts_train_then_test(world):
    done = run_script(world, "../bitp/xd_train.sh", "imagenet", 1, "cpu", "tiny")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    model_dir = world["cwd"] / "output" / "imagenet" / "BITP" / "tiny_16shots" / "seed1"
    assert (model_dir / "MultiModalPromptLearner" / "model.pth.tar-2").is_file()
    assert "CONNECT_METHOD: exchange" in newest_log(model_dir)

    done = run_script(world, "../bitp/xd_test.sh", "other", 1, "cpu", "tiny", 2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = newest_log(world["cwd"] / "output" / "evaluation" / "BITP" / "tiny" / "other" / "seed1")
    assert "imagenet/BITP/tiny_16shots/seed1/MultiModalPromptLearner/model.pth.tar-2" in log
    assert "# classes  4" in log and "=> result" in log


def test_upt_base2new_train_then_test_epoch_5_on_the_novel_classes(world):
    done = run_script(world, "base2new_train_upt.sh", "toy", 1, "cpu")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = world["cwd"] / "output" / "base2new" / "train_base" / UPT_CFG / "toy" / "seed1"
    assert "Finish training" in newest_log(run_dir) and "SUBSAMPLE BASE CLASSES!" in newest_log(run_dir)
    assert (run_dir / "MultiModalPromptLearner" / "model.pth.tar-5").is_file()

    done = run_script(world, "base2new_test_upt.sh", "toy", 1, "cpu")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = newest_log(world["cwd"] / "output" / "base2new" / "test_new" / UPT_CFG / "toy" / "seed1")
    assert f"train_base/{UPT_CFG}/toy/seed1/MultiModalPromptLearner/model.pth.tar-5" in log
    assert "SUBSAMPLE NEW CLASSES!" in log and "* accuracy:" in log


@pytest.mark.parametrize("script, args, env, message", [
    ("base2new_test_upt.sh", ["toy", 1], {}, "usage: .* DATASET SEED DEVICE$"),
    ("base2new_train_bmip.sh", ["toy", 1, "cpu"], {}, "usage: .* DATASET SEED DEVICE CFG"),
    ("xd_test.sh", ["other", 1, "cpu", "tiny"], {}, "usage: .* DATASET SEED DEVICE CFG LOAD_EPOCH"),
    ("xd_train.sh", ["imagenet", 1, "cpu", "tiny"], {"DATA": "/nonexistent"}, "set DATA to the datasets root"),
    ("base2new_test_bmip.sh", ["toy", 1, "cpu", "BMIP_nope"], {}, r"trainers/BMIP/BMIP_nope\.yaml does not exist"),
    ("../bitp/xd_train.sh", ["imagenet", 1, "cpu", "micro_nope"], {}, r"trainers/BITP/micro_nope\.yaml does not exist"),
])
def test_bad_input_stops_with_one_line(world, script, args, env, message):
    done = run_script(world, script, *args, **env)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert re.search(message, done.stderr), done.stderr
