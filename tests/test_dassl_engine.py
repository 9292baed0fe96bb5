"""Tests for dassl.engine with a toy TrainerX (tiny linear model, in-memory batches)."""

import os
import re
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dassl.config import extend_cfg, get_cfg_default
from dassl.engine import TRAINER_REGISTRY, SimpleTrainer, TrainerX, build_trainer, resolve_device
from dassl.engine.trainer import _progress
from dassl.optim import build_lr_scheduler, build_optimizer
from tests.cfg_helpers import set_values

MODEL_NAME = "prompt_learner"


def _batches(seed, n_batches=3, batch_size=4):
    """Deterministic list of Dassl-style batch dicts (a list has len() and iterates like a loader)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        img = torch.randn(batch_size, 4, generator=g)  # [B, 4]
        label = (img[:, 0] + 0.5 * img[:, 1] > 0).long()  # [B]
        batches.append({"img": img, "label": label, "domain": torch.zeros(batch_size, dtype=torch.long)})
    return batches


class ToyTrainer(TrainerX):
    """TrainerX on a Linear(4, 2); records hook calls in ``self.events``."""

    def check_cfg(self, cfg):
        self.events = ["check_cfg"]

    def build_data_loader(self):
        self.events.append(f"build_data_loader device={self.device}")
        self.train_loader_x = _batches(seed=0)
        self.train_loader_u = None
        self.val_loader = _batches(seed=1, n_batches=2)
        self.test_loader = _batches(seed=2, n_batches=2)
        self.num_classes = 2
        self.num_source_domains = 1
        self.lab2cname = {0: "neg", 1: "pos"}
        self.dm = None

    def build_model(self):
        self.events.append("build_model")
        torch.manual_seed(0)
        self.model = nn.Linear(4, 2).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model(MODEL_NAME, self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        img, label, _ = self.parse_batch_train(batch)
        loss = F.cross_entropy(self.model(img), label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}

    def before_train(self):
        self.events.append("before_train")
        super().before_train()

    def before_epoch(self):
        self.events.append(f"before_epoch {self.epoch} lr={self.get_current_lr():.6e}")
        super().before_epoch()

    def run_epoch(self):
        self.events.append(f"run_epoch {self.epoch}")
        super().run_epoch()

    def after_epoch(self):
        self.events.append(f"after_epoch {self.epoch}")
        super().after_epoch()

    def after_train(self):
        self.events.append("after_train")
        super().after_train()


class ScriptedValTrainer(ToyTrainer):
    """Returns scripted validation accuracies (to test best-val selection and early stopping)."""

    val_script = []

    def test(self, split=None):
        if split == "val":
            return self.val_script[self.epoch]
        return super().test(split)


class Killed(Exception):
    pass


class KilledTrainer(ScriptedValTrainer):
    """Simulates a job killed once ``kill_at_epoch`` epochs have finished."""

    kill_at_epoch = 1

    def before_epoch(self):
        if self.epoch == self.kill_at_epoch:
            raise Killed()
        super().before_epoch()


def make_cfg(output_dir, **overrides):
    cfg = extend_cfg(get_cfg_default())
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.OPTIM.NAME = "sgd"
    cfg.OPTIM.LR = 0.1
    cfg.OPTIM.MAX_EPOCH = 2
    cfg.OPTIM.LR_SCHEDULER = "cosine"
    cfg.OPTIM.WARMUP_EPOCH = 1
    cfg.OPTIM.WARMUP_TYPE = "constant"
    cfg.OPTIM.WARMUP_CONS_LR = 1e-2
    cfg.DEVICE = "cpu"
    return set_values(cfg, overrides)


def _lr_events(trainer):
    return [e for e in trainer.events if e.startswith("before_epoch")]


# ---------------------------------------------------------------- lifecycle


def test_construction_and_hook_order(tmp_path, capsys):
    trainer = ToyTrainer(make_cfg(tmp_path, **{"OPTIM.MAX_EPOCH": 2}))
    assert trainer.events == ["check_cfg", "build_data_loader device=cpu", "build_model"]
    assert trainer.best_result == -float("inf") and trainer.start_epoch == 0 and trainer.max_epoch == 2
    trainer.train()
    assert trainer.events[3:] == [
        "before_train",
        "before_epoch 0 lr=1.000000e-02",
        "run_epoch 0",
        "after_epoch 0",
        "before_epoch 1 lr=1.000000e-01",
        "run_epoch 1",
        "after_epoch 1",
        "after_train",
    ]


def test_printed_lines_and_files(tmp_path, capsys):
    trainer = ToyTrainer(make_cfg(tmp_path))
    trainer.train()
    out = capsys.readouterr().out
    lines = out.splitlines()

    progress = [line for line in lines if line.startswith("epoch [")]
    assert len(progress) == 6  # 3 batches < PRINT_FREQ 10 -> every batch, 2 epochs
    pattern = (
        r"epoch \[(\d)/2\] batch \[(\d)/3\] time \d+\.\d{3} \(\d+\.\d{3}\) data \d+\.\d{3} \(\d+\.\d{3}\) "
        r"loss \d+\.\d{4} \(\d+\.\d{4}\) lr \d\.\d{4}e[-+]\d\d eta \d+:\d\d:\d\d"
    )
    assert [re.fullmatch(pattern, line).groups() for line in progress] == [
        ("1", "1"), ("1", "2"), ("1", "3"), ("2", "1"), ("2", "2"), ("2", "3")
    ]  # fmt: skip
    assert " lr 1.0000e-02 " in progress[0] and " lr 1.0000e-01 " in progress[3]

    ckpt_dir = tmp_path / MODEL_NAME
    tb_dir = tmp_path / "tensorboard"
    for expected in [
        "No checkpoint found, train from scratch",
        f"Initialize tensorboard (log_dir={tb_dir})",
        f"Checkpoint saved to {ckpt_dir / 'model.pth.tar-2'}",
        "Finish training",
        "Deploy the last-epoch model",
        "Evaluate on the *test* set",
        "=> result",
    ]:
        assert expected in lines
    assert re.search(r"^\* accuracy: \d+\.\d{2}%$", out, re.M)
    assert re.search(r"^Elapsed: \d+:\d\d:\d\d$", out, re.M)
    assert "Evaluate on the *val* set" not in out  # last_step: no per-epoch validation

    assert sorted(os.listdir(ckpt_dir)) == ["checkpoint", "model.pth.tar-2"]  # CHECKPOINT_FREQ 0: last only
    assert (ckpt_dir / "checkpoint").read_text() == "model.pth.tar-2\n"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= {"train/loss", "train/lr", "test/accuracy", "test/macro_f1"}
    lr_steps = [(e.step, round(e.value, 6)) for e in events.Scalars("train/lr")]
    assert lr_steps == [(0, 0.01), (1, 0.01), (2, 0.1), (3, 0.1), (4, 0.1), (5, 0.05)]  # n_iter = epoch*3+batch
    ckpt = torch.load(str(ckpt_dir / "model.pth.tar-2"), weights_only=True)
    assert set(ckpt) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result", "run_state"}
    assert ckpt["epoch"] == 2 and ckpt["val_result"] is None
    assert torch.equal(ckpt["state_dict"]["weight"], trainer.model.weight.detach())
    assert trainer._writer is None  # closed after training


def test_best_val_saves_best_and_deploys_it(tmp_path, capsys):
    cfg = make_cfg(tmp_path, **{"TEST.FINAL_MODEL": "best_val", "TRAIN.CHECKPOINT_FREQ": 1})
    trainer = ToyTrainer(cfg)
    trainer.train()
    out = capsys.readouterr().out
    assert out.count("Evaluate on the *val* set") == 2
    assert "Deploy the model with the best val performance" in out
    assert re.search(r'Loading weights to prompt_learner from ".*model-best.pth.tar" \(epoch = \d\)', out)
    files = sorted(os.listdir(tmp_path / MODEL_NAME))
    assert files == ["checkpoint", "model-best.pth.tar", "model.pth.tar-1", "model.pth.tar-2"]
    best = torch.load(str(tmp_path / MODEL_NAME / "model-best.pth.tar"), weights_only=True)
    assert best["val_result"] == trainer.best_result and type(best["val_result"]) is float


def test_best_val_without_validation_warns_and_deploys_last(tmp_path, capsys):
    cfg = make_cfg(tmp_path, **{"TEST.FINAL_MODEL": "best_val", "TEST.NO_TEST_EARLY": True,
                                "TRAIN.EARLY_STOPPING": True})  # fmt: skip
    trainer = ToyTrainer(cfg)
    trainer.train()
    out = capsys.readouterr().out
    assert "Warning: TRAIN.EARLY_STOPPING is inactive" in out
    assert "no model-best.pth.tar was written" in out
    assert "Deploy the last-epoch model" in out and "Evaluate on the *test* set" in out
    assert "Evaluate on the *val* set" not in out


# ---------------------------------------------------------------- early stopping


def _early_stop_cfg(tmp_path, patience, max_epoch=6, enabled=True):
    return make_cfg(tmp_path, **{"TEST.FINAL_MODEL": "best_val", "TRAIN.EARLY_STOPPING": enabled,
                                 "TRAIN.PATIENT_COUNT": patience, "OPTIM.MAX_EPOCH": max_epoch,
                                 "TRAIN.EARLY_STOPPING_MIN_EPOCHS": 0})  # fmt: skip


def test_early_stopping_stops_at_patience(tmp_path, capsys):
    ScriptedValTrainer.val_script = [50.0, 60.0, 60.0, 55.0, 70.0, 80.0]  # no strict gain after epoch 2
    trainer = ScriptedValTrainer(_early_stop_cfg(tmp_path, patience=2))
    trainer.train()
    out = capsys.readouterr().out
    assert [e for e in trainer.events if e.startswith("run_epoch")] == [f"run_epoch {i}" for i in range(4)]
    assert "Early stopping after epoch 4" in out
    ckpt_dir = tmp_path / MODEL_NAME
    assert sorted(os.listdir(ckpt_dir)) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-4"]
    best = torch.load(str(ckpt_dir / "model-best.pth.tar"), weights_only=True)
    assert best["epoch"] == 2 and best["val_result"] == 60.0
    assert "Deploy the model with the best val performance" in out


def test_early_stopping_and_best_val_follow_the_released_bmip_trainer(tmp_path, capsys):
    # Released BMIP after_epoch: a new model-best only when val > best + 0.01; the patience counter resets on any
    # strict gain; a stop needs patience exhausted and epoch index >= 5 (6 finished epochs).
    ScriptedValTrainer.val_script = [50.0, 50.005, 49.0, 48.0, 47.0, 46.0, 45.0, 44.0, 43.0, 42.0]
    cfg = make_cfg(tmp_path, **{"TEST.FINAL_MODEL": "best_val", "TRAIN.EARLY_STOPPING": True,
                                "TRAIN.PATIENT_COUNT": 2, "OPTIM.MAX_EPOCH": 10})  # released defaults otherwise
    trainer = ScriptedValTrainer(cfg)
    trainer.train()
    out = capsys.readouterr().out
    # epoch 2 gains 0.005: resets the counter but is not a new best; epochs 3, 4 exhaust patience 2, yet the run
    # may only stop once 6 epochs have finished
    assert sum(e.startswith("run_epoch") for e in trainer.events) == 6
    assert "Early stopping after epoch 6" in out
    best = torch.load(str(tmp_path / MODEL_NAME / "model-best.pth.tar"), weights_only=True)
    assert best["epoch"] == 1 and best["val_result"] == 50.0
    assert cfg.TRAIN.EARLY_STOPPING_MIN_EPOCHS == 6 and cfg.TRAIN.BEST_VAL_MIN_DELTA == 0.01


def test_model_is_never_selected_on_test_images(tmp_path, capsys):
    class NoValTrainer(ScriptedValTrainer):
        def build_data_loader(self):
            super().build_data_loader()
            self.val_loader = None  # Dassl's test(split="val") would fall back to the test set

    ScriptedValTrainer.val_script = [50.0, 60.0]
    trainer = NoValTrainer(make_cfg(tmp_path, **{"TEST.FINAL_MODEL": "best_val", "TRAIN.EARLY_STOPPING": True}))
    trainer.train()
    out = capsys.readouterr().out
    assert "would choose the model on test images: the dataset has no val split" in out
    assert "Evaluate on the *val* set" not in out and "Deploy the last-epoch model" in out
    assert not (tmp_path / MODEL_NAME / "model-best.pth.tar").exists()


def test_early_stopping_off_runs_all_epochs(tmp_path):
    ScriptedValTrainer.val_script = [50.0, 40.0, 40.0, 40.0]
    trainer = ScriptedValTrainer(_early_stop_cfg(tmp_path, patience=1, max_epoch=4, enabled=False))
    trainer.train()
    assert sum(e.startswith("run_epoch") for e in trainer.events) == 4


def test_early_stopping_works_with_plain_default_cfg(tmp_path):
    cfg = get_cfg_default()  # no extension keys at all: the engine falls back to its defaults
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.OPTIM.NAME, cfg.OPTIM.MAX_EPOCH, cfg.USE_CUDA = "sgd", 1, False
    trainer = ToyTrainer(cfg)
    trainer.train()
    assert trainer.device == torch.device("cpu") and not trainer.stop_training


# ---------------------------------------------------------------- resume


@pytest.mark.parametrize("kill_at_epoch", [1, 2])  # 2: the cosine successor has already stepped
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, capsys, kill_at_epoch):
    # Best val at epoch 1: a resumed run that forgot the best result would overwrite model-best.
    ScriptedValTrainer.val_script = [70.0, 50.0, 60.0, 65.0]
    overrides = {"OPTIM.MAX_EPOCH": 4, "TRAIN.CHECKPOINT_FREQ": 1, "TEST.FINAL_MODEL": "best_val"}
    full = ScriptedValTrainer(make_cfg(tmp_path / "full", **overrides))
    full.train()

    KilledTrainer.kill_at_epoch = kill_at_epoch
    killed = KilledTrainer(make_cfg(tmp_path / "resumed", **overrides))
    with pytest.raises(Killed):
        killed.train()
    capsys.readouterr()
    resumed = ScriptedValTrainer(make_cfg(tmp_path / "resumed", **overrides))
    resumed.train()
    out = capsys.readouterr().out
    assert f"Found checkpoint at {tmp_path / 'resumed'} (will resume training)" in out
    assert f"Previous epoch: {kill_at_epoch}" in out

    assert _lr_events(killed) + _lr_events(resumed) == _lr_events(full)
    assert len(set(_lr_events(full))) == 4  # the LR really changes every epoch
    for fname in ["model.pth.tar-4", "model-best.pth.tar"]:
        a = torch.load(str(tmp_path / "full" / MODEL_NAME / fname), weights_only=True)
        b = torch.load(str(tmp_path / "resumed" / MODEL_NAME / fname), weights_only=True)
        assert a["epoch"] == b["epoch"] and a["val_result"] == b["val_result"]
        for key in a["state_dict"]:
            assert torch.equal(a["state_dict"][key], b["state_dict"][key])
    assert resumed.best_result == full.best_result == 70.0


def test_curves_csv_has_one_row_per_epoch_also_after_a_resume(tmp_path):
    from results.curves import read_curves

    ScriptedValTrainer.val_script = [70.0, 50.0, 60.0, 65.0]
    overrides = {"OPTIM.MAX_EPOCH": 4, "TEST.FINAL_MODEL": "best_val"}
    full = ScriptedValTrainer(make_cfg(tmp_path / "full", **overrides))
    full.train()
    KilledTrainer.kill_at_epoch = 2
    with pytest.raises(Killed):
        KilledTrainer(make_cfg(tmp_path / "resumed", **overrides)).train()
    # the row of an epoch trained again after the resume must not appear twice
    (tmp_path / "resumed" / "curves.csv").write_text((tmp_path / "resumed" / "curves.csv").read_text()
                                                     + "3,0.1,9.9,,99.0\n")
    ScriptedValTrainer(make_cfg(tmp_path / "resumed", **overrides)).train()
    curves = read_curves(tmp_path / "full" / "curves.csv")
    assert curves.epochs == [1, 2, 3, 4]
    assert curves.columns["val_accuracy"] == [70.0, 50.0, 60.0, 65.0]
    assert curves.columns["lr"] == [pytest.approx(float(e.split("lr=")[1]), rel=1e-5) for e in _lr_events(full)]
    assert all(loss > 0 for loss in curves.columns["train_loss"])
    assert (tmp_path / "resumed" / "curves.csv").read_text() == (tmp_path / "full" / "curves.csv").read_text()


def test_rerun_of_finished_job_only_retests(tmp_path, capsys):
    ToyTrainer(make_cfg(tmp_path)).train()
    capsys.readouterr()
    again = ToyTrainer(make_cfg(tmp_path))
    again.train()
    out = capsys.readouterr().out
    assert not any(e.startswith("run_epoch") for e in again.events)
    assert "Previous epoch: 2" in out and "Evaluate on the *test* set" in out


# ---------------------------------------------------------------- load_model, anomalies, misc


def test_load_model_with_val_result_none_and_missing_file(tmp_path, capsys):
    trainer = ToyTrainer(make_cfg(tmp_path))
    with torch.no_grad():
        trainer.model.weight.fill_(0.25)
    trainer.save_model(0, str(tmp_path))  # val_result None
    other = ToyTrainer(make_cfg(tmp_path / "other"))
    other.load_model(str(tmp_path), epoch=1)
    assert torch.equal(other.model.weight, trainer.model.weight)
    path = tmp_path / MODEL_NAME / "model.pth.tar-1"
    assert f'Loading weights to {MODEL_NAME} from "{path}" (epoch = 1)' in capsys.readouterr().out

    with pytest.raises(FileNotFoundError, match=r"model-best.pth.tar.*holds \['checkpoint', 'model.pth.tar-1'\]"):
        other.load_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        other.load_model(str(tmp_path / "nowhere"), epoch=3)
    other.load_model("")  # no directory: skipped with a note
    assert "load_model() is skipped" in capsys.readouterr().out


def test_detect_anomaly_on_nan(tmp_path):
    trainer = ToyTrainer(make_cfg(tmp_path))
    trainer.detect_anomaly(torch.tensor(1.0))
    with pytest.raises(FloatingPointError, match=r"Loss is infinite or NaN.*LR.*fp32"):
        trainer.detect_anomaly(torch.tensor(float("nan")))
    weight_before = trainer.model.weight.detach().clone()
    loss = trainer.model(torch.full((1, 4), float("inf"))).sum()
    with pytest.raises(FloatingPointError):
        trainer.model_backward_and_update(loss)
    assert torch.equal(trainer.model.weight, weight_before)  # no step was taken


def test_a_finite_but_diverging_run_is_flagged_in_the_log(tmp_path, capsys):
    class Exploding(ToyTrainer):
        def run_epoch(self):
            super().run_epoch()
            if self.epoch == 1:
                with torch.no_grad():
                    self.model.weight.mul_(1000.0)  # stays finite, grows far past epoch 1

    trainer = Exploding(make_cfg(tmp_path, **{"OPTIM.MAX_EPOCH": 3}))
    trainer.train()
    out = capsys.readouterr().out
    assert "Warning: training looks divergent at epoch 1" not in out
    assert re.search(r"Warning: training looks divergent at epoch 2: .*parameter RMS [\d.e+]+x that after epoch 1. "
                     r"Consider a lower OPTIM.LR", out)
    assert trainer.divergence_reference["param_rms"] > 0  # saved with the checkpoints (run_state)


def test_model_registry_helpers(tmp_path):
    trainer = ToyTrainer(make_cfg(tmp_path))
    assert trainer.get_model_names() == [MODEL_NAME]
    assert trainer.get_model_names(MODEL_NAME) == [MODEL_NAME]
    with pytest.raises(KeyError, match="No model registered"):
        trainer.get_model_names("other")
    with pytest.raises(KeyError, match="already registered"):
        trainer.register_model(MODEL_NAME, nn.Linear(1, 1))
    trainer.set_model_mode("eval")
    assert not trainer.model.training
    trainer.set_model_mode("train")
    assert trainer.model.training
    with pytest.raises(KeyError, match="set_model_mode"):
        trainer.set_model_mode("predict")
    trainer.write_scalar("x", 1.0)  # no writer yet: a no-op
    assert trainer.test() == pytest.approx(trainer.evaluator.evaluate()["accuracy"])


def test_build_trainer_and_unknown_name(tmp_path, capsys):
    TRAINER_REGISTRY.register(ToyTrainer, force=True)
    cfg = make_cfg(tmp_path)
    cfg.TRAINER.NAME = "ToyTrainer"
    assert isinstance(build_trainer(cfg), ToyTrainer)
    assert "Loading trainer: ToyTrainer" in capsys.readouterr().out
    cfg.TRAINER.NAME = "ToyTrainr"
    with pytest.raises(ValueError, match=r"but got \[ToyTrainr\] \(do you mean \[ToyTrainer\]\?\)"):
        build_trainer(cfg)


def test_simple_trainer_build_model_explains_override(tmp_path):
    class NoModel(SimpleTrainer):
        build_data_loader = ToyTrainer.build_data_loader

        def check_cfg(self, cfg):
            self.events = []

    with pytest.raises(NotImplementedError, match="override build_model"):
        NoModel(make_cfg(tmp_path))


def test_resolve_device():
    cfg = get_cfg_default()
    cfg.USE_CUDA = False
    assert resolve_device(cfg) == torch.device("cpu")  # no DEVICE key: Dassl's USE_CUDA rule
    cfg = extend_cfg(get_cfg_default())
    cfg.DEVICE = "cpu"
    assert resolve_device(cfg) == torch.device("cpu")
    cfg.DEVICE = "gpu0"
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device(cfg)
    if not torch.cuda.is_available():
        cfg.DEVICE = "cuda:0"
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device(cfg)


def test_progress_bar_only_on_a_terminal(monkeypatch):
    class FakeStderr:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

        def write(self, s):
            pass

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", FakeStderr(False))
    assert _progress([1, 2], desc="x").disable
    monkeypatch.setattr(sys, "stderr", FakeStderr(True))
    bar = _progress([1, 2], desc="x")
    assert not bar.disable and list(bar) == [1, 2]
