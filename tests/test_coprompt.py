"""CoPrompt against an independent re-computation of the released code (ShuvenduRoy/CoPrompt ``trainers/coprompt.py``
with its ``clip/model.py`` MaPLe blocks), written here on the OpenAI CLIP modules themselves: released weights -> our
learner -> the released logits, one training step's loss terms and gradients, released checkpoints in and out; the
description files' fetch; the per-dataset settings; CoPrompt_BMIP's composition."""
import json
import os
import random
import urllib.error
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from clip_patch import load_backbone
from clip_patch.chunked import encode_text
from clip_patch.openai_clip import openai_clip
from dassl.engine import build_trainer
from dassl.engine.run_dir import write_result
from runs.config import build_parser, setup_cfg
from runs.run import cli
from scripts import export_checkpoint
from tests.numerics import relative_error
from tests.release_files import write_release_checkpoint
from tests.toy_data import make_toy_dataset, toy_opts
from trainers import llm_descriptions
from trainers.base import PromptedCLIP
from trainers.bmip import BMIPPromptLearner
from trainers.coprompt import CoPromptBMIPLearner, CoPromptLearner, ConsistencyTrainer, description_features

CLASSNAMES = ["cat", "dog", "sea_lion", "red panda"]
N_CTX, DEPTH, INIT = 2, 9, "a photo of a"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


# -- the released computation, re-written from the release -----------------------------------------------------
def released_tensors(generator, d_t=64, d_v=64, embed=32, n_ctx=N_CTX, depth=DEPTH):
    """Random values for every trainable tensor of the released CustomCLIP, under its names and shapes."""
    def draw(*shape):
        return torch.randn(*shape, generator=generator) * 0.2
    state = {"prompt_learner.ctx": draw(n_ctx, d_t), "prompt_learner.proj.weight": draw(d_v, d_t),
             "prompt_learner.proj.bias": draw(d_v)}
    for i in range(depth - 1):
        state[f"prompt_learner.compound_prompts_text.{i}"] = draw(n_ctx, d_t)
        state[f"prompt_learner.compound_prompt_projections.{i}.weight"] = draw(d_v, d_t)
        state[f"prompt_learner.compound_prompt_projections.{i}.bias"] = draw(d_v)
    for side in ("adapter_image", "adapter_text"):
        state[f"{side}.fc.0.weight"], state[f"{side}.fc.2.weight"] = draw(embed // 4, embed), draw(embed, embed // 4)
    return state


def half(x, fp16):
    return x.half().float() if fp16 else x


def released_text(clip_model, state, fp16, classnames=CLASSNAMES):
    """TextEncoder.forward with the MaPLe blocks: block i >= 1 puts deep prompt i-1 at positions 1..b (.half())."""
    texts = [INIT + " " + name.replace("_", " ") + "." for name in classnames]
    tokens = openai_clip().tokenize(texts)  # [n, 77]
    embedding = clip_model.token_embedding(tokens)  # [n, 77, D]
    ctx = state["prompt_learner.ctx"].expand(len(texts), -1, -1)
    x = torch.cat([embedding[:, :1], ctx, embedding[:, 1 + N_CTX:]], dim=1) + clip_model.positional_embedding
    x = x.permute(1, 0, 2)  # [77, n, D]
    deep = [state[f"prompt_learner.compound_prompts_text.{i}"] for i in range(DEPTH - 1)]
    for i, block in enumerate(clip_model.transformer.resblocks):
        if i > 0 and i - 1 < len(deep):
            prompt = half(deep[i - 1].expand(x.shape[1], -1, -1).permute(1, 0, 2), fp16)
            x = torch.cat([x[:1], prompt, x[1 + N_CTX:]], dim=0)
        x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(len(texts)), tokens.argmax(dim=-1)] @ clip_model.text_projection  # [n, E]


