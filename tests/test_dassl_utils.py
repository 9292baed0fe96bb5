"""Tests for dassl.utils: registry, tools, logger, meters, checkpoints."""

import os
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from dassl.utils import (
    AverageMeter,
    CheckpointError,
    MetricMeter,
    Registry,
    check_availability,
    check_isfile,
    count_num_param,
    listdir_nohidden,
    load_checkpoint,
    load_pretrained_weights,
    mkdir_if_missing,
    read_image,
    read_json,
    resume_from_checkpoint,
    save_checkpoint,
    set_random_seed,
    setup_logger,
    tolist_if_not,
    write_json,
)
from tests.payloads import MarkerPayload


# ---------------------------------------------------------------- registry


def test_registry_decorator_call_duplicate_and_lookup():
    reg = Registry("THING")

    @reg.register()
    class Alpha:
        pass

    def beta():
        return 1

    assert reg.register(beta) is beta
    assert reg.registered_names() == ["Alpha", "beta"]
    assert "Alpha" in reg and "Gamma" not in reg
    assert reg.get("beta") is beta
    with pytest.raises(KeyError, match="already registered"):
        reg.register(beta)

    def beta_v2():
        return 2

    beta_v2.__name__ = "beta"
    reg.register(beta_v2, force=True)
    assert reg.get("beta")() == 2
    with pytest.raises(KeyError, match="registered names: .*Alpha.*beta"):
        reg.get("Gamma")


def test_check_availability_message_and_suggestion():
    check_availability("OxfordPets", ["OxfordPets", "DTD"])
    with pytest.raises(ValueError) as exc:
        check_availability("OxfordPet", ["Caltech101", "OxfordPets", "DTD"])
    assert str(exc.value) == (
        "The requested one is expected to belong to ['Caltech101', 'OxfordPets', 'DTD'], "
        "but got [OxfordPet] (do you mean [OxfordPets]?)"
    )


# ---------------------------------------------------------------- tools


def test_file_helpers(tmp_path):
    nested = tmp_path / "a" / "b"
    mkdir_if_missing(str(nested))
    mkdir_if_missing(str(nested))  # second call is a no-op
    assert nested.is_dir()
    for name in ["z.txt", ".hidden", "a.txt"]:
        (nested / name).write_text("x")
    assert sorted(listdir_nohidden(str(nested))) == ["a.txt", "z.txt"]
    assert listdir_nohidden(str(nested), sort=True) == ["a.txt", "z.txt"]

    fpath = str(tmp_path / "deep" / "obj.json")
    write_json({"train": [["x.jpg", 1, "cat"]]}, fpath)
    assert read_json(fpath) == {"train": [["x.jpg", 1, "cat"]]}
    assert '"train": [' in open(fpath).read()  # indented with ": " separators

    assert check_isfile(fpath)
    with pytest.warns(UserWarning, match="No file found"):
        assert not check_isfile(str(tmp_path / "missing.jpg"))
    assert tolist_if_not(3) == [3] and tolist_if_not([3]) == [3]


def test_set_random_seed_reproduces_all_generators():
    def draw():
        import random

        return random.random(), float(np.random.rand()), float(torch.rand(1))

    set_random_seed(7)
    first = draw()
    set_random_seed(7)
    assert draw() == first


def test_read_image_ok_missing_and_corrupt(tmp_path):
    good = tmp_path / "good.png"
    Image.new("L", (5, 4), color=128).save(good)
    img = read_image(str(good))
    assert img.mode == "RGB" and img.size == (5, 4)

    with pytest.raises(FileNotFoundError, match="missing.jpg.*DATASET.ROOT"):
        read_image(str(tmp_path / "missing.jpg"))

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(OSError, match="bad.jpg.*re-download"):
        read_image(str(bad))


# ---------------------------------------------------------------- logger


