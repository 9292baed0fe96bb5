"""KgCoOp and TCP against an independent re-computation of their released algorithms with OpenAI's own CLIP modules
(tiny random model): logits, each loss term and the gradients of one training step; the hand-crafted knowledge
target (fp32 and the release's fp16); released checkpoints in and out; bad settings refused."""
import copy

import pytest
import torch
import torch.nn.functional as F

import clip as openai_clip
from clip_patch import load_backbone
from dassl.engine import build_trainer
from runs.config import build_parser, setup_cfg
from runs.run import cli
from scripts import export_checkpoint
from sweeps.jobs import SetupError
from tests.release_files import write_release_checkpoint
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.kgcoop import KNOWLEDGE_TEMPLATES, template_for

D, E = 64, 32  # tiny-ViT: text width, embedding size


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT").model  # OpenAI's own CLIP model: the reference computations run on it


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root), per_class=(2, 1, 1))
    return root


def toy_trainer(root, trainer, output_dir, extra=()):
    node = {"KgCoOp": "KGCOOP", "TCP": "TCP"}[trainer]
    argv = ["--root", str(root), "--trainer", trainer, "--output-dir", str(output_dir), "--seed", "1"]
    argv += toy_opts(str(root), epochs=2, optim="sgd", lr=0.05) + [f"TRAINER.{node}.PREC", "fp32"]
    argv += ["MODEL.INIT_SEED", "0", "TRAIN.PRINT_FREQ", "100", *extra]
    built = build_trainer(setup_cfg(build_parser().parse_args(argv)))
    built.batch_idx, built.num_batches = 0, 10 ** 6  # forward_backward outside an epoch: no LR step
    return built


def first_batch(trainer):
    torch.manual_seed(0)
    batch = next(iter(trainer.train_loader_x))
    return batch["img"], batch["label"]


# -- the released computation, written independently with OpenAI's CLIP modules -------------------------------------
def openai_text_features(clip_model, texts, ctx, class_tokens=None, layer=None):
    """The release's TextEncoder: token embeddings of ``texts`` with positions 1..b replaced by ``ctx`` ([b, D] or
    [n, b, D]); before block ``layer`` (0-based) positions 1..4 replaced by ``class_tokens`` [n, 4, D] (TCP);
    EOT feature @ text_projection, unnormalised [n, E]."""
    tokens = openai_clip.tokenize(texts)  # [n, 77]
    x = clip_model.token_embedding(tokens)  # [n, 77, D]
    ctx = ctx.expand(len(texts), -1, -1) if ctx.dim() == 2 else ctx
    x = torch.cat([x[:, :1], ctx, x[:, 1 + ctx.shape[1]:]], dim=1) + clip_model.positional_embedding
    x = x.permute(1, 0, 2)  # [77, n, D]
    for i, block in enumerate(clip_model.transformer.resblocks):
        if i == layer:
            x = torch.cat([x[:1], class_tokens.permute(1, 0, 2), x[1 + class_tokens.shape[1]:]], dim=0)
        x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2))  # [n, 77, D]
    return x[torch.arange(len(texts)), tokens.argmax(dim=-1)] @ clip_model.text_projection


def openai_target(clip_model, texts, fp16):
    """The release's second CLIP (fp16 unless fp16=False): normalised encode_text of the hand-crafted prompts."""
    model = copy.deepcopy(clip_model)
    if fp16:
        openai_clip.model.convert_weights(model)
    with torch.no_grad():
        features = model.encode_text(openai_clip.tokenize(texts))
        return (features / features.norm(dim=-1, keepdim=True)).float()


def release_loss(clip_model, image, label, text_features, target, weight):
    """logits, CE and the weighted knowledge term as the releases compute them (CosineSimilarity(dim=1, eps=1e-7))."""
    v = clip_model.encode_image(image)
    v = v / v.norm(dim=-1, keepdim=True)
    t = text_features / text_features.norm(dim=-1, keepdim=True)
    logits = clip_model.logit_scale.exp() * v @ t.t()
    score = 1.0 - torch.nn.CosineSimilarity(dim=1, eps=1e-07)(t, target / target.norm(dim=-1, keepdim=True)).mean()
    return logits, F.cross_entropy(logits, label), weight * score