def released_image(clip_model, state, image, fp16):
    """VisionTransformer_MaPLe.forward: the layer-0 prompt appended after the patches (.half()); block i >= 1 replaces
    the LAST b tokens by projection i-1 of deep text prompt i-1 (.half())."""
    v = clip_model.visual
    x = v.conv1(image).flatten(2).transpose(1, 2)  # [B, g*g, D]
    x = torch.cat([v.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1) + v.positional_embedding
    shallow = F.linear(state["prompt_learner.ctx"], state["prompt_learner.proj.weight"], state["prompt_learner.proj.bias"])
    x = torch.cat([x, half(shallow.expand(x.shape[0], -1, -1), fp16)], dim=1)
    x = v.ln_pre(x).permute(1, 0, 2)  # [N, B, D]
    deep = [F.linear(state[f"prompt_learner.compound_prompts_text.{i}"],
                     state[f"prompt_learner.compound_prompt_projections.{i}.weight"],
                     state[f"prompt_learner.compound_prompt_projections.{i}.bias"]) for i in range(DEPTH - 1)]
    for i, block in enumerate(v.transformer.resblocks):
        if i > 0 and i - 1 < len(deep):
            prompt = half(deep[i - 1].expand(x.shape[1], -1, -1).permute(1, 0, 2), fp16)
            x = torch.cat([x[: x.shape[0] - N_CTX], prompt], dim=0)
        x = block(x)
    return v.ln_post(x[0]) @ v.proj  # [B, E]


def adapter(state, side, x):
    return F.relu(F.linear(F.relu(F.linear(x, state[f"{side}.fc.0.weight"])), state[f"{side}.fc.2.weight"]))


def released_features(clip_model, state, image, fp16=True, classnames=CLASSNAMES):
    """CustomCLIP.forward up to the logits: adapters mixed 0.1 / 0.2 before normalisation."""
    image_features = released_image(clip_model, state, image, fp16)
    text_features = released_text(clip_model, state, fp16, classnames)
    image_features = 0.1 * adapter(state, "adapter_image", image_features) + 0.9 * image_features
    text_features = 0.2 * adapter(state, "adapter_text", text_features) + 0.8 * text_features
    return F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)


def released_logits(clip_model, state, image, fp16=True, classnames=CLASSNAMES):
    image_features, text_features = released_features(clip_model, state, image, fp16, classnames)
    return clip_model.logit_scale.exp() * image_features @ text_features.t()


def released_teacher_text(clip_model, descriptions):
    """gpt_clip_classifier: every sentence encoded raw by the frozen CLIP, normalised, stacked [n_desc, n_cls, E]."""
    tokenize = openai_clip().tokenize
    per_class = [F.normalize(clip_model.encode_text(tokenize(sentences)), dim=-1) for sentences in descriptions]
    return torch.stack(per_class, dim=1)


def released_loss(clip_model, state, image1, image2, label, teacher_text, d, weight, distill="cosine", fp16=True):
    """The training forward's loss terms with description index d (``distill`` "cosine", else the MSE branch)."""
    image_features, text_features = released_features(clip_model, state, image1, fp16)
    logits = clip_model.logit_scale.exp() * image_features @ text_features.t()
    teacher_image = F.normalize(clip_model.encode_image(image2), dim=-1)
    text_target = teacher_text[d] / teacher_text[d].norm(dim=-1, keepdim=True)
    cos = torch.nn.CosineSimilarity(dim=1, eps=1e-07)
    if distill != "cosine":
        return {"loss_ce": F.cross_entropy(logits, label),
                "loss_text": weight * F.mse_loss(text_features, text_target),
                "loss_image": weight * F.mse_loss(image_features, teacher_image)}
    return {"loss_ce": F.cross_entropy(logits, label),
            "loss_text": weight * (1.0 - cos(text_features, text_target).mean()),
            "loss_image": weight * (1.0 - cos(image_features, teacher_image).mean())}


def learner_from_release(backbone, state, fp16=True):
    torch.manual_seed(0)
    learner = CoPromptLearner(backbone, CLASSNAMES, N_CTX, INIT, DEPTH, fp16)
    learner.load_state_dict({k.removeprefix("prompt_learner."): v for k, v in state.items()})
    return learner


DESCRIPTIONS = [[f"a photo of a {name}, which has {what}." for what in ("fur", "four legs", "a tail")]
                for name in ("cat", "dog", "sea lion", "red panda")]