def test_setup_logger_tees_and_never_overwrites(tmp_path, capsys):
    saved = sys.stdout
    try:
        setup_logger(str(tmp_path))
        print("first run")
        setup_logger(str(tmp_path))  # log.txt exists -> new timestamped file, previous tee replaced
        print("second run")
        sys.stdout.flush()
    finally:
        sys.stdout.close()
        sys.stdout = saved
    files = sorted(os.listdir(tmp_path))
    assert files[0] == "log.txt" and len(files) == 2 and files[1].startswith("log.txt-")
    assert (tmp_path / "log.txt").read_text() == "first run\n"
    assert (tmp_path / files[1]).read_text() == "second run\n"
    assert capsys.readouterr().out == "first run\nsecond run\n"  # console got each line once


def test_setup_logger_explicit_file(tmp_path):
    saved = sys.stdout
    try:
        setup_logger(str(tmp_path / "sub" / "run.log"))
        print("hello")
    finally:
        sys.stdout.close()
        sys.stdout = saved
    assert (tmp_path / "sub" / "run.log").read_text() == "hello\n"


# ---------------------------------------------------------------- meters


def test_average_and_metric_meter():
    meter = AverageMeter()
    meter.update(2.0, n=3)
    meter.update(torch.tensor(6.0))
    assert meter.val == 6.0 and meter.count == 4 and meter.avg == pytest.approx(3.0)

    ema = AverageMeter(ema=True)
    ema.update(10.0)
    ema.update(20.0)
    assert ema.avg == pytest.approx((0 * 0.9 + 1.0) * 0.9 + 2.0)

    metrics = MetricMeter()
    metrics.update({"loss": 2.0, "acc": torch.tensor(50.0)})
    metrics.update({"loss": 1.0, "acc": 100.0})
    assert str(metrics) == "loss 1.0000 (1.5000) acc 100.0000 (75.0000)"
    with pytest.raises(TypeError, match="dict"):
        metrics.update(1.0)


# ---------------------------------------------------------------- checkpoints


def _state(model, epoch):
    return {"state_dict": model.state_dict(), "epoch": epoch, "optimizer": None, "scheduler": None, "val_result": None}


def test_save_checkpoint_files_pointer_and_weights_only(tmp_path, capsys):
    model = nn.DataParallel(nn.Linear(3, 2))
    fpath = save_checkpoint(_state(model, 4), str(tmp_path / "prompt_learner"), is_best=True)
    out = capsys.readouterr().out
    folder = tmp_path / "prompt_learner"
    assert fpath == str(folder / "model.pth.tar-4")
    assert f"Checkpoint saved to {fpath}" in out
    assert sorted(os.listdir(folder)) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-4"]
    assert (folder / "checkpoint").read_text() == "model.pth.tar-4\n"

    loaded = torch.load(fpath, weights_only=True)
    assert set(loaded["state_dict"]) == {"weight", "bias"}  # "module." stripped
    assert torch.equal(loaded["state_dict"]["weight"], model.module.weight.detach())
    assert torch.load(str(folder / "model-best.pth.tar"), weights_only=True)["epoch"] == 4

    save_checkpoint(_state(model.module, 5), str(folder), model_name="custom.pth")
    assert (folder / "checkpoint").read_text() == "model.pth.tar-4\n"  # only epoch files are resume points


