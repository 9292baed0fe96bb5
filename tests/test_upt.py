"""UPT against an independent re-computation of the released code's forward pass (LAMDASZ-ML/BMIP
``trainers/upt.py`` with ``clip/model.py``'s ResidualAttentionBlock_BITP / VisionTransformer_BITP), written here on
the OpenAI CLIP modules themselves: released-format checkpoint -> our trainer -> the released logits, one training
step's loss and gradients (dropout included, from the same RNG state), checkpoints both ways, the settings node and
its release switch, and seeded dropout."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from clip_patch import load_backbone
from clip_patch.openai_clip import openai_clip
from dassl.config import extend_cfg, get_cfg_default
from dassl.engine import build_trainer
from dassl.engine.run_dir import write_result
from dassl.utils import CheckpointError
from runs.config import build_parser, setup_cfg
from scripts import export_checkpoint
from tests.numerics import relative_error
from tests.release_files import write_release_checkpoint
from tests.toy_data import make_toy_dataset, toy_opts
from trainers import upt as upt_module
from trainers.upt import UPT, UnifiedPromptCLIP, UPTPromptLearner, settings_node

CLASSNAMES = ["cat", "dog", "sea_lion", "red panda"]
B, DEPTH, D_T, D_V = 2, 9, 64, 64  # tiny-ViT: width 64 on both sides, 12 blocks each
TOL = 1e-4
with torch.random.fork_rng(devices=[]):  # (leaves the global RNG as it was)
    PROMPT_LAYER = nn.TransformerEncoderLayer(D_T + D_V, 8)  # the release's layer type; weights come from the state


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


# -- the released computation, re-written from the release -----------------------------------------------------
def released_tensors(generator, depth=DEPTH):
    """Random values for every trainable tensor of the released UPT, under its whole-model names and shapes."""
    def draw(*shape):
        return torch.randn(*shape, generator=generator) * 0.1
    state = {"prompt_learner.ctx_t": draw(B, D_T), "prompt_learner.ctx_v": draw(77, D_V)}
    for k in range(depth - 1):
        state[f"prompt_learner.compound_prompts.{k}"] = draw(B, D_T + D_V)
        for name, value in PROMPT_LAYER.state_dict().items():
            state[f"prompt_learner.compound_prompt_projections.{k}.{name}"] = draw(*value.shape)
    return state


def released_logits(clip_model, state, image, classnames=CLASSNAMES, training=False):
    """The released CustomCLIP.forward in fp32 (its fp16 casts left out), with dropout when ``training``:
    ``compound_prompt_projections[k](compound_prompts[k])`` split at 512 (here D_T) into the text and vision prompts
    of block k+1; text inserts them while ``counter <= len - 2``, vision while ``counter <= len - 1``;
    the shallow vision prompt is ``ctx_v[:n_ctx]`` after the patches."""
    n_deep = len([k for k in state if k.startswith("prompt_learner.compound_prompts.")])
    deep = []
    for k in range(n_deep):  # prompt_learner.forward(): every layer once, in order, before either encoder runs
        layer = PROMPT_LAYER.train(training)
        prefix = f"prompt_learner.compound_prompt_projections.{k}."
        weights = {n[len(prefix):]: v for n, v in state.items() if n.startswith(prefix)}
        deep.append(functional_call(layer, weights, (state[f"prompt_learner.compound_prompts.{k}"],)))  # [b, D_t+D_v]

    tokens = openai_clip().tokenize([f"a photo of a {name.replace('_', ' ')}." for name in classnames])  # [n, 77]
    emb = clip_model.token_embedding(tokens)  # [n, 77, D_t]
    ctx_t = state["prompt_learner.ctx_t"].expand(len(classnames), -1, -1)
    x = torch.cat([emb[:, :1], ctx_t, emb[:, 1 + B:]], dim=1) + clip_model.positional_embedding
    x = x.permute(1, 0, 2)  # [77, n, D_t]
    counter = 0
    for i, block in enumerate(clip_model.transformer.resblocks):
        if i > 0 and counter <= n_deep - 2:
            x = torch.cat([x[:1], deep[counter][:, :D_T].unsqueeze(1).expand(-1, x.shape[1], -1), x[1 + B:]])
            counter += 1
        x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2))
    text = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip_model.text_projection  # [n, E]

    v = clip_model.visual
    y = v.conv1(image).flatten(2).transpose(1, 2)
    y = torch.cat([v.class_embedding + torch.zeros(y.shape[0], 1, y.shape[-1]), y], dim=1) + v.positional_embedding
    y = torch.cat([y, state["prompt_learner.ctx_v"][:B].expand(y.shape[0], -1, -1)], dim=1)
    y = v.ln_pre(y).permute(1, 0, 2)  # [N, B, D_v]
    counter = 0
    for i, block in enumerate(v.transformer.resblocks):
        if i > 0 and counter <= n_deep - 1:
            y = torch.cat([y[:-B], deep[counter][:, D_T:].unsqueeze(1).expand(-1, y.shape[1], -1)])
            counter += 1
        y = block(y)
    image_features = v.ln_post(y[0]) @ v.proj  # [B, E]

    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return clip_model.logit_scale.exp() * image_features @ text.t()


def learner_from_release(backbone, state, depth=DEPTH):
    torch.manual_seed(0)
    learner = UPTPromptLearner(backbone, CLASSNAMES, B, "a photo of a", depth)
    converted = UPT.RELEASE_LAYOUT.to_learner(state, learner.state_dict())
    learner.load_state_dict(converted)
    return learner


def test_learner_holds_the_released_tensors_except_ctx_vs_unread_rows(tiny):
    torch.manual_seed(0)
    learner = UPTPromptLearner(tiny, CLASSNAMES, B, "a photo of a", DEPTH)
    state = released_tensors(torch.Generator().manual_seed(0))
    assert len(state) == 106  # the release's count: ctx_t, ctx_v, 8 prompt sets, 8 layers x 12 tensors
    assert {f"prompt_learner.{k}" for k in learner.state_dict()} == set(state)
    assert {k: v.shape for k, v in learner.state_dict().items() if k != "ctx_v"} == {
        k[len("prompt_learner."):]: v.shape for k, v in state.items() if k != "prompt_learner.ctx_v"}
    assert learner.ctx_v.shape == (B, D_V)
    first = dict(learner.compound_prompt_projections[0].named_parameters())  # deep copies of one layer
    for layer in learner.compound_prompt_projections[1:]:
        assert all(torch.equal(p, first[n]) for n, p in layer.named_parameters())


@pytest.mark.parametrize("straightforward", [False, True])
def test_released_weights_give_the_released_logits(tiny, straightforward):
    state = released_tensors(torch.Generator().manual_seed(1))
    model = UnifiedPromptCLIP(tiny, learner_from_release(tiny, state), straightforward).eval()
    image = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, expected = model(image), released_logits(tiny.model, state, image)
    assert ours.shape == (3, len(CLASSNAMES))
    assert (ours - expected).abs().max() <= TOL
    rows_read, rows_unread = dict(state), dict(state)  # the release reads only ctx_v's first b rows
    rows_read["prompt_learner.ctx_v"] = torch.cat([torch.randn(B, D_V), state["prompt_learner.ctx_v"][B:]])
    rows_unread["prompt_learner.ctx_v"] = torch.cat([state["prompt_learner.ctx_v"][:B], torch.randn(77 - B, D_V)])
    with torch.no_grad():
        assert (released_logits(tiny.model, rows_read, image) - expected).abs().max() > 1e-3
        assert torch.equal(released_logits(tiny.model, rows_unread, image), expected)



@pytest.mark.parametrize("training", [False, True])
def test_one_training_steps_loss_and_gradients_match_the_release(tiny, training):
    """Train mode draws dropout: both sides start from the same RNG state and draw in the release's order (the J-1
    prompt layers first, once for both encoders)."""
    state = released_tensors(torch.Generator().manual_seed(3))
    learner = learner_from_release(tiny, state)
    model = UnifiedPromptCLIP(tiny, learner).train(training)
    image = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    label = torch.tensor([0, 3, 1, 1])
    released = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    torch.manual_seed(7)
    loss = F.cross_entropy(model(image), label)
    loss.backward()
    torch.manual_seed(7)
    expected = F.cross_entropy(released_logits(tiny.model, released, image, training=training), label)
    expected.backward()
    assert abs(loss.item() - expected.item()) <= 1e-3 * abs(expected.item())
    grads = {k: p.grad for k, p in learner.named_parameters()}
    assert len(grads) == 106
    for key, grad in grads.items():
        reference = released[f"prompt_learner.{key}"].grad
        if key == "ctx_v":
            assert not reference[B:].any()  # the release's unread rows get no gradient
            reference = reference[:B]
        assert reference.norm() > 0, key
        assert relative_error(grad, reference) <= 1e-3, key


def test_dropout_follows_the_rng_and_one_draw_serves_both_encoders(tiny, monkeypatch):
    torch.manual_seed(0)
    learner = UPTPromptLearner(tiny, CLASSNAMES, B, "a photo of a", DEPTH)
    model = UnifiedPromptCLIP(tiny, learner)
    calls = []
    original = learner.unified_prompts
    monkeypatch.setattr(learner, "unified_prompts", lambda: calls.append(1) or original())
    image = torch.randn(2, 3, 32, 32)

    def logits(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return model(image)
    assert torch.equal(logits(5), logits(5))
    assert (logits(5) - logits(6)).abs().max() > 1e-3  # dropout is active in training
    assert len(calls) == 4  # one computation of the deep prompts per forward pass
    model.eval()
    assert torch.equal(logits(5), logits(6))


def test_an_images_logits_do_not_depend_on_its_batch_mates(tiny):
    torch.manual_seed(0)
    model = UnifiedPromptCLIP(tiny, UPTPromptLearner(tiny, CLASSNAMES, B, "a photo of a", DEPTH)).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        together, alone = model(images), model(images[2:3])
    assert (together[2:3] - alone).abs().max() <= 1e-5


def test_export_pads_ctx_v_and_import_restores_the_learner(tiny):
    torch.manual_seed(0)
    learner = UPTPromptLearner(tiny, CLASSNAMES, B, "a photo of a", 3)
    exported = UPT.RELEASE_LAYOUT.to_release(learner.state_dict())
    assert set(exported) == {f"prompt_learner.{k}" for k in learner.state_dict()}
    assert exported["prompt_learner.ctx_v"].shape == (77, D_V)
    assert torch.equal(exported["prompt_learner.ctx_v"][:B], learner.ctx_v)
    assert not exported["prompt_learner.ctx_v"][B:].any()
    back = learner_from_release(tiny, exported, depth=3)
    for (name, p), q in zip(learner.state_dict().items(), back.state_dict().values()):
        assert torch.equal(p, q), name


def test_widths_the_prompt_transformers_heads_do_not_divide_are_refused(tiny, monkeypatch):
    monkeypatch.setattr(upt_module, "HEADS", 3)
    with pytest.raises(ValueError, match=r"3 heads, which must divide the text \+ vision width 64 \+ 64 = 128"):
        UPTPromptLearner(tiny, CLASSNAMES, B, "a photo of a", DEPTH)


# -- through train.py ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root))
    return root


def toy_trainer(root, *opts, config=None):
    argv = ["--root", str(root), "--trainer", "UPT", "--output-dir", str(root / "out")]
    if config:
        argv += ["--config-file", config]
    argv += toy_opts(str(root)) + ["TRAINER.UPT.PREC", "fp32", "MODEL.INIT_SEED", "0", *opts]
    trainer = build_trainer(setup_cfg(build_parser().parse_args(argv)))
    trainer.batch_idx, trainer.num_batches = 0, 10 ** 6  # forward_backward outside an epoch: no LR step
    return trainer


def learner_of(trainer):
    return trainer._models["MultiModalPromptLearner"]


def eval_logits(trainer, images):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model_inference(images)


def test_released_checkpoint_evaluates_as_the_release_and_exports_back(tiny, data_root, tmp_path):
    trainer = toy_trainer(data_root)
    state = released_tensors(torch.Generator().manual_seed(8))
    frozen = {f"image_encoder.{k}": v for k, v in trainer.backbone.model.visual.state_dict().items()}
    released = {**state, **frozen, "prompt_learner.token_prefix": torch.zeros(10, 1, D_T)}
    write_release_checkpoint(tmp_path / "release", "MultiModalPromptLearner", released, 5)
    trainer.load_model(str(tmp_path / "release"), epoch=5)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = released_logits(tiny.model, state, images, classnames=trainer.dm.dataset.classnames)
    assert (eval_logits(trainer, images) - expected).abs().max() <= TOL

    trainer.save_model(4, str(tmp_path / "run"))
    write_result(str(tmp_path / "run"), {"mode": "train", "metrics": {}, "deployed": "last_step"})
    out = export_checkpoint.main(["--trainer", "UPT", "--model-dir", str(tmp_path / "run"),
                                  "--out-dir", str(tmp_path / "again")])
    written = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    assert set(written) == set(state)
    for key, value in state.items():
        if key == "prompt_learner.ctx_v":
            assert torch.equal(written[key][:B], value[:B]) and not written[key][B:].any()
        else:
            assert torch.equal(written[key], value), key


def test_released_checkpoint_of_another_depth_is_rejected(data_root, tmp_path):
    trainer = toy_trainer(data_root)  # depth 9
    path = tmp_path / "MultiModalPromptLearner" / "model.pth.tar-1"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": released_tensors(torch.Generator().manual_seed(0), depth=3), "epoch": 1}, path)
    with pytest.raises(CheckpointError, match=r"missing.*compound_prompts\.2"):
        trainer.load_model(str(tmp_path), epoch=1)


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_training_steps_reduce_the_loss(data_root, prec):
    trainer = toy_trainer(data_root, "OPTIM.NAME", "adam", "OPTIM.LR", "0.01", "TRAINER.UPT.PREC", prec)
    batch = next(iter(trainer.train_loader_x))
    trainer.set_model_mode("train")
    torch.manual_seed(0)
    losses = [trainer.forward_backward(batch)["loss"] for _ in range(5)]
    assert losses[-1] < losses[0] - 0.01, losses
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in learner_of(trainer).parameters())


def test_settings_come_from_trainer_upt_or_as_released_from_trainer_bitp(data_root):
    ours = toy_trainer(data_root, "TRAINER.UPT.PROMPT_DEPTH", "3", "TRAINER.BITP.PROMPT_DEPTH", "5")
    assert len(learner_of(ours).compound_prompts) == 2
    as_released = toy_trainer(data_root, "TRAINER.UPT.PROMPT_DEPTH", "3", "TRAINER.BITP.PROMPT_DEPTH", "5",
                              "TRAINER.BITP.PREC", "fp32", "TRAINER.UPT.SETTINGS_FROM_BITP", "True")
    assert len(learner_of(as_released).compound_prompts) == 4
    with pytest.raises(ValueError, match=r"TRAINER.BITP.PREC must be one of .*got 'fp8'"):
        toy_trainer(data_root, "TRAINER.BITP.PREC", "fp8", "TRAINER.UPT.SETTINGS_FROM_BITP", "True")
    with pytest.raises(ValueError, match="TRAINER.UPT.PROMPT_DEPTH = 13; use 1..12"):
        toy_trainer(data_root, "TRAINER.UPT.PROMPT_DEPTH", "13")
    with pytest.raises(ValueError, match="TRAINER.BITP.PROMPT_DEPTH = 13; use 1..12"):
        toy_trainer(data_root, "TRAINER.BITP.PROMPT_DEPTH", "13", "TRAINER.BITP.PREC", "fp32",
                    "TRAINER.UPT.SETTINGS_FROM_BITP", "True")


RELEASED_CONFIGS = {"vit_b16_c2_ep5_batch4_1ctxUPT.yaml": set(), "vit_b16_c2_ep5_batch4_2ctxUPT.yaml": set(),
                    "vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml": {"PROMPT_DEPTH"}}


@pytest.mark.parametrize("name", sorted(RELEASED_CONFIGS))
def test_released_configs_under_the_releases_reading(name):
    """The release reads TRAINER.BITP (its defaults: N_CTX 2, "a photo of a", fp16, depth 9), so its YAML's UPT section
    is inert: the base-to-novel configs give the same settings either way, the cross-dataset one depth 9, not 3."""
    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_file(f"configs/trainers/UPT/{name}")
    ours, _ = settings_node(cfg)
    cfg.TRAINER.UPT.SETTINGS_FROM_BITP = True
    released, node = settings_node(cfg)
    assert node == "BITP" and released.PROMPT_DEPTH == 9
    differing = {k for k in ("N_CTX", "CTX_INIT", "PREC", "PROMPT_DEPTH") if ours[k] != released[k]}
    assert differing == RELEASED_CONFIGS[name]
