"""train.py end to end on the tiny random ViT and a generated image tree: train, checkpoint, eval, resume, seeds."""
import glob
import os
import re
import runpy
import sys
import warnings

import pytest
import torch

from dassl.engine.trainer import TrainerBase
from runs.errors import UsageError
from runs.reports import EVAL_REPORTS
from runs.run import main
from tests.toy_data import make_toy_dataset, toy_opts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def data_root(tmp_path):
    make_toy_dataset(str(tmp_path / "data"))
    return str(tmp_path / "data")


def run(data_root, output_dir, trainer="CoOp", seed=1, extra=(), epochs=2, flags=()):
    argv = ["--root", data_root, "--seed", str(seed), "--trainer", trainer, "--output-dir", str(output_dir),
            *flags, *toy_opts(data_root, epochs=epochs), *extra]
    return main(argv)


def read_log(output_dir):
    """The newest log of a run directory (a re-run writes log.txt-<timestamp> beside log.txt)."""
    sys.stdout.flush()  # the tee buffers its file
    newest = max(glob.glob(os.path.join(output_dir, "log.txt*")), key=os.path.getmtime)
    with open(newest) as f:
        return f.read()


def final_accuracy(text):
    return float(re.findall(r"\* accuracy: ([\d.]+)%", text)[-1])


def test_train_checkpoint_and_eval_only(data_root, tmp_path):
    out = tmp_path / "run"
    trainer = run(data_root, out, extra=["TRAINER.COOP.N_CTX", "4"])
    ckpt = out / "prompt_learner" / "model.pth.tar-2"
    assert ckpt.is_file() and (out / "prompt_learner" / "checkpoint").read_text().strip() == "model.pth.tar-2"
    assert glob.glob(str(out / "tensorboard" / "events.out.tfevents.*"))
    saved = torch.load(ckpt, weights_only=True)  # only tensors and plain values
    assert saved["epoch"] == 2 and list(saved["state_dict"]) == ["ctx"]  # only the trainable module
    assert saved["state_dict"]["ctx"].shape == (4, 64) and saved["state_dict"]["ctx"].dtype == torch.float32
    log = read_log(out)
    assert "Finish training" in log and "Deploy the last-epoch model" in log
    trained_acc = final_accuracy(log)
    trained_ctx = trainer.model.prompt_learner.ctx.detach().clone()

    eval_out = tmp_path / "eval"
    evaluator = run(data_root, eval_out, extra=["TRAINER.COOP.N_CTX", "4"],
                    flags=["--eval-only", "--model-dir", str(out), "--load-epoch", "2"])
    assert torch.equal(evaluator.model.prompt_learner.ctx, trained_ctx)
    eval_log = read_log(eval_out)
    assert 'Loading weights to prompt_learner from "' in eval_log
    assert final_accuracy(eval_log) == trained_acc
    assert not os.path.exists(eval_out / "tensorboard")  # eval-only writes no tensorboard


def test_resume_after_kill_matches_uninterrupted_run(data_root, tmp_path, monkeypatch):
    lrs = []
    original_before_epoch = TrainerBase.before_epoch

    def record_lr(self):
        lrs.append(self.get_current_lr())
        return original_before_epoch(self)

    monkeypatch.setattr(TrainerBase, "before_epoch", record_lr)
    extra = ["TRAIN.CHECKPOINT_FREQ", "1", "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant",
             "INPUT.TRANSFORMS", "['random_resized_crop', 'random_flip', 'normalize']"]
    full = run(data_root, tmp_path / "full", epochs=3, extra=extra)
    full_ctx, full_lrs = full.model.prompt_learner.ctx.detach().clone(), list(lrs)

    lrs.clear()
    original_after_epoch = type(full).after_epoch

    def killed_after_first_epoch(self):
        original_after_epoch(self)
        if self.epoch == 0:
            raise KeyboardInterrupt("simulated kill")

    with monkeypatch.context() as m:
        m.setattr(type(full), "after_epoch", killed_after_first_epoch)
        with pytest.raises(KeyboardInterrupt):
            run(data_root, tmp_path / "resumed", epochs=3, extra=extra)
    resumed = run(data_root, tmp_path / "resumed", epochs=3, extra=extra)
    assert "Found checkpoint at" in read_log(tmp_path / "resumed")
    assert lrs == full_lrs  # epoch 1 (killed run) + epochs 2..3 (resumed) follow the same schedule
    assert len(full_lrs) == 3 and full_lrs[0] == pytest.approx(1e-5)
    assert torch.allclose(resumed.model.prompt_learner.ctx, full_ctx, atol=1e-7)


