"""A Dassl/CoOp-style trainer file from another repository drops in: tests/fixtures/third_party_coop.py (written
against the public API only, importing our ``load_clip_to_cpu``) trains through train.py on the toy tree, learns,
computes what our CoOp computes, and its checkpoint round-trips through ``--eval-only``."""
import re
import sys

import pytest
import torch

from clip_patch import load_clip
from dassl.engine import build_trainer
from runs.config import build_parser, setup_cfg
from runs.run import main
from tests.fixtures import third_party_coop  # noqa: F401  (registers ThirdPartyCoOp)
from tests.toy_data import make_toy_dataset, toy_opts
from trainers import clip_loading

RESULT = re.compile(r"^\* accuracy: ([\d.]+)%$", re.M)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root), per_class=(6, 2, 6))
    return root


def argv_for(root, trainer, out, *flags, prec="fp16"):
    """train.py arguments: 4 epochs of Adam on the toy tree, 4 context tokens (PREC fp16 runs fp32 on a CPU)."""
    argv = ["--root", str(root), "--trainer", trainer, "--output-dir", str(out), "--seed", "1", *flags]
    return argv + toy_opts(str(root), epochs=4, optim="adam", lr=0.05) + [
        "TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.PREC", prec]


def test_load_clip_to_cpu_returns_what_the_ecosystem_returns(data_root, monkeypatch):
    cfg = setup_cfg(build_parser().parse_args(argv_for(data_root, "ThirdPartyCoOp", data_root / "x")))
    model = clip_loading.load_clip_to_cpu(cfg)
    reference = load_clip("tiny-ViT")
    assert not model.training and all(p.requires_grad for p in model.parameters())
    assert model.dtype == torch.float32  # a CPU run: fp16 would not compute
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))

    monkeypatch.setattr(clip_loading, "resolve_device", lambda cfg: torch.device("cuda"))
    on_gpu = clip_loading.load_clip_to_cpu(cfg)  # a CUDA run: OpenAI's convert_weights, as clip.build_model does
    assert on_gpu.dtype == torch.float16 and on_gpu.visual.conv1.weight.dtype == torch.float16
    assert on_gpu.ln_final.weight.dtype == torch.float32 and on_gpu.token_embedding.weight.dtype == torch.float32
    assert next(on_gpu.parameters()).device.type == "cpu"


def test_third_party_trainer_computes_what_our_coop_computes(data_root):
    argv = argv_for(data_root, "ThirdPartyCoOp", data_root / "a", prec="fp32")
    theirs = build_trainer(setup_cfg(build_parser().parse_args(argv)))
    argv = argv_for(data_root, "CoOp", data_root / "b", prec="fp32")
    ours = build_trainer(setup_cfg(build_parser().parse_args(argv)))
    with torch.no_grad():
        theirs.model.prompt_learner.ctx.copy_(ours._models["prompt_learner"].ctx)
        images = next(iter(ours.test_loader))["img"]
        ours.set_model_mode("eval")
        theirs.set_model_mode("eval")
        torch.testing.assert_close(theirs.model_inference(images), ours.model_inference(images), atol=1e-4, rtol=0)


def final_accuracy(run_dir):
    """The last accuracy a run's log.txt reports (main leaves the log open: flush it first)."""
    sys.stdout.flush()
    return float(RESULT.findall((run_dir / "log.txt").read_text())[-1])


def test_third_party_trainer_learns_and_its_checkpoint_round_trips(data_root):
    out = data_root / "run"
    untrained = main(argv_for(data_root, "ThirdPartyCoOp", data_root / "untrained", "--no-train"))
    before = untrained.test()  # the untrained prompts (an --eval-only without --model-dir is refused)
    trainer = main(argv_for(data_root, "ThirdPartyCoOp", out))
    after = final_accuracy(out)
    assert "Finish training" in (out / "log.txt").read_text()
    assert (out / "prompt_learner" / "model.pth.tar-4").is_file()
    assert after >= before + 20, (before, after)
    assert not torch.equal(untrained.model.prompt_learner.ctx, trainer.model.prompt_learner.ctx)

    evaluated = main(argv_for(data_root, "ThirdPartyCoOp", data_root / "eval", "--eval-only",
                                   "--model-dir", str(out), "--load-epoch", "4"))
    assert final_accuracy(data_root / "eval") == after
    assert torch.equal(evaluated.model.prompt_learner.ctx, trainer.model.prompt_learner.ctx)