def check_step(trainer, tiny, image, label, expected_text, target, weight):
    """The trainer's logits, loss terms and ctx/meta_net gradients against the release computed independently."""
    learner = trainer.model.prompt_learner
    terms, logits = trainer.loss_terms(image, label)
    sum(terms.values()).backward()
    logits_r, ce_r, kg_r = release_loss(tiny, image, label, expected_text(), target, weight)
    assert (logits - logits_r).abs().max() <= 1e-4
    assert terms["loss_ce"].item() == pytest.approx(ce_r.item(), rel=1e-4)
    assert terms["loss_kg"].item() == pytest.approx(kg_r.item(), rel=1e-3, abs=1e-6)
    assert kg_r.item() > 1e-3  # the knowledge term is not vacuous here
    grads = {k: p.grad.clone() for k, p in learner.named_parameters()}
    learner.zero_grad()
    (ce_r + kg_r).backward()
    for k, p in learner.named_parameters():
        assert (grads[k] - p.grad).norm() <= 1e-3 * p.grad.norm(), k
    return terms


# -- KgCoOp --------------------------------------------------------------------------------------------------------
KG_RUN = ["TRAINER.KGCOOP.CTX_INIT", "True", "TRAINER.KGCOOP.W", "8.0"]


def kgcoop_release_text(trainer, tiny):
    learner = trainer.model.prompt_learner
    texts = [f"a photo of a {name.replace('_', ' ')}." for name in trainer.dm.dataset.classnames]
    return lambda: openai_text_features(tiny, texts, learner.ctx)


@pytest.mark.parametrize("fp16_target", [False, True])
def test_kgcoop_step_equals_the_release_computed_independently(data_root, tmp_path, tiny, fp16_target):
    trainer = toy_trainer(data_root, "KgCoOp", tmp_path, KG_RUN + ["TRAINER.KGCOOP.FP16_TARGET", str(fp16_target)])
    learner = trainer.model.prompt_learner
    assert learner.ctx.shape == (4, D) and [k for k, _ in learner.named_parameters()] == ["ctx"]
    init = tiny.token_embedding(openai_clip.tokenize("a photo of a"))[0, 1:5]
    assert torch.equal(learner.ctx.detach(), init.detach())  # CTX_INIT True: "a photo of a", N_CTX not read
    with torch.no_grad():
        learner.ctx.add_(0.05 * torch.randn(4, D, generator=torch.Generator().manual_seed(3)))
    names = trainer.dm.dataset.classnames
    target = openai_target(tiny, [f"a photo of a {n.replace('_', ' ')}." for n in names], fp16_target)
    # fp32: equal to rounding; fp16: within fp16 rounding of OpenAI's fp16 kernels (other kernels, same weights)
    torch.testing.assert_close(learner.target, target, atol=2e-3 if fp16_target else 1e-6, rtol=0)
    image, label = first_batch(trainer)
    expected_target = learner.target if fp16_target else target
    check_step(trainer, tiny, image, label, kgcoop_release_text(trainer, tiny), expected_target, 8.0)
    trainer.set_model_mode("eval")
    with torch.no_grad(), trainer.evaluation_scope():  # the evaluation path: class text features encoded once
        logits = trainer.model_inference(image)
        expected = release_loss(tiny, image, label, kgcoop_release_text(trainer, tiny)(), expected_target, 8.0)[0]
    assert (logits - expected).abs().max() <= 1e-4


def test_kgcoop_fp16_target_is_the_fp16_rounded_one(data_root, tmp_path):
    fp32 = toy_trainer(data_root, "KgCoOp", tmp_path / "a", ["TRAINER.KGCOOP.FP16_TARGET", "False"])
    fp16 = toy_trainer(data_root, "KgCoOp", tmp_path / "b")  # the default: the release's fp16 target
    a, b = fp32.model.prompt_learner.target, fp16.model.prompt_learner.target
    assert torch.equal(b, b.half().float()) and not torch.equal(a, a.half().float())
    assert 1e-5 < (a - b).abs().max() < 1e-2


