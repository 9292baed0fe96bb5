"""Checkpoints both ways between this project and the released MaPLe, BMIP, IVLP, VPT and BITP code.

The released trainers register their whole CustomCLIP and load with ``load_state_dict(..., strict=False)``. The
modules below rebuild that key layout (names and shapes from the released code, as described in
shared/spec/bmip-released-code.md and the MaPLe repository's clip/model.py, trainers/{maple,independentVL,vpt}.py)
with a stand-in frozen weight per block, so a test can load exactly as the release does and see which keys arrive.
"""
import re

import pytest
import torch
import torch.nn as nn

from clip_patch import load_backbone
from dassl.engine import TRAINER_REGISTRY, build_trainer
from dassl.engine.run_dir import NoDeployedModel, write_result
from dassl.utils import CheckpointError
from runs.config import build_parser, setup_cfg
from scripts import export_checkpoint
from sweeps.jobs import SetupError
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.bmip import BMIP, BMIPPromptLearner
from trainers.ivlp import IVLP, VisionLanguagePrompts
from trainers.maple import MaPLePromptLearner

CLASSNAMES = ["cat", "dog", "sea_lion"]
LAYERS, WIDTH, N_CLS_RELEASED = 12, 64, 10  # tiny-ViT: 12 blocks of width 64 on both sides


# -- the released key layout ---------------------------------------------------------------------------------------
class ReleasedBlock(nn.Module):
    """A released transformer block: a frozen CLIP weight, plus what the method adds to the block."""

    def __init__(self, prompt_tokens=0, gates=False):
        super().__init__()
        self.ln_1 = nn.LayerNorm(WIDTH)
        if prompt_tokens:  # IVLP / VPT: this block's deep prompt
            self.VPT_shallow = nn.Parameter(torch.zeros(prompt_tokens, WIDTH))
        if gates:  # BMIP: both gates exist in every block
            self.learnable_linear1 = nn.Linear(1, 1)
            self.learnable_linear2 = nn.Linear(1, 1)


class ReleasedEncoder(nn.Module):
    """``image_encoder`` (CLIP's visual) or ``text_encoder`` (holds CLIP's ``transformer``)."""

    def __init__(self, prompt_depth=0, prompt_tokens=0, gates=False, shallow_prompt_tokens=0):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(*[
            ReleasedBlock(prompt_tokens if 0 < i < prompt_depth else 0, gates) for i in range(LAYERS)])
        if shallow_prompt_tokens:  # IVLP / VPT: the vision prompt appended after the patches
            self.VPT = nn.Parameter(torch.zeros(shallow_prompt_tokens, WIDTH))


def class_buffers(module, n_ctx):
    module.register_buffer("token_prefix", torch.zeros(N_CLS_RELEASED, 1, WIDTH))
    module.register_buffer("token_suffix", torch.zeros(N_CLS_RELEASED, 77 - 1 - n_ctx, WIDTH))


def zeros(*shape):
    return nn.Parameter(torch.zeros(*shape))


def released_maple(depth, b=2):
    learner = nn.Module()
    learner.ctx = zeros(b, WIDTH)
    learner.proj = nn.Linear(WIDTH, WIDTH)
    learner.compound_prompts_text = nn.ParameterList([zeros(b, WIDTH) for _ in range(depth - 1)])
    learner.compound_prompt_projections = nn.ModuleList([nn.Linear(WIDTH, WIDTH) for _ in range(depth - 1)])
    class_buffers(learner, b)
    live = {f"prompt_learner.{k}" for k, _ in learner.named_parameters()}
    return ReleasedCustomCLIP(learner, ReleasedEncoder(), ReleasedEncoder()), live


