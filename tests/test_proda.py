"""ProDA against an independent re-computation of the released algorithm (LAMDASZ-ML/BMIP trainers/proda.py).

The re-computation below follows the release step by step on the plain CLIP modules: the three prompt arrangements
built class by class in the release's order (END, MIDDLE, FRONT), CLIP's own text transformer, the mean of the
normalised per-prompt features, and the Gaussian term through the release's [E, n_cls, n_cls] covariance. The
project computes the same with gathers, per-prompt encoder calls and a direct form of that term.
"""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clip_patch import load_backbone
from clip_patch.openai_clip import openai_clip
from dassl.engine import build_trainer
from runs.config import build_parser, setup_cfg
from runs.run import cli
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.proda import (END, FRONT, MIDDLE, ProDA, ProDACLIP, ProDAPromptLearner, prompt_positions,
                            sampled_prompts)

CLASSNAMES = ["cat", "sea_lion", "red panda"]  # "sea_lion": the release prompts the raw name
N_CTX, N_PROMPT = 4, 8  # positions: 2 FRONT, 2 MIDDLE, 4 END


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


def build(backbone, classnames=CLASSNAMES, clean=False, seed=0):
    torch.manual_seed(seed)
    return ProDACLIP(backbone, ProDAPromptLearner(backbone, classnames, N_CTX, N_PROMPT, clean))


# -- the released computation, re-written ----------------------------------------------------------------------------
def name_length(name):
    return int(openai_clip().tokenize([name]).argmax(dim=-1)) - 1  # tokens between SOS and EOT


def released_prompts(clip_model, ctx, pos, classnames):
    """The release's PromptLearner.forward: [n_cls * P, L, D] in its order (END, MIDDLE, FRONT per class)."""
    prefix = " ".join(["X"] * ctx.shape[1])
    tokens = openai_clip().tokenize([f"{prefix} {name}." for name in classnames])
    with torch.no_grad():
        embedding = clip_model.token_embedding(tokens)
    token_prefix, token_suffix = embedding[:, :1], embedding[:, 1 + ctx.shape[1]:]
    half = ctx.shape[1] // 2
    groups = []
    for where in (END, MIDDLE, FRONT):
        c = ctx[pos == where]
        rows = []
        for i, name in enumerate(classnames):
            k = name_length(name)
            for j in range(c.shape[0]):
                name_i, rest_i = token_suffix[i, :k], token_suffix[i, k:]
                if where == END:
                    parts = [token_prefix[i], c[j], token_suffix[i]]
                elif where == MIDDLE:
                    parts = [token_prefix[i], c[j, :half], name_i, c[j, half:], rest_i]
                else:
                    parts = [token_prefix[i], name_i, c[j], rest_i]
                rows.append(torch.cat(parts, dim=0))
        if rows:
            groups.append(torch.stack(rows).view(len(classnames), c.shape[0], *rows[0].shape))
    prompts = torch.cat(groups, dim=1)  # [n_cls, P, L, D]
    return prompts.flatten(0, 1), tokens.repeat_interleave(ctx.shape[0], dim=0)


def released_text_encoder(clip_model, x, tokens):
    x = x + clip_model.positional_embedding
    x = clip_model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = clip_model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip_model.text_projection


def released_class_features(clip_model, ctx, pos, classnames):
    """Normalised features [n_cls, P, E] of the prompts ``ctx`` [P, b, D] with positions ``pos`` [P]."""
    prompts, tokens = released_prompts(clip_model, ctx, pos, classnames)
    f = released_text_encoder(clip_model, prompts, tokens)
    f = f / f.norm(dim=-1, keepdim=True)
    return f.view(len(classnames), ctx.shape[0], -1)


def released_image_features(clip_model, image):
    with torch.no_grad():
        f = clip_model.visual(image)
    return f / f.norm(dim=-1, keepdim=True)


def released_eval_logits(clip_model, ctx, classnames, image):
    """CustomCLIP.forward(training=False) after set_classifier(): the mean over all prompts, not renormalised."""
    text = released_class_features(clip_model, ctx, prompt_positions(ctx.shape[0]), classnames).mean(dim=1)
    return clip_model.logit_scale.exp() * released_image_features(clip_model, image) @ text.t()