# -- fidelity -----------------------------------------------------------------------------------------------------
def test_learner_holds_the_released_trainable_tensors(tiny):
    state = released_tensors(torch.Generator().manual_seed(0))
    learner = learner_from_release(tiny, state)
    assert len(state) == 3 + 3 * (DEPTH - 1) + 4  # ctx, proj (2), 8 x (prompt, weight, bias), 2 adapters x 2
    assert {f"prompt_learner.{k}" if not k.startswith("adapter") else k: v.shape
            for k, v in learner.state_dict().items()} == {k: v.shape for k, v in state.items()}
    assert not any(m.bias is not None for m in learner.adapter_text.fc if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("straightforward", [False, True])
@pytest.mark.parametrize("fp16", [True, False])
def test_released_weights_give_the_released_logits(tiny, straightforward, fp16):
    state = released_tensors(torch.Generator().manual_seed(1))
    model = PromptedCLIP(tiny, learner_from_release(tiny, state, fp16), straightforward).eval()
    image = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, expected = model(image), released_logits(tiny.model, state, image, fp16)
        other = released_logits(tiny.model, state, image, not fp16)
    assert ours.shape == (3, len(CLASSNAMES))
    assert (ours - expected).abs().max() <= TOL
    assert (expected - other).abs().max() > 0  # the fp16 rounding reaches the logits



@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root))
    toy = ["black cross", "blue square", "green star", "red circle", "white heart", "yellow ring"]
    with open(root / "descriptions.json", "w") as f:
        json.dump({name: [f"a {name} on a page.", f"a drawing of a {name}.", f"the {name}."] for name in toy}, f)
    return root


def toy_trainer(root, *opts, trainer="CoPrompt"):
    argv = ["--root", str(root), "--trainer", trainer, "--output-dir", str(root / "out" / trainer)]
    argv += toy_opts(str(root)) + ["TRAINER.COPROMPT.PREC", "fp32", "MODEL.INIT_SEED", "0", "DATALOADER.K_TRANSFORMS",
                                   "2", "TRAINER.COPROMPT.DESCRIPTIONS", str(root / "descriptions.json"), *opts]
    trainer = build_trainer(setup_cfg(build_parser().parse_args(argv)))
    trainer.batch_idx, trainer.num_batches = 0, 10 ** 6  # forward_backward outside an epoch: no LR step
    return trainer


@pytest.mark.parametrize("distill", ["cosine", "mse"])
def test_one_training_steps_loss_terms_and_gradients_match_the_release(tiny, distill):
    state = released_tensors(torch.Generator().manual_seed(3))
    learner = learner_from_release(tiny, state)
    model = PromptedCLIP(tiny, learner).train()
    g = torch.Generator().manual_seed(4)
    image1, image2 = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 3, 32, 32, generator=g)
    label = torch.tensor([0, 3, 1, 1])
    with torch.no_grad():
        teacher_text = released_teacher_text(tiny.model, DESCRIPTIONS)
    ours_teacher = description_features(tiny, DESCRIPTIONS)
    assert ours_teacher.shape == (3, 4, 32) and (ours_teacher - teacher_text).abs().max() <= 1e-5

    trainer = SimpleNamespace(model=model, descriptions=ours_teacher,  # all the trainer's loss_terms reads
                              method_cfg=SimpleNamespace(W=1.5, DISTILL=distill))
    terms, _ = ConsistencyTrainer.loss_terms(trainer, (image1, image2), label, 2)
    sum(terms.values()).backward()

    released = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    expected = released_loss(tiny.model, released, image1, image2, label, teacher_text, 2, 1.5, distill)
    sum(expected.values()).backward()
    for name in expected:
        assert abs(terms[name].item() - expected[name].item()) <= 1e-3 * abs(expected[name].item()), name
    assert expected["loss_text"].item() > 0 and expected["loss_image"].item() > 0
    grads = {(k if k.startswith("adapter") else f"prompt_learner.{k}"): p.grad for k, p in learner.named_parameters()}
    assert grads.keys() == state.keys()
    for key, grad in grads.items():
        assert released[key].grad.norm() > 0, key
        assert relative_error(grad, released[key].grad) <= 1e-3, key


def test_description_draws_are_seeded_per_run_and_epoch(data_root):
    trainer = toy_trainer(data_root, "SEED", "3")
    draws = []
    for epoch in (0, 0, 1):
        trainer.epoch = epoch
        trainer.description_rng = random.Random(trainer.description_seed(epoch))
        trainer.descriptions = torch.zeros(50, 1, 1)
        draws.append([trainer.draw_description() for _ in range(20)])
    assert draws[0] == draws[1] != draws[2]
    assert all(0 <= d < 50 for d in draws[0])


# -- through train.py ------------------------------------------------------------------------------------------
def eval_logits(trainer, images):
    trainer.set_model_mode("eval")
    with torch.no_grad(), trainer.evaluation_scope():
        return trainer.model_inference(images)