def released_bmip(depth, share, b=2):
    """Live: vision gates in blocks 1..J-1, text gates in blocks 1..J-2, v->t heads 0..J-3 (release §2.2, §4)."""
    learner = nn.Module()
    learner.ctx_t = zeros(b, WIDTH)
    learner.proj_t = nn.Linear(WIDTH, WIDTH)
    learner.compound_prompts_text = nn.ParameterList([zeros(b, WIDTH) for _ in range(depth - 1)])
    learner.compound_prompts_visual = nn.ParameterList([zeros(b, WIDTH) for _ in range(depth - 1)])
    if share:
        learner.single_layer_t, learner.single_layer_v = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
    else:
        learner.compound_prompt_projections_t = nn.ModuleList([nn.Linear(WIDTH, WIDTH) for _ in range(depth - 1)])
        learner.compound_prompt_projections_v = nn.ModuleList([nn.Linear(WIDTH, WIDTH) for _ in range(depth - 1)])
    learner.ctx_v = zeros(77, WIDTH)  # dead tensors of the release
    learner.proj_v = nn.Linear(WIDTH, WIDTH)
    learner.exchange_layer_t = nn.Linear(2 * WIDTH, WIDTH)
    learner.exchange_layer_v = nn.Linear(2 * WIDTH, WIDTH)
    class_buffers(learner, b)
    model = ReleasedCustomCLIP(learner, ReleasedEncoder(gates=True), ReleasedEncoder(gates=True))
    dead_or_conditional = ("ctx_v", "proj_v", "exchange_layer", "single_layer_v", "compound_prompt_projections_v")
    live = {f"prompt_learner.{k}" for k, _ in learner.named_parameters() if not k.startswith(dead_or_conditional)}
    if share and depth > 2:
        live |= {"prompt_learner.single_layer_v.weight", "prompt_learner.single_layer_v.bias"}
    for k in range(0 if share else depth - 2):
        live |= {f"prompt_learner.compound_prompt_projections_v.{k}.{p}" for p in ("weight", "bias")}
    for p in ("weight", "bias"):
        live |= {f"image_encoder.transformer.resblocks.{l}.learnable_linear1.{p}" for l in range(1, depth)}
        live |= {f"text_encoder.transformer.resblocks.{l}.learnable_linear2.{p}" for l in range(1, depth - 1)}
    return model, live


def released_ivlp(n_text, depth_text, n_vision, depth_vision):
    learner = nn.Module()
    learner.ctx = zeros(n_text, WIDTH)
    class_buffers(learner, n_text)
    model = ReleasedCustomCLIP(learner, ReleasedEncoder(depth_vision, n_vision, shallow_prompt_tokens=n_vision),
                               ReleasedEncoder(depth_text, n_text))
    return model, {k for k, _ in model.named_parameters() if "prompt_learner" in k or "VPT" in k}


def released_vpt(n_vision, depth_vision):
    model = ReleasedCustomCLIP(None, ReleasedEncoder(depth_vision, n_vision, shallow_prompt_tokens=n_vision),
                               ReleasedEncoder())
    return model, {k for k, _ in model.named_parameters() if "VPT" in k}


class ReleasedCustomCLIP(nn.Module):
    def __init__(self, prompt_learner, image_encoder, text_encoder):
        super().__init__()
        if prompt_learner is not None:  # the released VPT has none (its text prompt is fixed)
            self.prompt_learner = prompt_learner
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.logit_scale = nn.Parameter(torch.ones([]))


# -- export: our learner -> the release's strict=False load -----------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