def released_training_logits(clip_model, ctx, batch_idx, classnames, image, labels, multilabel=False):
    """CustomCLIP.forward(training=True) on the prompts ``batch_idx`` (release L264-287)."""
    pos = prompt_positions(ctx.shape[0])[batch_idx]
    features = released_class_features(clip_model, ctx[batch_idx], pos, classnames)  # [C, P, E]
    n_class, n_prompt = features.shape[:2]
    image_features = released_image_features(clip_model, image)
    text_mean = features.mean(dim=1)
    s = clip_model.logit_scale.exp()
    logits = s * image_features @ text_mean.t()
    if multilabel:
        return logits
    centred = features - text_mean.unsqueeze(1)
    cov = centred.permute(2, 0, 1) @ centred.permute(2, 1, 0)  # [E, C, C]
    cov = cov / (n_prompt + 1)
    refined = torch.einsum("bd,dik->bik", image_features ** 2, cov)
    b = torch.arange(labels.shape[0])
    c = torch.arange(n_class)
    sigma = refined[b, labels, labels].unsqueeze(-1) + refined[:, c, c] - 2 * refined[b, labels, :]
    return logits + 0.5 * s ** 2 * sigma


def released_loss_m(clip_model, ctx):
    prefix = " ".join(["X"] * ctx.shape[1])
    tokens = openai_clip().tokenize([f"{prefix}."]).repeat(ctx.shape[0], 1)
    with torch.no_grad():
        embedding = clip_model.token_embedding(tokens)
    prompts = torch.cat([embedding[:, :1], ctx, embedding[:, 1 + ctx.shape[1]:]], dim=1)
    f = released_text_encoder(clip_model, prompts, tokens)
    f = f / f.norm(dim=-1, keepdim=True)
    dis = f @ f.t()
    return dis[~torch.eye(ctx.shape[0], dtype=torch.bool)].abs().mean()


# -- the learner and the model ---------------------------------------------------------------------------------------
def test_positions_and_the_only_trainable_tensor(tiny):
    assert prompt_positions(32).tolist() == [FRONT] * 8 + [MIDDLE] * 8 + [END] * 16
    assert prompt_positions(1).tolist() == [END]
    model = build(tiny)
    assert {k: tuple(v.shape) for k, v in model.prompt_learner.state_dict().items()} == {"ctx": (N_PROMPT, N_CTX, 64)}


@pytest.mark.parametrize("straightforward", [False, True])
def test_evaluation_logits_equal_the_released_set_classifier(tiny, straightforward):
    model = build(tiny)
    model.straightforward = straightforward
    image = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(image)
        released = released_eval_logits(tiny.model, model.prompt_learner.ctx, CLASSNAMES, image)
    assert ours.shape == (3, 3)
    assert (ours - released).abs().max() <= 1e-4
    # the raw name differs from the cleaned one, so the switch matters and is honoured
    clean = build(tiny, clean=True)
    with torch.no_grad():
        cleaned = released_eval_logits(tiny.model, clean.prompt_learner.ctx, [n.replace("_", " ") for n in CLASSNAMES],
                                       image)
        assert (clean(image) - cleaned).abs().max() <= 1e-4
        assert (clean(image)[:, 1] - ours[:, 1]).abs().max() > 1e-3