def test_same_seed_same_run_different_seed_different_shots(data_root, tmp_path):
    shots = ["DATASET.NUM_SHOTS", "2"]
    a = run(data_root, tmp_path / "a", seed=3, extra=shots)
    b = run(data_root, tmp_path / "b", seed=3, extra=shots)
    c = run(data_root, tmp_path / "c", seed=4, extra=shots)
    assert torch.equal(a.model.prompt_learner.ctx, b.model.prompt_learner.ctx)
    losses = [re.findall(r"loss ([\d.]+) \(", read_log(tmp_path / d)) for d in "ab"]
    assert losses[0] and losses[0] == losses[1]
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.model_inference(image), b.model_inference(image))
    paths = [sorted(d.impath for d in t.dm.dataset.train_x) for t in (a, c)]
    assert paths[0] != paths[1]  # seeds 3 and 4 sample different 2-shot subsets
    assert len(paths[0]) == 2 * 6


def test_seed_zero_is_applied(data_root, tmp_path):
    trainer = run(data_root, tmp_path / "s0", seed=0, epochs=1)
    assert trainer.cfg.SEED == 0
    assert "Setting fixed seed: 0" in read_log(tmp_path / "s0")


def test_unknown_trainer_suggests_close_match(data_root, tmp_path):
    with pytest.raises(ValueError, match=r"do you mean \[MaPLe\]"):
        run(data_root, tmp_path / "x", trainer="Maple")


def test_unknown_config_key_names_the_key(data_root, tmp_path):
    with pytest.raises(KeyError, match="TRAINER.COOP.N_CTXX"):
        run(data_root, tmp_path / "x", extra=["TRAINER.COOP.N_CTXX", "4"])


def test_fp16_on_cpu_warns_and_runs_fp32(data_root, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = run(data_root, tmp_path / "fp16", epochs=1, extra=["TRAINER.COOP.PREC", "fp16"])
    messages = [str(w.message) for w in caught if "fp16" in str(w.message)]
    assert len(messages) == 1 and "fp32" in messages[0]
    assert trainer.precision.prec == "fp32"
    assert trainer.model.text_encoder.dtype == torch.float32


def test_missing_model_dir_is_a_clear_error(data_root, tmp_path):
    with pytest.raises(ValueError, match="--model-dir .*nowhere does not exist"):
        run(data_root, tmp_path / "e", flags=["--eval-only", "--model-dir", str(tmp_path / "nowhere"),
                                              "--load-epoch", "2"])


def test_draw_writes_the_analysis_report_of_the_evaluated_model(data_root, tmp_path, monkeypatch):
    """The released train.py's --draw (which crashed there): here the evaluation also writes the analysis report.
    ``python train.py`` itself runs (in this process): it is what registers the report, by importing analysis.draw;
    the runner (runs/) imports no analysis code."""
    extra = ["TRAINER.BMIP.PROMPT_DEPTH", "3"]
    run(data_root, tmp_path / "train", trainer="BMIP", epochs=1, extra=extra)
    monkeypatch.delitem(EVAL_REPORTS, "draw", raising=False)  # as in a fresh process: nothing registered yet
    monkeypatch.delitem(sys.modules, "analysis.draw", raising=False)
    out = tmp_path / "eval"
    monkeypatch.setattr(sys, "argv", [
        "train.py", "--root", data_root, "--seed", "1", "--trainer", "BMIP", "--output-dir", str(out),
        "--eval-only", "--model-dir", str(tmp_path / "train"), "--load-epoch", "1", "--draw",
        *toy_opts(data_root, epochs=2), *extra])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(os.path.join(REPO, "train.py"), run_name="__main__")
    assert done.value.code == 0
    assert EVAL_REPORTS["draw"].__module__ == "analysis.draw"
    written = sorted(p.name for p in (out / "analysis").iterdir())
    assert any(name.startswith("gates_") and name.endswith(".png") for name in written), written
    assert any(name.startswith("modality_") for name in written), written
    assert (out / "result.json").is_file()  # the normal evaluation ran too


def test_draw_without_a_registered_report_is_refused_before_any_work(data_root, tmp_path, monkeypatch):
    """A program that runs train.py's commands without registering the analysis report (the runner alone) refuses
    --draw at once instead of evaluating and then failing."""
    monkeypatch.delitem(EVAL_REPORTS, "draw", raising=False)
    with pytest.raises(UsageError, match=r"^--draw: no analysis report is registered in this program; evaluate "
                                         r"with python train\.py"):
        run(data_root, tmp_path / "eval", flags=["--eval-only", "--draw"])
    assert not (tmp_path / "eval").exists()

def test_the_help_describes_train_py_as_its_docstring_does():
    import ast

    from runs.config import DESCRIPTION

    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")) as f:
        docstring = ast.get_docstring(ast.parse(f.read()))
    assert DESCRIPTION == docstring.split("\n")[0]  # runs/ cannot import train.py: the line is kept equal here