def test_training_uses_two_views_and_reduces_the_loss(data_root):
    trainer = toy_trainer(data_root, "TRAINER.COPROMPT.W", "1.0")
    trainer.descriptions = description_features(trainer.backbone, [
        [f"a {n} on a page.", f"a drawing of a {n}.", f"the {n}."] for n in
        [c.replace("_", " ") for c in trainer.dm.dataset.classnames]])
    trainer.description_rng = random.Random(0)
    batch = next(iter(trainer.train_loader_x))
    assert isinstance(batch["img"], list) and len(batch["img"]) == 2
    (first, second), _ = trainer.parse_batch_train(batch)
    assert not torch.equal(first, second)  # two augmentations (random flips) of the same images
    trainer.set_model_mode("train")
    summaries = [trainer.forward_backward(batch) for _ in range(6)]
    assert summaries[-1]["loss"] < summaries[0]["loss"] - 0.01, summaries
    assert {"loss_ce", "loss_text", "loss_image"} <= set(summaries[0])


def test_released_checkpoint_evaluates_as_the_release_and_exports_back(tiny, data_root, tmp_path):
    trainer = toy_trainer(data_root)
    state = released_tensors(torch.Generator().manual_seed(8))
    classes = trainer.dm.dataset.classnames
    frozen = {f"model_distill.{k}": v for k, v in list(tiny.model.state_dict().items())[:3]}
    released = {**state, **frozen, "prompt_learner.token_prefix": torch.zeros(len(classes), 1, 64)}
    write_release_checkpoint(tmp_path / "release", "MultiModalPromptLearner", released, 5)
    trainer.load_model(str(tmp_path / "release"), epoch=5)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = released_logits(tiny.model, state, images, classnames=classes)
    assert (eval_logits(trainer, images) - expected).abs().max() <= TOL

    trainer.save_model(4, str(tmp_path / "run"))
    write_result(str(tmp_path / "run"), {"mode": "train", "metrics": {}, "deployed": "last_step"})
    export_checkpoint.main(["--trainer", "CoPrompt", "--model-dir", str(tmp_path / "run"),
                            "--out-dir", str(tmp_path / "out")])
    exported = torch.load(tmp_path / "out" / "MultiModalPromptLearner" / "model.pth.tar-5", map_location="cpu",
                          weights_only=False)["state_dict"]
    assert exported.keys() == state.keys() and all(torch.equal(exported[k], v) for k, v in state.items())


# -- per-dataset settings ------------------------------------------------------------------------------------------
def cfg_for(dataset, *opts):
    argv = ["--trainer", "CoPrompt", "--config-file", "configs/trainers/CoPrompt/coprompt.yaml",
            "DATASET.NAME", dataset, *opts]
    return setup_cfg(build_parser().parse_args(argv))


def test_the_release_per_dataset_settings_win_over_the_files_and_options_over_them():
    eurosat = cfg_for("EuroSAT", "TRAINER.COPROMPT.N_CTX", "4")
    m = eurosat.TRAINER.COPROMPT
    assert (m.N_CTX, m.PROMPT_DEPTH, m.W, eurosat.OPTIM.MAX_EPOCH) == (4, 12, 0.1, 8)  # the option kept, the rest: table
    food = cfg_for("Food101")
    assert (food.TRAINER.COPROMPT.N_CTX, food.TRAINER.COPROMPT.W, food.OPTIM.MAX_EPOCH) == (4, 0.5, 5)
    own = cfg_for("EuroSAT", "TRAINER.COPROMPT.N_CTX", "4", "TRAINER.COPROMPT.DATASET_OVERRIDES", "False")
    assert (own.TRAINER.COPROMPT.N_CTX, own.TRAINER.COPROMPT.PROMPT_DEPTH, own.TRAINER.COPROMPT.W) == (4, 9, 1.0)
    target = cfg_for("ImageNetA")  # not in the release's table (its train.py cannot set it up): the config's values
    assert (target.TRAINER.COPROMPT.N_CTX, target.TRAINER.COPROMPT.PROMPT_DEPTH, target.TRAINER.COPROMPT.W) == (2, 9, 1.0)


# -- descriptions ----------------------------------------------------------------------------------------------
def payload():
    return json.dumps({"AnnualCrop": ["a field."]}).encode()


