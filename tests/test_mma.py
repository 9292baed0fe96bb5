"""MMA against an independent re-computation of the released code (ZjjConan/VLM-MultiModalAdapter
``trainers/mmadapter.py`` with its ``clip/model.py`` blocks and ``clip/gsl.py`` gradient scale layers), written here on
the OpenAI CLIP modules themselves: released weights -> our learner -> the released logits, one training step's loss
and gradients (the release's gradient scaling and its correction), released checkpoints in and out, config errors."""
import pytest
import torch
import torch.nn.functional as F

from clip_patch import load_backbone
from clip_patch.openai_clip import openai_clip
from dassl.engine import build_trainer
from dassl.engine.run_dir import write_result
from runs.config import build_parser, setup_cfg
from scripts import export_checkpoint
from tests.numerics import relative_error
from tests.release_files import write_release_checkpoint
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.base import PromptedCLIP
from trainers.mma import AdapterLearner

CLASSNAMES = ["cat", "dog", "sea_lion", "red panda"]
START, END, DIM, WIDTH = 5, 12, 32, 64  # the published blocks 5..12 and bottleneck; tiny-ViT: width 64, 12 blocks
INIT = "a photo of a"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


# -- the released computation, re-written from the release -----------------------------------------------------
def released_tensors(generator):
    """Random values for every trainable tensor of the released AdapterLearner, under its names and shapes."""
    def draw(*shape):
        return torch.randn(*shape, generator=generator) * 0.2
    state = {}
    for k in range(START, END + 1):
        for side in ("text_adapter", "visual_adapter"):
            state[f"{side}.{k}.down.0.weight"], state[f"{side}.{k}.down.0.bias"] = draw(DIM, WIDTH), draw(DIM)
            state[f"{side}.{k}.up.weight"], state[f"{side}.{k}.up.bias"] = draw(WIDTH, DIM), draw(WIDTH)
        state[f"shared_adapter.{k}.0.weight"], state[f"shared_adapter.{k}.0.bias"] = draw(DIM, DIM), draw(DIM)
    return state


class GradientScaleLayer(torch.autograd.Function):
    """The release's layer: identity forward, gradient times ``factor`` backward."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def released_adapter(state, side, k, block, x, scale):
    """The release's branch of block k on x [N, B, D]: gradient scale layers around ln_1 -> down -> shared -> up."""
    y = block.ln_1(GradientScaleLayer.apply(x, scale))
    y = F.relu(F.linear(y, state[f"{side}.{k}.down.0.weight"], state[f"{side}.{k}.down.0.bias"]))
    y = F.relu(F.linear(y, state[f"shared_adapter.{k}.0.weight"], state[f"shared_adapter.{k}.0.bias"]))
    y = F.linear(y, state[f"{side}.{k}.up.weight"], state[f"{side}.{k}.up.bias"]) * scale
    return GradientScaleLayer.apply(y, 1.0 / scale)


def released_blocks(state, side, blocks, x, scale):
    """Blocks carry layer_index = position + 1; block k adds its adapter to its output, on every token."""
    for position, block in enumerate(blocks):
        k = position + 1
        x = block(x) + (released_adapter(state, side, k, block, x, scale) if START <= k <= END else 0)
    return x


def released_logits(clip_model, state, image, scale, classnames=CLASSNAMES):
    """The released CustomCLIP.forward (train mode: text features recomputed), PREC fp32."""
    texts = [INIT + " " + name.replace("_", " ") + "." for name in classnames]
    tokens = openai_clip().tokenize(texts)  # [n, 77]
    x = (clip_model.token_embedding(tokens) + clip_model.positional_embedding).permute(1, 0, 2)  # [77, n, D]
    x = released_blocks(state, "text_adapter", clip_model.transformer.resblocks, x, scale).permute(1, 0, 2)
    text = clip_model.ln_final(x)[torch.arange(len(texts)), tokens.argmax(dim=-1)] @ clip_model.text_projection

    v = clip_model.visual
    y = v.conv1(image).flatten(2).transpose(1, 2)  # [B, g*g, D]
    y = torch.cat([v.class_embedding + torch.zeros(y.shape[0], 1, y.shape[-1]), y], dim=1) + v.positional_embedding
    y = released_blocks(state, "visual_adapter", v.transformer.resblocks, v.ln_pre(y).permute(1, 0, 2), scale)
    image_features = v.ln_post(y[0]) @ v.proj  # [B, E]
    logits = F.normalize(image_features, dim=-1) @ F.normalize(text, dim=-1).t()
    return clip_model.logit_scale.exp() * logits  # [B, n]