def test_save_checkpoint_rejects_objects_and_leaves_no_file(tmp_path):
    state = _state(nn.Linear(2, 2), 1)
    state["val_result"] = np.float64(50.0)  # a float subclass that weights_only loading rejects
    with pytest.raises(TypeError, match=r"state\['val_result'\] is a float64"):
        save_checkpoint(state, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_save_checkpoint_is_atomic_on_failure(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    save_checkpoint(_state(nn.Linear(2, 2), 1), str(folder))
    before = (folder / "model.pth.tar-1").read_bytes()

    def crash(obj, f):
        f.write(b"half")  # save_checkpoint hands torch.save the open temporary file
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(_state(nn.Linear(2, 2), 1), str(folder))
    assert (folder / "model.pth.tar-1").read_bytes() == before
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-1"]


def test_load_checkpoint_never_executes_pickled_code(tmp_path):
    marker = tmp_path / "payload-ran"
    fpath = str(tmp_path / "crafted.pth.tar")
    torch.save({"state_dict": {}, "scheduler": {"successor": MarkerPayload(str(marker))}}, fpath)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(fpath)
    message = str(info.value)
    assert fpath in message and "io.open" in message
    assert f"python -m dassl.utils.convert_checkpoint --trust {fpath}" in message and "\n" not in message
    assert not marker.exists()

    with pytest.raises(FileNotFoundError, match="nope.pth.tar"):
        load_checkpoint(str(tmp_path / "nope.pth.tar"))
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth.tar"):
        load_checkpoint(str(tmp_path / "junk.pth.tar"))
    assert not marker.exists()


def test_convert_checkpoint_makes_a_trusted_dassl_checkpoint_loadable(tmp_path, capsys):
    from dassl.optim import ConstantWarmupScheduler
    from dassl.utils.convert_checkpoint import main as convert_main

    model = nn.Linear(3, 2)
    optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=5.0)
    model(torch.randn(2, 3)).sum().backward()
    optim.step()
    successor.step()
    # What old Dassl wrote: the warm-up scheduler's state holds the successor scheduler object itself.
    old_sched = {"successor": successor, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": 1, "base_lrs": [0.1]}
    src, dst = str(tmp_path / "released.pth.tar"), str(tmp_path / "converted.pth.tar")
    torch.save({"state_dict": model.state_dict(), "epoch": 5, "optimizer": optim.state_dict(),
                "scheduler": old_sched, "val_result": np.float64(71.5)}, src)
    with pytest.raises(CheckpointError, match="torch.optim"):
        load_checkpoint(src)
    assert convert_main([src, dst]) == 2  # --trust is required
    assert "pass --trust" in capsys.readouterr().err
    assert convert_main(["--trust", src, dst]) == 0
    converted = load_checkpoint(dst)
    assert converted["epoch"] == 5 and converted["val_result"] == 71.5 and type(converted["val_result"]) is float
    assert torch.equal(converted["state_dict"]["weight"], model.weight.detach())
    assert converted["scheduler"]["successor"] == successor.state_dict()
    # the converted scheduler state drives a live warm-up scheduler at the successor's epoch
    live = ConstantWarmupScheduler(optim, torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=5.0), 1, 1e-5)
    live.load_state_dict(converted["scheduler"])
    assert live.successor.last_epoch == successor.last_epoch


def test_resume_from_checkpoint_restores_all(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=1, gamma=0.5)
    model(torch.randn(4, 3)).sum().backward()
    optim.step()
    sched.step()
    state = {
        "state_dict": model.state_dict(),
        "epoch": 3,
        "optimizer": optim.state_dict(),
        "scheduler": sched.state_dict(),
        "val_result": 80.0,
    }
    save_checkpoint(state, str(tmp_path))

    fresh = nn.Linear(3, 2)
    fresh_optim = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_optim, step_size=1, gamma=0.5)
    assert resume_from_checkpoint(str(tmp_path), fresh, fresh_optim, fresh_sched) == 3
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_optim.param_groups[0]["lr"] == pytest.approx(0.05)
    assert fresh_sched.last_epoch == 1
    assert "Previous epoch: 3" in capsys.readouterr().out

    with pytest.raises(FileNotFoundError, match="pointer"):
        resume_from_checkpoint(str(tmp_path / "empty"), fresh)


def test_load_pretrained_weights_partial_and_count(tmp_path, capsys):
    src = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    save_checkpoint(_state(src, 1), str(tmp_path))
    dst = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5))  # second layer has another shape
    load_pretrained_weights(dst, str(tmp_path / "model.pth.tar-1"))
    assert torch.equal(dst[0].weight, src[0].weight)
    assert not torch.equal(dst[1].bias[:2], src[1].bias)
    out = capsys.readouterr().out
    assert "Layers discarded" in out and "1.weight" in out

    assert count_num_param(src) == 3 * 4 + 4 + 4 * 2 + 2
    assert count_num_param(params=[torch.zeros(2, 3)]) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="no key/shape matches"):
            load_pretrained_weights(nn.Linear(7, 7), str(tmp_path / "model.pth.tar-1"))