@pytest.fixture
def fake_release(monkeypatch):
    """EuroSAT's file pinned to a local payload's checksum; ``download`` answers ``.answer`` and records ``.calls``."""
    data = payload()
    monkeypatch.setitem(llm_descriptions.CHECKSUMS, "eurosat_prompt.json",
                        ("sha256", llm_descriptions.checksum("sha256", data)))
    server = type("Server", (), {"calls": [], "answer": data})()

    def download(url):
        server.calls.append(url)
        return server.answer
    monkeypatch.setattr(llm_descriptions, "download", download)
    return server


def test_released_descriptions_are_fetched_once_and_checked(fake_release, tmp_path):
    path = llm_descriptions.released_file("EuroSAT", str(tmp_path))
    assert path == str(tmp_path / "coprompt_gpt_file" / "eurosat_prompt.json")
    assert fake_release.calls == [f"https://raw.githubusercontent.com/ShuvenduRoy/CoPrompt/"
                            f"{llm_descriptions.RELEASE_COMMIT}/gpt_file/eurosat_prompt.json"]
    assert llm_descriptions.released_file("EuroSAT", str(tmp_path)) == path and len(fake_release.calls) == 1  # cache hit
    assert os.listdir(tmp_path / "coprompt_gpt_file") == ["eurosat_prompt.json"]


def test_a_download_with_another_checksum_leaves_nothing(fake_release, tmp_path):
    fake_release.answer = payload() + b" "
    with pytest.raises(ValueError) as error:
        llm_descriptions.released_file("EuroSAT", str(tmp_path))
    assert "does not match its recorded checksum (nothing was saved)" in str(error.value)
    assert "\n" not in str(error.value) and os.listdir(tmp_path) == []