def learner_from_release(backbone, state, scale, release_gradient_scale=True):
    torch.manual_seed(0)
    learner = AdapterLearner(backbone, CLASSNAMES, INIT, START, END, DIM, scale, release_gradient_scale)
    learner.load_state_dict(state)
    return learner


def test_learner_holds_the_released_tensors_and_nothing_else(tiny):
    torch.manual_seed(0)
    learner = AdapterLearner(tiny, CLASSNAMES, INIT, START, END, DIM, 0.001)
    state = released_tensors(torch.Generator().manual_seed(0))
    assert len(state) == 80  # the release's count for blocks 5..12: 8 x (4 text + 4 visual + 2 shared)
    assert {k: v.shape for k, v in learner.state_dict().items()} == {k: v.shape for k, v in state.items()}
    assert sum(p.numel() for p in learner.parameters()) == 8 * (2 * (2 * WIDTH * DIM + DIM + WIDTH) + DIM * DIM + DIM)
    assert all(learner.text_adapter[k] is None and learner.shared_adapter[k] is None for k in range(START))
    assert len(learner.visual_adapter) == 13  # slots 0..12
    biases = [p for name, p in learner.named_parameters() if name.endswith("bias")]
    assert biases and not any(b.any() for b in biases)  # kaiming-normal weights, zero biases
    weight = learner.text_adapter[5].up.weight  # [D, dim]: fan_out D
    assert 0.5 < weight.std().item() / (2 / WIDTH) ** 0.5 < 1.5


@pytest.mark.parametrize("straightforward", [False, True])
@pytest.mark.parametrize("scale", [0.001, 0.5])
def test_released_weights_give_the_released_logits(tiny, straightforward, scale):
    state = released_tensors(torch.Generator().manual_seed(1))
    model = PromptedCLIP(tiny, learner_from_release(tiny, state, scale), straightforward).eval()
    image = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, expected = model(image), released_logits(tiny.model, state, image, scale)
        without = released_logits(tiny.model, state, image, 1e-12)  # the adapters' contribution vanishes
    assert ours.shape == (3, len(CLASSNAMES))
    assert (ours - expected).abs().max() <= TOL
    if scale == 0.5:  # the adapter path is visible in the logits
        assert (expected - without).abs().max() > 1e-2



@pytest.mark.parametrize("release_gradient_scale", [True, False])
@pytest.mark.parametrize("scale", [0.001, 0.5])
def test_one_training_steps_loss_and_gradients_match_the_release(tiny, release_gradient_scale, scale):
    """As released, every adapter gradient is 1/ADAPTER_SCALE times the true one; corrected, it is the true one."""
    state = released_tensors(torch.Generator().manual_seed(3))
    learner = learner_from_release(tiny, state, scale, release_gradient_scale)
    model = PromptedCLIP(tiny, learner).train()
    image = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    label = torch.tensor([0, 3, 1, 1])
    loss = F.cross_entropy(model(image), label)
    loss.backward()
    released = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    expected = F.cross_entropy(released_logits(tiny.model, released, image, scale), label)
    expected.backward()
    assert abs(loss.item() - expected.item()) <= 1e-3 * abs(expected.item())
    factor = 1.0 if release_gradient_scale else scale
    grads = {k: p.grad for k, p in learner.named_parameters()}
    assert len(grads) == 80
    for key, grad in grads.items():
        reference = released[key].grad * factor
        assert reference.norm() > 0, key
        assert relative_error(grad, reference) <= 1e-3, key


# -- through train.py ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root))
    return root


def toy_trainer(root, *opts):
    argv = ["--root", str(root), "--trainer", "MultiModalAdapter", "--output-dir", str(root / "out"),
            "--config-file", "configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml"]
    argv += toy_opts(str(root)) + ["TRAINER.MMADAPTER.PREC", "fp32", "MODEL.INIT_SEED", "0", *opts]
    trainer = build_trainer(setup_cfg(build_parser().parse_args(argv)))
    trainer.batch_idx, trainer.num_batches = 0, 10 ** 6  # forward_backward outside an epoch: no LR step
    return trainer