@pytest.mark.parametrize("multilabel", [False, True])
def test_one_training_step_loss_and_gradients_equal_the_release(tiny, multilabel):
    model = build(tiny)
    ctx = model.prompt_learner.ctx
    g = torch.Generator().manual_seed(2)
    image, labels = torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 2, 1, 2])
    indices = [5, 0, 7, 3]  # END, FRONT, END, MIDDLE
    logits = model.training_logits(image, labels, indices, multilabel)
    loss = F.cross_entropy(logits, labels)
    (grad,) = torch.autograd.grad(loss, ctx)

    released_ctx = ctx.detach().clone().requires_grad_(True)
    batch_idx = torch.tensor(indices)
    expected_logits = released_training_logits(tiny.model, released_ctx, batch_idx, CLASSNAMES, image, labels,
                                               multilabel)
    expected_loss = F.cross_entropy(expected_logits, labels)
    expected_loss.backward()
    expected = released_ctx.grad

    assert (logits - expected_logits).abs().max() <= 1e-4
    assert abs(loss.item() - expected_loss.item()) <= 1e-5 * abs(expected_loss.item())
    assert (grad - expected).norm() <= 1e-4 * expected.norm()
    unused = torch.ones(N_PROMPT, dtype=torch.bool)
    unused[batch_idx] = False
    assert grad[batch_idx].abs().amax(dim=(1, 2)).min() > 0 and not grad[unused].any()
    if not multilabel:  # the Gaussian term is there: the plain mean logits differ
        plain = released_training_logits(tiny.model, ctx.detach(), batch_idx, CLASSNAMES, image, labels, True)
        assert (expected_logits - plain).abs().max() > 1e-3


def test_diversity_term_equals_the_released_loss_m(tiny):
    model = build(tiny)
    ctx = model.prompt_learner.ctx
    ours = model.diversity_loss()
    (grad,) = torch.autograd.grad(ours, ctx)
    released_ctx = ctx.detach().clone().requires_grad_(True)
    expected = released_loss_m(tiny.model, released_ctx)
    expected.backward()
    assert abs(ours.item() - expected.item()) <= 1e-5 * expected.item()
    assert (grad - released_ctx.grad).norm() <= 1e-4 * released_ctx.grad.norm()


def test_prompt_sampling_cycles_through_every_prompt_and_depends_on_seed_and_step_only():
    cycle = [k for s in range(8) for k in sampled_prompts(32, 4, seed=1, step=s)]
    assert sorted(cycle) == list(range(32))  # each prompt once per 8 steps, 4 at a time
    assert all(len(sampled_prompts(32, 4, seed=1, step=s)) == 4 for s in range(8))
    assert cycle == [k for s in range(8) for k in sampled_prompts(32, 4, seed=1, step=s)]  # recomputed: the same
    following = [k for s in range(8, 16) for k in sampled_prompts(32, 4, seed=1, step=s)]
    assert sorted(following) == list(range(32)) and following != cycle
    assert cycle != [k for s in range(8) for k in sampled_prompts(32, 4, seed=2, step=s)]
    assert sorted(sampled_prompts(4, 4, seed=1, step=3)) == [0, 1, 2, 3]


# -- the trainer -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root))
    return root


def proda_argv(root, out, extra=()):
    return ["--root", str(root), "--trainer", "ProDA", "--output-dir", str(out),
            *toy_opts(str(root), epochs=1, batch=4, optim="sgd", lr=0.05),
            "TRAINER.ProDA.N_CTX", str(N_CTX), "TRAINER.ProDA.N_PROMPT", str(N_PROMPT), "TRAINER.ProDA.PREC", "fp32",
            "MODEL.INIT_SEED", "0", *extra]


def build_proda(root, out, extra=()):
    trainer = build_trainer(setup_cfg(build_parser().parse_args(proda_argv(root, out, extra))))
    trainer.batch_idx, trainer.num_batches = 0, 10 ** 6  # forward_backward outside an epoch: no LR step
    return trainer


def test_training_steps_use_the_sampled_prompts_and_reduce_the_loss(data_root, tmp_path):
    trainer = build_proda(data_root, tmp_path / "run")
    torch.manual_seed(0)
    batch = next(iter(trainer.train_loader_x))
    learner = trainer._models["prompt_learner"]
    losses = []
    for step in range(4):
        trainer.batch_idx = step
        losses.append(trainer.forward_backward(batch)["loss"])
        reached = learner.ctx.grad.abs().amax(dim=(1, 2)) > 0  # the gradient of this step's loss
        assert reached.nonzero().flatten().tolist() == sorted(sampled_prompts(N_PROMPT, 4, max(trainer.cfg.SEED, 0), step))
    assert losses[-1] < losses[0], losses