CASES = {  # name -> (trainer, our learner from tiny CLIP, the released model and its live keys)
    "MaPLe": ("MaPLe", lambda c: MaPLePromptLearner(c, CLASSNAMES, 2, "a photo of a", 9), lambda: released_maple(9)),
    "BMIP": ("BMIP", lambda c: BMIPPromptLearner(c, CLASSNAMES, 2, "a photo of a", 9, "reference", True, True),
             lambda: released_bmip(9, share=True)),
    "BMIP-depth3-per_layer_heads": (
        "BMIP", lambda c: BMIPPromptLearner(c, CLASSNAMES, 2, "a photo of a", 3, "reference", False, False),
        lambda: released_bmip(3, share=False)),
    "BMIP-depth2": ("BMIP", lambda c: BMIPPromptLearner(c, CLASSNAMES, 2, "a photo of a", 2, "reference", True, True),
                    lambda: released_bmip(2, share=True)),
    "IVLP-2+2": ("IVLP", lambda c: VisionLanguagePrompts(c, CLASSNAMES, "a photo of a", 2, 12, 2, 12),
                 lambda: released_ivlp(2, 12, 2, 12)),
    "IVLP-language_only": ("IVLP", lambda c: VisionLanguagePrompts(c, CLASSNAMES, "a photo of a", 4, 12, 0, 0),
                           lambda: released_ivlp(4, 12, 0, 0)),
    "VPT-deep": ("VPT", lambda c: VisionLanguagePrompts(c, CLASSNAMES, "a photo of a", 0, 0, 8, 12),
                 lambda: released_vpt(8, 12)),
    "VPT-shallow": ("VPT", lambda c: VisionLanguagePrompts(c, CLASSNAMES, "a photo of a", 0, 0, 4, 1),
                    lambda: released_vpt(4, 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_loads_into_the_released_model_with_every_trainable_key(tiny, case):
    trainer, build_learner, build_released = CASES[case]
    torch.manual_seed(0)
    learner_state = build_learner(tiny).state_dict()
    exported = TRAINER_REGISTRY.get(trainer).RELEASE_LAYOUT.to_release(learner_state)
    released, live = build_released()
    missing, unexpected = released.load_state_dict(exported, strict=False)
    assert unexpected == []  # nothing is silently ignored by the release's strict=False load
    assert set(exported) == live  # every tensor the release trains and uses arrives, and nothing else is written
    assert not live & set(missing)
    values = released.state_dict()
    for key, value in exported.items():
        assert torch.equal(values[key], value), key
    assert len(exported) == len(learner_state)


def test_per_sample_bmip_and_foreign_learners_are_refused(tiny):
    per_sample = BMIPPromptLearner(tiny, CLASSNAMES, 2, "a photo of a", 9, "per_sample", True, True)
    with pytest.raises(ValueError, match="MODE per_sample.*no released equivalent"):
        BMIP.RELEASE_LAYOUT.to_release(per_sample.state_dict())
    maple = MaPLePromptLearner(tiny, CLASSNAMES, 2, "a photo of a", 9)
    with pytest.raises(KeyError, match="'proj.weight' is not a tensor of this trainer's prompt learner"):
        IVLP.RELEASE_LAYOUT.to_release(maple.state_dict())


# -- through files and trainers: export command, released IVLP/VPT checkpoints here --------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root))
    return root


def toy_trainer(root, name, *opts):
    argv = ["--root", str(root), "--trainer", name, "--output-dir", str(root / "out" / name)]
    node = "COOP" if name == "ZeroshotCLIP" else name.upper()
    argv += toy_opts(str(root)) + [f"TRAINER.{node}.PREC", "fp32", "MODEL.INIT_SEED", "0", *opts]
    return build_trainer(setup_cfg(build_parser().parse_args(argv)))


def learner_of(trainer):
    return trainer._models[trainer.get_model_names()[0]]


def eval_logits(trainer, images):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model_inference(images)


def test_export_command_writes_the_released_file_and_it_loads_both_ways(data_root, tmp_path, capsys):
    trainer = toy_trainer(data_root, "BMIP")
    trainer.batch_idx, trainer.num_batches = 0, 2  # one step outside an epoch
    batch = next(iter(trainer.train_loader_x))
    trainer.forward_backward(batch)
    trainer.save_model(2, str(tmp_path / "run"), val_result=55.5)  # model.pth.tar-3
    write_result(str(tmp_path / "run"), {"mode": "train", "metrics": {}, "deployed": "last_step"})  # finished

    path = export_checkpoint.main(["--trainer", "BMIP", "--model-dir", str(tmp_path / "run"),
                                   "--out-dir", str(tmp_path / "release")])
    assert path == str(tmp_path / "release" / "MultiModalPromptLearner" / "model.pth.tar-3")
    assert f"--model-dir {tmp_path / 'release'} --load-epoch 3" in capsys.readouterr().out
    written = torch.load(path, map_location="cpu", weights_only=True)
    assert written.keys() == {"state_dict", "epoch", "optimizer", "scheduler", "val_result"}
    assert [written[k] for k in ("epoch", "optimizer", "scheduler", "val_result")] == [3, None, None, 55.5]

    released, live = released_bmip(9, share=True)
    missing, unexpected = released.load_state_dict(written["state_dict"], strict=False)
    assert unexpected == [] and set(written["state_dict"]) == live
    learner = learner_of(trainer)
    assert torch.equal(released.image_encoder.transformer.resblocks[8].learnable_linear1.bias,
                       learner.vision_gates[7].bias)
    assert torch.equal(released.prompt_learner.single_layer_v.weight, learner.single_layer_v.weight)

    fresh = toy_trainer(data_root, "BMIP", "MODEL.INIT_SEED", "4")
    images = batch["img"]
    assert (eval_logits(fresh, images) - eval_logits(trainer, images)).abs().max() > 1e-4
    fresh.load_model(str(tmp_path / "release"), epoch=3)
    assert torch.equal(eval_logits(fresh, images), eval_logits(trainer, images))


def test_bitp_export_writes_the_released_ctx_v_rows_and_loads_back(data_root, tmp_path):
    joint = ("TRAINER.BITP.CONNECT_METHOD", "joint", "TRAINER.BITP.N_CTX", "1")
    trainer = toy_trainer(data_root, "BITP", *joint)
    trainer.batch_idx, trainer.num_batches = 0, 2  # one step outside an epoch
    batch = next(iter(trainer.train_loader_x))
    trainer.forward_backward(batch)
    trainer.save_model(0, str(tmp_path / "run"))  # model.pth.tar-1
    write_result(str(tmp_path / "run"), {"mode": "train", "metrics": {}, "deployed": "last_step"})

    path = export_checkpoint.main(["--trainer", "BITP", "--model-dir", str(tmp_path / "run"),
                                   "--out-dir", str(tmp_path / "release")])
    written = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    learner = learner_of(trainer)
    assert set(written) == {f"prompt_learner.{key}" for key in learner.state_dict()}
    ctx_v = written["prompt_learner.ctx_v"]  # the release registers [77, D_v] and reads the first N_CTX rows
    assert ctx_v.shape == (77, WIDTH) and torch.equal(ctx_v[:1], learner.ctx_v) and not ctx_v[1:].any()

    fresh = toy_trainer(data_root, "BITP", *joint, "MODEL.INIT_SEED", "4")
    images = batch["img"]
    assert (eval_logits(fresh, images) - eval_logits(trainer, images)).abs().max() > 1e-4
    fresh.load_model(str(tmp_path / "release"), epoch=1)
    assert torch.equal(eval_logits(fresh, images), eval_logits(trainer, images))


def test_export_command_refusals(data_root, tmp_path):
    with pytest.raises(SetupError, match="already in the released format"):
        export_checkpoint.export("CoOp", str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(SetupError, match=re.escape(  # the trainers whose class carries a RELEASE_LAYOUT
            "no released checkpoint format for --trainer LinearProbeCLIP; use one of "
            "['BITP', 'BMIP', 'CoPrompt', 'IVLP', 'MMRL', 'MMRLpp', 'MaPLe', 'ProDA', 'PromptSRC', 'PromptSRC_BMIP', "
            "'UPT', 'VPT']")):
        export_checkpoint.export("LinearProbeCLIP", str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(SetupError, match=re.escape("no released checkpoint format for --trainer NoSuchTrainer;")):
        export_checkpoint.export("NoSuchTrainer", str(tmp_path), str(tmp_path / "out"))  # unregistered: no KeyError
    with pytest.raises(NoDeployedModel, match="has not finished"):
        export_checkpoint.export("MaPLe", str(tmp_path), str(tmp_path / "out"))
    toy_trainer(data_root, "MaPLe").save_model(0, str(tmp_path / "run"))
    with pytest.raises(SetupError, match="'ctx' is not a tensor of this trainer's prompt learner"):  # not BMIP
        export_checkpoint.export("BMIP", str(tmp_path / "run"), str(tmp_path / "out"), load_epoch=1)


def write_released(released, directory, folder, epoch):
    """The released model's whole state dict (fp16, as the release saves it) in Dassl's checkpoint dict."""
    with torch.no_grad():
        for p in released.parameters():
            p.normal_(0, 0.1)
    state = {k: v.half() for k, v in released.state_dict().items()}
    path = directory / folder / f"model.pth.tar-{epoch}"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state, "epoch": epoch, "optimizer": {}, "scheduler": {}}, path)
    return state


@pytest.mark.parametrize("name, released", [("IVLP", lambda: released_ivlp(2, 9, 2, 9)),
                                            ("VPT", lambda: released_vpt(2, 9))])
def test_released_ivlp_and_vpt_checkpoints_load_for_evaluation(data_root, tmp_path, name, released):
    trainer = toy_trainer(data_root, name, f"TRAINER.{name}.PROMPT_DEPTH_VISION", "9")
    images = next(iter(trainer.test_loader))["img"]
    before = eval_logits(trainer, images)
    state = write_released(released()[0], tmp_path, TRAINER_REGISTRY.get(name).CHECKPOINT_NAME, epoch=5)
    trainer.load_model(str(tmp_path), epoch=5)

    learner = learner_of(trainer)
    expected = {"ctx_vision": state["image_encoder.VPT"]}
    expected.update({f"deep_vision.{l - 1}": state[f"image_encoder.transformer.resblocks.{l}.VPT_shallow"]
                     for l in range(1, 9)})
    if name == "IVLP":
        expected["ctx"] = state["prompt_learner.ctx"]
        expected.update({f"deep_text.{l - 1}": state[f"text_encoder.transformer.resblocks.{l}.VPT_shallow"]
                         for l in range(1, 9)})
    assert learner.state_dict().keys() == expected.keys()
    for key, value in learner.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, expected[key].float()), key
    assert (eval_logits(trainer, images) - before).abs().max() > 1e-3
    assert 0 <= trainer.test() <= 100


def test_released_checkpoint_of_another_depth_is_rejected(data_root, tmp_path):
    trainer = toy_trainer(data_root, "IVLP")  # depth 9 on both sides
    write_released(released_ivlp(2, 12, 2, 12)[0], tmp_path, "VLPromptLearner", epoch=5)
    with pytest.raises(CheckpointError, match=r"unexpected.*resblocks\.9\.VPT_shallow"):
        trainer.load_model(str(tmp_path), epoch=5)


# -- MODEL.INIT_WEIGHTS and BMIP per_sample ------------------------------------------------------------------------
def test_init_weights_initialises_the_learner_from_a_checkpoint_before_training(data_root, tmp_path):
    source = toy_trainer(data_root, "MaPLe", "MODEL.INIT_SEED", "1")
    source.save_model(0, str(tmp_path))
    path = tmp_path / "MultiModalPromptLearner" / "model.pth.tar-1"
    initialised = toy_trainer(data_root, "MaPLe", "MODEL.INIT_WEIGHTS", str(path))
    for (name, p), q in zip(learner_of(initialised).named_parameters(), learner_of(source).parameters()):
        assert torch.equal(p, q), name
    initialised.batch_idx, initialised.num_batches = 0, 2
    assert torch.isfinite(torch.tensor(initialised.forward_backward(next(iter(initialised.train_loader_x)))["loss"]))
    assert not torch.equal(learner_of(initialised).ctx, learner_of(source).ctx)  # it trains from there

    released, _ = released_maple(9)  # a released whole-model file works too
    state = write_released(released, tmp_path / "release", "MultiModalPromptLearner", epoch=5)
    from_release = toy_trainer(data_root, "MaPLe", "MODEL.INIT_WEIGHTS",
                               str(tmp_path / "release" / "MultiModalPromptLearner" / "model.pth.tar-5"))
    assert torch.equal(learner_of(from_release).compound_prompts_text[7],
                       state["prompt_learner.compound_prompts_text.7"].float())


def test_init_weights_errors_name_the_cause(data_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'MODEL.INIT_WEIGHTS is ".*nowhere.pth", which is not a file'):
        toy_trainer(data_root, "MaPLe", "MODEL.INIT_WEIGHTS", str(tmp_path / "nowhere.pth"))
    toy_trainer(data_root, "MaPLe").save_model(0, str(tmp_path))
    with pytest.raises(CheckpointError, match=r"does not fit the model built for this run.*unexpected keys \['ctx'"):
        toy_trainer(data_root, "BMIP", "MODEL.INIT_WEIGHTS",
                    str(tmp_path / "MultiModalPromptLearner" / "model.pth.tar-1"))
    with pytest.raises(ValueError, match="ZeroshotCLIP has no weights to initialise"):
        toy_trainer(data_root, "ZeroshotCLIP", "MODEL.INIT_WEIGHTS",
                    str(tmp_path / "MultiModalPromptLearner" / "model.pth.tar-1"))


def test_per_sample_bmip_loads_a_released_checkpoint_only_when_asked(data_root, tmp_path):
    state = write_released(released_bmip(9, share=True)[0], tmp_path, "MultiModalPromptLearner", epoch=10)
    refusing = toy_trainer(data_root, "BMIP", "TRAINER.BMIP.MODE", "per_sample")
    with pytest.raises(ValueError, match="per_sample but this is a released BMIP checkpoint.*"
                                         "TRAINER.BMIP.ALLOW_REFERENCE_CHECKPOINT True"):
        refusing.load_model(str(tmp_path), epoch=10)

    allowed = toy_trainer(data_root, "BMIP", "TRAINER.BMIP.MODE", "per_sample",
                          "TRAINER.BMIP.ALLOW_REFERENCE_CHECKPOINT", "True")
    allowed.load_model(str(tmp_path), epoch=10)
    learner = learner_of(allowed)
    assert len(learner.text_gates) == 8  # the eighth comes from text block 8, which the release never used
    assert torch.equal(learner.text_gates[7].weight,
                       state["text_encoder.transformer.resblocks.8.learnable_linear2.weight"].float())
    assert torch.equal(learner.ctx_t, state["prompt_learner.ctx_t"].float())
    reference = toy_trainer(data_root, "BMIP")
    reference.load_model(str(tmp_path), epoch=10)  # the reference mode needs no permission
    assert torch.equal(learner_of(reference).text_gates[6].bias,
                       state["text_encoder.transformer.resblocks.7.learnable_linear2.bias"].float())