def eval_logits(trainer, images):
    trainer.set_model_mode("eval")
    with torch.no_grad(), trainer.evaluation_scope():
        return trainer.model_inference(images)


def test_released_checkpoint_evaluates_as_the_release_and_ours_is_already_its_format(tiny, data_root, tmp_path):
    trainer = toy_trainer(data_root)
    state = released_tensors(torch.Generator().manual_seed(8))
    classes = trainer.dm.dataset.classnames
    # the release saves its AdapterLearner with the class texts' buffers, which it drops on load
    released = {**state, "token_embedding": torch.zeros(len(classes), 77, WIDTH),
                "tokenized_prompts": torch.zeros(len(classes), 77, dtype=torch.long)}
    write_release_checkpoint(tmp_path / "release", "adapter_learner", released, 5)
    trainer.load_model(str(tmp_path / "release"), epoch=5)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = released_logits(tiny.model, state, images, 0.001, classnames=classes)
    assert (eval_logits(trainer, images) - expected).abs().max() <= TOL

    trainer.save_model(4, str(tmp_path / "run"))
    saved = torch.load(tmp_path / "run" / "adapter_learner" / "model.pth.tar-5", map_location="cpu",
                       weights_only=True)["state_dict"]
    assert set(saved) == set(state) and all(torch.equal(saved[k], v) for k, v in state.items())
    write_result(str(tmp_path / "run"), {"mode": "train", "metrics": {}, "deployed": "last_step"})
    with pytest.raises(SystemExit, match="MultiModalAdapter checkpoints are already in the released format"):
        export_checkpoint.main(["--trainer", "MultiModalAdapter", "--model-dir", str(tmp_path / "run"),
                                "--out-dir", str(tmp_path / "again")])


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_training_steps_reduce_the_loss_and_evaluation_sees_the_new_adapters(data_root, prec):
    """Unlike the release, whose text features computed at the first evaluation are kept for every later one."""
    trainer = toy_trainer(data_root, "TRAINER.MMADAPTER.ADAPTER_SCALE", "0.1", "TRAINER.MMADAPTER.PREC", prec)
    batch = next(iter(trainer.train_loader_x))
    model = trainer.model
    eval_logits(trainer, batch["img"])
    with torch.no_grad():
        first_text = model.text_features()  # [n_cls, E]
    trainer.set_model_mode("train")
    losses = [trainer.forward_backward(batch)["loss"] for _ in range(5)]
    assert losses[-1] < losses[0] - 0.01, losses
    after = eval_logits(trainer, batch["img"])
    with torch.no_grad():
        fresh = model.logit_scale.exp() * model.image_features(batch["img"]) @ model.text_features().t()
        stale = model.logit_scale.exp() * model.image_features(batch["img"]) @ first_text.t()
    learner = trainer._models["adapter_learner"]
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in learner.parameters())
    if prec == "fp32":  # (bf16 evaluates under autocast: rounding of order 1e-2 in the logits)
        assert (after - fresh).abs().max() <= 1e-5
        assert (after - stale).abs().max() > 1e-3


@pytest.mark.parametrize("opts, message", [
    (["TRAINER.MMADAPTER.ADAPTER_START", "0"], "TRAINER.MMADAPTER.ADAPTER_START = 0 is out of range: use an integer "
                                               ">= 1 (first adapted block, 1-based; adapters on the embeddings"),
    (["TRAINER.MMADAPTER.ADAPTER_END", "4"], "TRAINER.MMADAPTER.ADAPTER_END = 4 is out of range: use an integer >= 5"),
    (["TRAINER.MMADAPTER.ADAPTER_SCALE", "0.0"], "TRAINER.MMADAPTER.ADAPTER_SCALE = 0.0 is out of range"),
    (["TRAINER.MMADAPTER.ADAPTER_END", "13"], "TRAINER.MMADAPTER.ADAPTER_END is 13, but this backbone's encoders "
                                              "have 12 blocks: set ADAPTER_END to at most 12."),
    (["TRAINER.MMADAPTER.ADAPTER_DIM", "64"], "TRAINER.MMADAPTER.ADAPTER_DIM 64 equals an encoder width"),
])
def test_bad_settings_are_refused_in_one_line(data_root, opts, message):
    with pytest.raises(ValueError) as error:
        toy_trainer(data_root, *opts)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