def test_kgcoop_csc_and_random_context(data_root, tmp_path, tiny):
    trainer = toy_trainer(data_root, "KgCoOp", tmp_path, ["TRAINER.KGCOOP.N_CTX", "3", "TRAINER.KGCOOP.CSC", "True",
                                                          "TRAINER.KGCOOP.W", "2.0"])
    learner = trainer.model.prompt_learner
    names = trainer.dm.dataset.classnames
    assert learner.ctx.shape == (len(names), 3, D)
    texts = [f"X X X {n.replace('_', ' ')}." for n in names]
    target = openai_target(tiny, [f"a photo of a {n.replace('_', ' ')}." for n in names], True)
    image, label = first_batch(trainer)
    check_step(trainer, tiny, image, label, lambda: openai_text_features(tiny, texts, learner.ctx), target, 2.0)
    summary = trainer.forward_backward({"img": image, "label": label})  # a step logs both terms beside the total
    assert set(summary) == {"loss", "acc", "loss_ce", "loss_kg"}
    assert summary["loss"] == pytest.approx(summary["loss_ce"] + summary["loss_kg"], rel=1e-6)


def test_knowledge_templates_per_dataset():
    class Toy:
        prompt_template = "a drawing of a {}."

    assert template_for(KNOWLEDGE_TEMPLATES, None, "OxfordPets") == "a photo of a {}, a type of pet."
    assert template_for(KNOWLEDGE_TEMPLATES, None, "Food101") == "a photo of {}, a type of food."
    assert template_for(KNOWLEDGE_TEMPLATES, None, "DescribableTextures") == "a photo of a {}, a type of texture."
    assert template_for(KNOWLEDGE_TEMPLATES, Toy(), "ImageFolder") == "a drawing of a {}."  # release: KeyError
    assert template_for(KNOWLEDGE_TEMPLATES, None, "ImageFolder") == "a photo of a {}."
    assert len(KNOWLEDGE_TEMPLATES) == 15


def eval_logits(trainer, image):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model_inference(image)


def test_released_kgcoop_checkpoint_loads_and_ours_is_its_format(data_root, tmp_path):
    trainer = toy_trainer(data_root, "KgCoOp", tmp_path / "run", KG_RUN)
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(4, D, generator=g)
    released = {"ctx": ctx, "bias_vectors": torch.randn(1, D, generator=g),  # dead in the release
                "token_prefix": torch.zeros(9, 1, D), "token_suffix": torch.zeros(9, 72, D),
                "meta_net.linear1.weight": torch.randn(D, D, generator=g).half(),  # dead, fp16
                "meta_net.linear1.bias": torch.zeros(D).half()}
    write_release_checkpoint(tmp_path / "release", "prompt_learner", released, 100)
    image, _ = first_batch(trainer)
    before = eval_logits(trainer, image)
    trainer.load_model(str(tmp_path / "release"), epoch=100)
    assert torch.equal(trainer.model.prompt_learner.ctx, ctx)
    assert (eval_logits(trainer, image) - before).abs().max() > 1e-3

    trainer.save_model(0, str(tmp_path / "ours"))
    ours = torch.load(tmp_path / "ours" / "prompt_learner" / "model.pth.tar-1", weights_only=False)["state_dict"]
    assert list(ours) == ["ctx"] and torch.equal(ours["ctx"], ctx)  # the release loads it with strict=False
    with pytest.raises(SetupError, match="already in the released format"):
        export_checkpoint.export("KgCoOp", str(tmp_path / "ours"), str(tmp_path / "out"))


