"""An output folder belongs to one run: lock, stored config, finished = result.json; no code runs from a file;
divergence stops training with the last good checkpoint kept."""
import glob
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from dassl.engine.run_dir import (ConfigMismatch, OutputDirBusy, OutputDirLock, has_checkpoints, lock_holder,
                                  read_config, read_result)
from dassl.engine.trainer import DivergenceError
from dassl.utils.safe_pickle import ForbiddenPickleContent
from runs.run import main
from tests.payloads import MarkerPayload
from tests.toy_data import make_toy_dataset, toy_opts


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root), per_class=(4, 2, 2))
    return str(root)


def run(data_root, output_dir, seed=1, epochs=1, extra=(), flags=()):
    argv = ["--root", data_root, "--seed", str(seed), "--trainer", "CoOp", "--output-dir", str(output_dir),
            *flags, *toy_opts(data_root, epochs=epochs), "TRAINER.COOP.N_CTX", "2", *extra]
    return main(argv)


def logs(output_dir):
    return sorted(glob.glob(os.path.join(output_dir, "log.txt*")))


def test_a_finished_run_is_not_run_again(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    trainer = run(data_root, out)
    result = read_result(str(out))
    assert result["mode"] == "train" and result["epochs_trained"] == 1 and result["split"] == "test"
    assert result["metrics"]["accuracy"] == pytest.approx(trainer.last_results["accuracy"])
    checkpoint = out / "prompt_learner" / "model.pth.tar-1"
    stamp = checkpoint.stat().st_mtime_ns
    capsys.readouterr()

    assert run(data_root, out) is None
    said = capsys.readouterr().out
    assert "This run is complete (accuracy" in said and "nothing to do" in said
    assert checkpoint.stat().st_mtime_ns == stamp and len(logs(out)) == 1  # nothing loaded, trained or logged


def test_a_changed_config_is_refused_unless_accepted(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    run(data_root, out)
    with pytest.raises(ConfigMismatch, match=r"SEED: 1 -> 2") as info:
        run(data_root, out, seed=2)
    assert "--accept-config-change" in str(info.value)
    with pytest.raises(ConfigMismatch, match=r"OPTIM.MAX_EPOCH: 1 -> 2"):
        run(data_root, out, epochs=2)
    assert read_result(str(out))["epochs_trained"] == 1  # the finished run is untouched

    # Keys that never change results (paths, workers, printing, device) do not count.
    assert run(data_root, out, extra=["TRAIN.PRINT_FREQ", "3", "DATALOADER.NUM_WORKERS", "0"]) is None

    capsys.readouterr()
    continued = run(data_root, out, epochs=2, flags=["--accept-config-change"])
    said = capsys.readouterr().out
    assert "continuing" in said and "OPTIM.MAX_EPOCH: 1 -> 2" in said
    assert "Previous epoch: 1" in said and continued.completed_epochs == 2
    assert read_result(str(out))["epochs_trained"] == 2
    assert (out / "result.json.superseded").is_file() and (out / "config.yaml.superseded").is_file()


def test_a_folder_with_a_run_that_never_saved_anything_takes_the_new_config(data_root, tmp_path, monkeypatch):
    import dassl.engine

    def broken_build(cfg):
        raise ValueError("broken build")

    out = tmp_path / "run"
    out.mkdir()  # a folder that existed before the run stays after it fails, holding the failed run's config
    monkeypatch.setattr(dassl.engine, "build_trainer", broken_build)
    with pytest.raises(ValueError, match="^broken build$"):  # fails while building: no checkpoint, no result
        run(data_root, out, seed=1)
    assert read_config(str(out))["SEED"] == 1 and read_result(str(out)) is None and not has_checkpoints(str(out))
    monkeypatch.undo()
    run(data_root, out, seed=5)  # a different config is fine: nothing could be blended
    assert read_config(str(out))["SEED"] == 5 and read_result(str(out))["epochs_trained"] == 1


def test_a_second_run_in_a_busy_folder_fails_at_once(data_root, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from dassl.engine.run_dir import OutputDirLock
        with OutputDirLock({str(out)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert f"pid {holder.pid}" in lock_holder(str(out))
        with pytest.raises(OutputDirBusy, match=rf"in use by another run \(pid {holder.pid} on "):
            run(data_root, out)
        assert logs(out) == []  # refused before anything was written
    finally:
        holder.kill()
        holder.wait()
    assert lock_holder(str(out)) is None  # a killed holder releases the lock
    run(data_root, out)
    with OutputDirLock(str(out)):  # the lock also conflicts inside one process
        with pytest.raises(OutputDirBusy):
            OutputDirLock(str(out)).acquire()


def test_evaluations_are_tied_to_the_model_they_evaluated(data_root, tmp_path, capsys):
    model_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    run(data_root, model_dir)
    evaluate = ["--eval-only", "--model-dir", str(model_dir), "--load-epoch", "1"]
    run(data_root, eval_dir, flags=evaluate)
    record = read_result(str(eval_dir))
    assert record["mode"] == "eval" and list(record["evaluated_models"]) == ["prompt_learner/model.pth.tar-1"]
    assert record["models"]["prompt_learner"]["epoch"] == 1
    assert run(data_root, eval_dir, flags=evaluate) is None  # the same evaluation: complete

    checkpoint = model_dir / "prompt_learner" / "model.pth.tar-1"
    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 10**9))
    capsys.readouterr()
    assert run(data_root, eval_dir, flags=evaluate) is not None  # the model file changed: evaluated again
    assert "the evaluated model files changed" in capsys.readouterr().out

    with pytest.raises(ConfigMismatch, match="training run's checkpoints"):
        run(data_root, model_dir, flags=evaluate)  # evaluating into a training folder would mark it finished
    with pytest.raises(ConfigMismatch, match="finished eval run, this is a train run"):
        run(data_root, eval_dir)


def test_a_crafted_fewshot_pickle_is_refused_without_running_it(tmp_path):
    data = tmp_path / "data"
    make_toy_dataset(str(data), per_class=(4, 2, 2))
    marker = tmp_path / "payload-ran"
    pkl = data / "toy" / "split_fewshot" / "shot_2-seed_1.pkl"
    pkl.parent.mkdir(parents=True)
    with open(pkl, "wb") as f:
        pickle.dump({"train": [MarkerPayload(str(marker))], "val": []}, f)
    with pytest.raises(ForbiddenPickleContent, match=rf"{pkl} asks to load \"io.open\""):
        run(str(data), tmp_path / "run", extra=["DATASET.NUM_SHOTS", "2"])
    assert not marker.exists()


def test_an_absurd_learning_rate_is_rejected_before_anything_is_written(data_root, tmp_path):
    for lr in ("1e9", "-0.1", "1e999"):  # 1e999 reads as inf
        with pytest.raises(ValueError, match=r"OPTIM.LR = .* is not a usable learning rate"):
            run(data_root, tmp_path / "run", extra=["OPTIM.LR", lr])
    assert not (tmp_path / "run").exists()


def test_non_finite_training_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    from trainers.base import CLIPPromptTrainer

    out = tmp_path / "run"
    original = CLIPPromptTrainer.compute_loss

    def loss_goes_nan_in_epoch_2(self, image, label):
        loss, logits = original(self, image, label)
        return (loss * float("nan") if self.epoch == 1 else loss), logits

    monkeypatch.setattr(CLIPPromptTrainer, "compute_loss", loss_goes_nan_in_epoch_2)
    with pytest.raises(DivergenceError, match=r"at epoch 2, batch 1!.*Lower OPTIM.LR"):
        run(data_root, out, epochs=3, extra=["TRAIN.CHECKPOINT_FREQ", "1"])
    kept = torch.load(out / "prompt_learner" / "model.pth.tar-1", weights_only=True)
    assert torch.isfinite(kept["state_dict"]["ctx"]).all()
    assert sorted(os.listdir(out / "prompt_learner")) == ["checkpoint", "model.pth.tar-1"]
    assert read_result(str(out)) is None


def test_exploding_parameters_stop_training(data_root, tmp_path, monkeypatch):
    from trainers.base import CLIPPromptTrainer

    original = CLIPPromptTrainer.forward_backward

    def step_then_overflow(self, batch):
        summary = original(self, batch)
        with torch.no_grad():
            self.model.prompt_learner.ctx.mul_(float("inf"))
        return summary

    monkeypatch.setattr(CLIPPromptTrainer, "forward_backward", step_then_overflow)
    with pytest.raises(DivergenceError, match="parameters are no longer finite"):
        run(data_root, tmp_path / "run")