def test_diversity_weight_adds_the_term(data_root, tmp_path):
    plain = build_proda(data_root, tmp_path / "plain")
    weighted = build_proda(data_root, tmp_path / "weighted", ["TRAINER.ProDA.LOSS_M_WEIGHT", "0.5"])
    torch.manual_seed(0)
    batch = next(iter(plain.train_loader_x))
    image, label = plain.parse_batch_train(batch)
    loss_plain, _ = plain.compute_loss(image, label)
    loss_weighted, _ = weighted.compute_loss(image, label)
    term = weighted.model.diversity_loss()
    assert abs(loss_weighted.item() - (loss_plain.item() + 0.5 * term.item())) <= 1e-5


def released_checkpoint(trainer, ctx, n_classes_released=10):
    """A whole-model state dict as the release saves it: CustomCLIP with the frozen CLIP and the prompt buffers."""
    clip_model = trainer.backbone.model
    state = {f"image_encoder.{k}": v for k, v in clip_model.visual.state_dict().items()}
    state.update({f"text_encoder.transformer.{k}": v for k, v in clip_model.transformer.state_dict().items()})
    state["text_encoder.positional_embedding"] = clip_model.positional_embedding
    state["logit_scale"] = clip_model.logit_scale
    width = ctx.shape[-1]
    state.update({"prompt_learner.ctx": ctx,  # and the buffers of another class set
                  "prompt_learner.token_prefix": torch.zeros(n_classes_released, 1, width),
                  "prompt_learner.token_suffix": torch.zeros(n_classes_released, 77 - 1 - N_CTX, width),
                  "prompt_learner.nc_token_prefix": torch.zeros(1, 1, width),
                  "prompt_learner.nc_token_suffix": torch.zeros(1, 77 - 1 - N_CTX, width)})
    return {k: v.detach().clone() for k, v in state.items()}


def test_released_checkpoint_gives_the_released_logits_and_exports_back(data_root, tmp_path, tiny):
    trainer = build_proda(data_root, tmp_path / "run")
    ctx = torch.randn(N_PROMPT, N_CTX, 64, generator=torch.Generator().manual_seed(3)) * 0.1
    path = tmp_path / "released" / "prompt_learner" / "model.pth.tar-100"
    os.makedirs(path.parent)
    torch.save({"state_dict": released_checkpoint(trainer, ctx), "epoch": 100}, path)
    trainer.load_model(str(tmp_path / "released"), epoch=100)
    learner = trainer._models["prompt_learner"]
    assert torch.equal(learner.ctx.detach(), ctx)

    torch.manual_seed(0)
    images = next(iter(trainer.test_loader))["img"]
    classnames = trainer.dm.dataset.classnames
    trainer.set_model_mode("eval")
    with torch.no_grad(), trainer.evaluation_scope():
        ours = trainer.model_inference(images)
    # the fixture's backbone has the trainer's frozen weights (random-weight backbones are seeded)
    assert torch.equal(tiny.model.visual.proj, trainer.backbone.model.visual.proj)
    with torch.no_grad():
        released = released_eval_logits(tiny.model, ctx, classnames, images)
    assert (ours - released).abs().max() <= 1e-4

    exported = ProDA.RELEASE_LAYOUT.to_release(learner.state_dict())
    assert list(exported) == ["prompt_learner.ctx"]
    released_model = nn.Module()  # the release's strict=False load: every trainable key arrives
    released_model.prompt_learner = nn.Module()
    released_model.prompt_learner.ctx = nn.Parameter(torch.zeros(N_PROMPT, N_CTX, 64))
    result = released_model.load_state_dict(exported, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(released_model.prompt_learner.ctx.detach(), ctx)


def test_prompt_count_that_the_prompt_batch_does_not_divide_is_refused(data_root, tmp_path, capsys):
    out = tmp_path / "refused"
    assert cli(proda_argv(data_root, out, ["DATALOADER.TRAIN_X.BATCH_SIZE", "3"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "N_PROMPT = 8 is not a multiple of the prompt batch 3" in err[0]
    assert "PROMPT_BATCH" in err[0] and not out.exists()