@pytest.mark.parametrize("opts, message", [
    (["TRAINER.KGCOOP.CLASS_TOKEN_POSITION", "middle"], "places the class name at the end"),
    (["TRAINER.KGCOOP.W", "-1.0"], "TRAINER.KGCOOP.W = -1.0 is out of range"),
    (["TRAINER.KGCOOP.N_CTX", "0"], "TRAINER.KGCOOP.N_CTX = 0 is out of range"),
    (["TRAINER.COOP.CLASS_TOKEN_POSITION", "middle"], r"TRAINER.COOP.CLASS_TOKEN_POSITION = 'middle' is CoOp's key, "
     r"which KgCoOp does not read \(its release's TRAINER.COOP keys are TRAINER.KGCOOP.\* here\): set "
     r"TRAINER.KGCOOP.CLASS_TOKEN_POSITION instead"),
])
def test_kgcoop_bad_settings_are_refused(data_root, tmp_path, opts, message):
    with pytest.raises(ValueError, match=message):
        toy_trainer(data_root, "KgCoOp", tmp_path, opts)


def test_the_releases_coop_keys_are_one_line_refusals_before_any_work(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--root", str(data_root), "--trainer", "KgCoOp", "--output-dir", str(out),
            *toy_opts(str(data_root), epochs=1), "TRAINER.COOP.N_CTX", "4"]  # the release's script, verbatim
    assert cli(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: TRAINER.COOP.N_CTX = 4 is CoOp's key, which KgCoOp does not read (its release's TRAINER.COOP keys "
        "are TRAINER.KGCOOP.* here): set TRAINER.KGCOOP.N_CTX instead"]
    assert not out.exists()


# -- TCP -----------------------------------------------------------------------------------------------------------
def tcp_release_text(trainer, tiny, layer=8):
    """TCP's TextEncoder: the class template with ctx at 1..b, meta_net(target) at positions 1..4 before block 8."""
    learner = trainer.model.prompt_learner
    texts = [f"X X X X {name.replace('_', ' ')}." for name in trainer.dm.dataset.classnames]

    def text():
        class_tokens = learner.meta_net(learner.target).reshape(len(texts), 4, D)
        return openai_text_features(tiny, texts, learner.ctx, class_tokens, layer)
    return text