def test_offline_error_names_the_url_and_the_path(monkeypatch, tmp_path):
    def offline(url):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(llm_descriptions, "download", offline)
    with pytest.raises(FileNotFoundError) as error:
        llm_descriptions.released_file("DescribableTextures", str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and os.listdir(tmp_path) == []
    assert message.endswith(f"download {llm_descriptions.RELEASE_URL.format(file='dtd_prompt.json')} to "
                            f"{tmp_path / 'coprompt_gpt_file' / 'dtd_prompt.json'}")


def test_recorded_checksums_cover_every_released_file():
    assert set(llm_descriptions.RELEASED_FILES.values()) == set(llm_descriptions.CHECKSUMS)
    # git's blob id of b"hello\n" (git hash-object): the git-blob checksum is git's own
    assert llm_descriptions.checksum("git-blob", b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_training_without_descriptions_stops_with_one_line_and_exit_2(data_root, tmp_path, capsys):
    argv = ["--root", str(data_root), "--trainer", "CoPrompt", "--output-dir", str(tmp_path / "run")]
    argv += toy_opts(str(data_root), epochs=1) + ["TRAINER.COPROMPT.PREC", "fp32"]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: CoPrompt trains with LLM descriptions of the classes; its release has none for "
                   "DATASET.NAME 'ImageFolder': give a JSON file {class name: [sentence, ...]} in "
                   "TRAINER.COPROMPT.DESCRIPTIONS")
    assert not (tmp_path / "run").exists()


def test_micro_world_classes_describe_themselves():
    from microworld.captions import class_descriptions
    sentences = class_descriptions("red star")
    assert len(sentences) == len(set(sentences)) == 10 and sentences[0] == "a small red star in the center."
    assert class_descriptions("red star") == sentences


# -- CoPrompt_BMIP -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["reference", "per_sample"])
def test_coprompt_bmip_is_bmip_features_through_coprompt_adapters(tiny, mode):
    torch.manual_seed(0)
    learner = CoPromptBMIPLearner(tiny, CLASSNAMES, N_CTX, INIT, DEPTH, mode, True, True)
    for p in learner.parameters():
        p.data.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    bmip = BMIPPromptLearner(tiny, CLASSNAMES, N_CTX, INIT, DEPTH, mode, True, True)
    bmip.load_state_dict({k: v for k, v in learner.state_dict().items() if not k.startswith("adapter")})
    image = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    state = {k: v for k, v in learner.state_dict().items() if k.startswith("adapter")}
    with torch.no_grad():
        ours = PromptedCLIP(tiny, learner)(image)
        plain = PromptedCLIP(tiny, bmip)
        v = plain.image_encoder(image, *bmip.vision_inputs())
        t = encode_text(plain.text_encoder, *bmip.text_inputs())
        v = F.normalize(0.1 * adapter(state, "adapter_image", v) + 0.9 * v, dim=-1)
        t = F.normalize(0.2 * adapter(state, "adapter_text", t) + 0.8 * t, dim=-1)
        expected = tiny.logit_scale.exp() * v @ t.t()
    assert (ours - expected).abs().max() <= TOL


@pytest.mark.parametrize("mode", ["reference", "per_sample"])
def test_coprompt_bmip_trains_with_coprompts_loss(data_root, mode):
    trainer = toy_trainer(data_root, "TRAINER.COPROMPT.BMIP_MODE", mode, "TRAINER.COPROMPT.PROMPT_DEPTH", "3",
                          trainer="CoPrompt_BMIP")
    sentences = [[f"a {n} on a page.", f"the {n}."] for n in [c.replace("_", " ") for c in trainer.dm.dataset.classnames]]
    trainer.descriptions = description_features(trainer.backbone, sentences)
    trainer.description_rng = random.Random(0)
    batch = next(iter(trainer.train_loader_x))
    trainer.set_model_mode("train")
    summary = trainer.forward_backward(batch)
    assert summary["loss"] == pytest.approx(summary["loss_ce"] + summary["loss_text"] + summary["loss_image"], rel=1e-5)
    learner = trainer._models["MultiModalPromptLearner"]
    assert isinstance(learner, CoPromptBMIPLearner) and learner.mode == mode
    with pytest.raises(ValueError, match="TRAINER.COPROMPT.BMIP_MODE must be one of"):
        toy_trainer(data_root, "TRAINER.COPROMPT.BMIP_MODE", "both", trainer="CoPrompt_BMIP")
    with pytest.raises(ValueError, match=r"TRAINER.COPROMPT.DISTILL must be one of \('cosine', 'mse'\), got 'l1'"):
        toy_trainer(data_root, "TRAINER.COPROMPT.DISTILL", "l1", trainer="CoPrompt_BMIP")


@pytest.mark.parametrize("learner", [
    lambda backbone: CoPromptLearner(backbone, CLASSNAMES, N_CTX, INIT, 13, True),
    lambda backbone: CoPromptBMIPLearner(backbone, CLASSNAMES, N_CTX, INIT, 13, "reference", True, True),
], ids=["CoPrompt", "CoPrompt_BMIP"])
def test_a_depth_beyond_the_encoders_names_coprompts_own_key(tiny, learner):
    """The learners are MaPLe's and BMIP's; the error names the key the user set, TRAINER.COPROMPT.PROMPT_DEPTH."""
    with pytest.raises(ValueError, match=r"^TRAINER\.COPROMPT\.PROMPT_DEPTH = 13; use 1\.\.12 for this backbone\.$"):
        learner(tiny)


def test_a_missing_descriptions_file_is_refused_before_the_model_is_built(data_root, tmp_path, capsys):
    missing = tmp_path / "descriptions.json"
    argv = ["--root", str(data_root), "--trainer", "CoPrompt", "--output-dir", str(tmp_path / "run")]
    argv += toy_opts(str(data_root), epochs=1) + ["TRAINER.COPROMPT.PREC", "fp32", "TRAINER.COPROMPT.DESCRIPTIONS",
                                                  str(missing)]
    assert cli(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"error: TRAINER.COPROMPT.DESCRIPTIONS is '{missing}', which is not a file: give a "
                                    "JSON file {class name: [sentence, ...]}, or ''")
    assert "Loading CLIP" not in captured.out  # found by the config check, before any weight is read
    assert not (tmp_path / "run").exists()


def test_a_failed_save_of_the_download_leaves_no_partial_file(fake_release, tmp_path, monkeypatch):
    def full_disk(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)  # the last step of the save fails
    with pytest.raises(OSError):
        llm_descriptions.released_file("EuroSAT", str(tmp_path))
    assert os.listdir(tmp_path / "coprompt_gpt_file") == []


def test_a_description_longer_than_the_context_is_a_one_line_bad_input(tiny):
    with pytest.raises(ValueError, match=r"^A class description does not fit the text encoder \(Input (word )+ is too "
                                         r"long for context length 77\): give shorter sentences in TRAINER\.COPROMPT"):
        description_features(tiny, [["a cat."], ["word " * 100]])