@pytest.mark.parametrize("fp16_target", [False, True])
def test_tcp_step_equals_the_release_computed_independently(data_root, tmp_path, tiny, fp16_target):
    trainer = toy_trainer(data_root, "TCP", tmp_path, ["TRAINER.TCP.FP16_TARGET", str(fp16_target)])
    learner = trainer.model.prompt_learner
    shapes = {k: tuple(p.shape) for k, p in learner.named_parameters()}
    assert shapes == {"ctx": (4, D), "meta_net.linear1.weight": (E // 4, E), "meta_net.linear1.bias": (E // 4,),
                      "meta_net.linear2.weight": (4 * D, E // 4), "meta_net.linear2.bias": (4 * D,)}
    names = trainer.dm.dataset.classnames
    target = openai_target(tiny, [f"a photo of a {n.replace('_', ' ')}." for n in names], fp16_target)
    torch.testing.assert_close(learner.target, target, atol=2e-3 if fp16_target else 1e-6, rtol=0)
    image, label = first_batch(trainer)
    terms = check_step(trainer, tiny, image, label, tcp_release_text(trainer, tiny),
                       learner.target if fp16_target else target, 8.0)
    assert all(p.grad.abs().sum() > 0 for p in learner.parameters())  # every TCP parameter trains
    assert terms["loss_kg"].item() > 0.05  # random class tokens pull the features away from the target


def test_tcp_class_tokens_enter_at_the_configured_block(data_root, tmp_path, tiny):
    trainer = toy_trainer(data_root, "TCP", tmp_path, ["TRAINER.TCP.CLASS_TOKEN_LAYER", "3", "TRAINER.TCP.N_CTX", "2",
                                                      "TRAINER.TCP.W", "1.5"])
    learner = trainer.model.prompt_learner
    assert learner.ctx.shape == (2, D)  # "X X X X {}.": words 1..2 learnable, 3..4 stay "X"
    names = trainer.dm.dataset.classnames
    texts = [f"X X X X {n.replace('_', ' ')}." for n in names]

    def text():
        class_tokens = learner.meta_net(learner.target).reshape(len(texts), 4, D)
        return openai_text_features(tiny, texts, learner.ctx, class_tokens, 3)
    image, label = first_batch(trainer)
    check_step(trainer, tiny, image, label, text, learner.target, 1.5)
    trainer.set_model_mode("eval")
    with torch.no_grad():
        logits = trainer.model_inference(image)
        expected = release_loss(tiny, image, label, tcp_release_text(trainer, tiny, 3)(), learner.target, 1.5)[0]
        moved = release_loss(tiny, image, label, tcp_release_text(trainer, tiny, 8)(), learner.target, 1.5)[0]
    assert (logits - expected).abs().max() <= 1e-4 and (logits - moved).abs().max() > 1e-3


def test_released_tcp_checkpoint_loads_and_ours_is_its_format(data_root, tmp_path):
    trainer = toy_trainer(data_root, "TCP", tmp_path / "run")
    g = torch.Generator().manual_seed(0)
    shapes = {k: v.shape for k, v in trainer.model.prompt_learner.state_dict().items()}
    learned = {k: torch.randn(*shape, generator=g) * 0.1 for k, shape in shapes.items()}
    released = {k: (v.half() if k.startswith("meta_net.") else v) for k, v in learned.items()}  # meta_net: fp16
    released.update({"token_prefix": torch.zeros(9, 1, D), "token_suffix": torch.zeros(9, 72, D)})
    write_release_checkpoint(tmp_path / "release", "prompt_learner", released, 50)
    image, _ = first_batch(trainer)
    before = eval_logits(trainer, image)
    trainer.load_model(str(tmp_path / "release"), epoch=50)
    state = trainer.model.prompt_learner.state_dict()
    assert all(torch.equal(state[k], released[k].float()) and state[k].dtype == torch.float32 for k in learned)
    assert (eval_logits(trainer, image) - before).abs().max() > 1e-3

    trainer.save_model(0, str(tmp_path / "ours"))
    ours = torch.load(tmp_path / "ours" / "prompt_learner" / "model.pth.tar-1", weights_only=False)["state_dict"]
    assert ours.keys() == learned.keys()  # the release's names; its strict=False load reads every one
    with pytest.raises(SetupError, match="already in the released format"):
        export_checkpoint.export("TCP", str(tmp_path / "ours"), str(tmp_path / "out"))


@pytest.mark.parametrize("opts, message", [
    (["TRAINER.TCP.N_CTX", "5"], "TRAINER.TCP.N_CTX = 5: TCP's class templates start with 4 context words"),
    (["TRAINER.TCP.CLASS_TOKEN_LAYER", "12"], r"TRAINER.TCP.CLASS_TOKEN_LAYER = 12; use 1..11"),
    (["TRAINER.TCP.W", "-0.5"], "TRAINER.TCP.W = -0.5 is out of range"),
    (["TRAINER.COOP.CSC", "True"], r"TRAINER.COOP.CSC = True is CoOp's key, which TCP does not read .*: TCP has no "
     "such setting"),
])
def test_tcp_bad_settings_are_refused(data_root, tmp_path, opts, message):
    with pytest.raises(ValueError, match=message):
        toy_trainer(data_root, "TCP", tmp_path, opts)


def test_tcp_templates_per_dataset():
    from trainers.tcp import TCP_KNOWLEDGE_TEMPLATES, TCP_PROMPT_DEFAULT, TCP_PROMPT_TEMPLATES

    assert TCP_KNOWLEDGE_TEMPLATES["FGVCAircraft"] == "a photo of an aircraft {}."  # KgCoOp's differ in two places
    assert TCP_KNOWLEDGE_TEMPLATES["Food101"] == "a photo of a {}, a type of food."
    assert {k for k in KNOWLEDGE_TEMPLATES if KNOWLEDGE_TEMPLATES[k] != TCP_KNOWLEDGE_TEMPLATES[k]} == \
        {"FGVCAircraft", "Food101"}
    assert TCP_PROMPT_TEMPLATES["StanfordCars"] == "X X X X {}, a type of car"  # no period, as released
    assert template_for(TCP_PROMPT_TEMPLATES, None, "ImageFolder", TCP_PROMPT_DEFAULT) == "X X X X {}."
    assert TCP_PROMPT_TEMPLATES.keys() == TCP_KNOWLEDGE_TEMPLATES.keys() == KNOWLEDGE_TEMPLATES.keys()
