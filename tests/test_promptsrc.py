"""PromptSRC and PromptSRC_BMIP: each loss term against an independent computation, the template teacher against
OpenAI's own text encoder, GPA weights and the deployed aggregate against saved per-epoch prompts, exact resume with
aggregation running, composition with IVLP / BMIP, parameter counts, and the released checkpoint layouts."""
import contextlib
import hashlib
import io
import math
import os

import pytest
import torch
import torch.nn.functional as F

import clip as openai_clip
from clip_patch import load_backbone
from dassl.engine import build_trainer
from runs.config import build_parser, setup_cfg
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.gpa import GaussianPromptAggregation, gpa_weights
from trainers.imagenet_templates import OPENAI_IMAGENET_TEMPLATES, PROMPTSRC_TEMPLATES
from trainers.promptsrc import PromptSRC, self_regulating_losses, template_text_features
from trainers.promptsrc_bmip import PromptSRC_BMIP
from trainers.bmip import BMIPPromptLearner
from trainers.ivlp import VisionLanguagePrompts

D = 64  # tiny-ViT widths (text and vision)


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root), per_class=(2, 1, 1))  # 12 training images: 3 batches of 4
    return root


def toy_cfg(root, trainer, output_dir, epochs=3, extra=()):
    """train.py's config for ``trainer`` on the toy tree, tiny-ViT, SGD, seed 1."""
    node = "BMIP" if trainer == "BMIP" else ("IVLP" if trainer == "IVLP" else "PROMPTSRC")
    argv = ["--root", str(root), "--trainer", trainer, "--output-dir", str(output_dir), "--seed", "1"]
    argv += toy_opts(str(root), epochs=epochs, optim="sgd", lr=0.05) + [f"TRAINER.{node}.PREC", "fp32"]
    argv += ["MODEL.INIT_SEED", "0", "TRAIN.PRINT_FREQ", "100", *extra]
    return setup_cfg(build_parser().parse_args(argv))


def toy_trainer(root, trainer, output_dir, **kwargs):
    built = build_trainer(toy_cfg(root, trainer, output_dir, **kwargs))
    built.batch_idx, built.num_batches = 0, 10 ** 6  # forward_backward outside an epoch: no LR step
    return built


def first_batch(trainer):
    torch.manual_seed(0)
    batch = next(iter(trainer.train_loader_x))
    return batch["img"], batch["label"]


def learner_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.prompt_learner.state_dict().items()}


# -- GPA weights --------------------------------------------------------------------------------------------------
def normalised_pdf(mean, std, epochs):
    pdf = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, epochs + 1)]
    return torch.tensor([p / sum(pdf) for p in pdf], dtype=torch.float64)


@pytest.mark.parametrize("mean, std, epochs", [(15, 1, 20), (15, 3, 20), (6, 10, 20), (30, 30, 50), (45, 5, 50)])
def test_gpa_weights_are_the_normalised_pdf_at_epochs_1_to_n(mean, std, epochs):
    weights = gpa_weights(mean, std, epochs)
    assert weights.shape == (epochs,) and abs(weights.sum().item() - 1) < 1e-12
    torch.testing.assert_close(weights, normalised_pdf(mean, std, epochs), rtol=1e-12, atol=1e-15)


def test_gpa_weights_published_values():
    w = gpa_weights(15, 1, 20)  # index e - 1 is epoch e
    assert [round(w[e - 1].item(), 4) for e in (12, 13, 14, 15, 16, 17, 18)] == \
        [0.0044, 0.0540, 0.2420, 0.3989, 0.2420, 0.0540, 0.0044]
    w = gpa_weights(15, 3, 20)
    assert int(w.argmax()) + 1 == 15 and round(w.max().item(), 4) == 0.1375 and round(w[19].item(), 4) == 0.0343


def test_gpa_weights_never_divide_zero_by_zero_and_reject_a_bad_std():
    w = gpa_weights(1000, 0.1, 10)  # every pdf value underflows to 0 in float64
    assert torch.isfinite(w).all() and w[-1] == 1
    with pytest.raises(ValueError, match="GPA_STD = 0.*> 0"):
        gpa_weights(15, 0, 20)


def test_partial_aggregate_is_renormalised_by_the_weights_it_has():
    weights = gpa_weights(2, 1, 4)
    gpa = GaussianPromptAggregation(weights)
    module = torch.nn.Linear(3, 2)
    snapshots = []
    for epoch in (1, 2):
        with torch.no_grad():
            module.weight.add_(1.0)
        snapshots.append(module.weight.detach().clone())
        gpa.add(epoch, module)
    with pytest.raises(RuntimeError, match="expected epoch 3"):
        gpa.add(4, module)
    gpa.load_into(module, renormalise=True)
    w1, w2 = weights[0].item(), weights[1].item()
    torch.testing.assert_close(module.weight.detach(), (w1 * snapshots[0] + w2 * snapshots[1]) / (w1 + w2))


# -- the loss terms ------------------------------------------------------------------------------------------------
def test_loss_terms_equal_an_independent_computation():
    g = torch.Generator().manual_seed(0)
    B, n_cls, E = 5, 7, 16

    def unit(*shape):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        return x / x.norm(dim=-1, keepdim=True)

    v, t, z = unit(B, E), unit(n_cls, E), unit(B, E)
    teacher = torch.randn(n_cls, E, generator=g, dtype=torch.float64) * 3  # unnormalised template mean
    label = torch.tensor([0, 3, 6, 1, 2])
    logits = 100 * v @ t.t()
    terms = self_regulating_losses(logits.float(), label, v.float(), t.float(), z.float(), teacher.float(),
                                   torch.tensor(100.0), 25, 10)

    t_bar = teacher / teacher.norm(dim=-1, keepdim=True)
    expected_text = 25 * sum(abs(t[c, e] - t_bar[c, e]) for c in range(n_cls) for e in range(E)) / (n_cls * E)
    expected_image = 10 * sum(abs(v[i, e] - z[i, e]) for i in range(B) for e in range(E)) / (B * E)
    zs_logits = 100 * z @ t_bar.t()
    p_zs, q = zs_logits.softmax(dim=1), logits.softmax(dim=1)
    expected_kl = sum(p_zs[i, c] * (math.log(p_zs[i, c]) - math.log(q[i, c]))
                      for i in range(B) for c in range(n_cls)) / (B * n_cls)
    expected_ce = -sum(math.log(q[i, label[i]]) for i in range(B)) / B
    assert terms["loss_text"].item() == pytest.approx(float(expected_text), rel=1e-5)
    assert terms["loss_image"].item() == pytest.approx(float(expected_image), rel=1e-5)
    assert terms["loss_kl"].item() == pytest.approx(float(expected_kl), rel=1e-4)
    assert terms["loss_ce"].item() == pytest.approx(float(expected_ce), rel=1e-5)
    # direction: KL(zero-shot || prompted), not the reverse; scaling: / (B * n_cls), not batch-mean
    reverse = sum(q[i, c] * (math.log(q[i, c]) - math.log(p_zs[i, c])) for i in range(B) for c in range(n_cls))
    assert abs(reverse / (B * n_cls) - expected_kl) > 1e-3
    assert terms["loss_kl"].item() * n_cls == pytest.approx(float(F.kl_div(
        q.log(), p_zs, reduction="batchmean")), rel=1e-4)


# -- the frozen-CLIP targets ---------------------------------------------------------------------------------------
def test_the_two_template_lists():
    promptsrc, openai = PROMPTSRC_TEMPLATES, OPENAI_IMAGENET_TEMPLATES
    assert len(promptsrc) == 60 == len(set(promptsrc)) and len(openai) == 80 == len(set(openai))
    assert (promptsrc[0], promptsrc[-1]) == ("a photo of a {}.", "itap of the {}.")
    assert (openai[0], openai[39], openai[-1]) == ("a bad photo of a {}.", "a photo of a {}.", "a tattoo of the {}.")
    assert all(t.count("{}") == 1 for t in promptsrc + openai)
    # the exact lists, in order, as the two releases' files hold them (SHA-256 of the lines joined by "\n")
    digests = [hashlib.sha256("\n".join(templates).encode()).hexdigest() for templates in (promptsrc, openai)]
    assert digests[0] == "dc3398ed3ffc7c259342582bc0f36d7ac66c4dee17981a37b77b0fc9c23d4f72"
    assert digests[1] == "4f976686fb651bb5803d4689dcd849f75efe0ef19a3c801355bc9a6f03c8a5af"
    assert "itap of a {}." in openai and "itap of a {}." not in promptsrc


def openai_template_mean(clip_model, classnames, templates):
    """The release's teacher, computed independently: OpenAI's tokenizer and ``encode_text`` for every template x
    class ("_" -> " "), mean of the unnormalised features over the templates: [n_cls, E]."""
    names = [name.replace("_", " ") for name in classnames]
    with torch.no_grad():
        per_template = [clip_model.encode_text(openai_clip.tokenize([t.replace("{}", n) for n in names]))
                        for t in templates]  # each [n_cls, E]
    return torch.stack(per_template).mean(dim=0)


def test_teacher_is_the_mean_of_unnormalised_features_from_openai_encode_text(tiny):
    teacher = template_text_features(tiny, ["sea_lion", "red panda", "cat"], PROMPTSRC_TEMPLATES)
    names = ["sea lion", "red panda", "cat"]
    assert teacher.dtype == torch.float32 and teacher.shape == (3, tiny.model.text_projection.shape[1])
    torch.testing.assert_close(teacher, openai_template_mean(tiny.model, names, PROMPTSRC_TEMPLATES), atol=1e-5,
                               rtol=1e-5)
    with torch.no_grad():  # CLIP's usual ensemble: normalise each template's features, then average
        ensemble = torch.stack([F.normalize(tiny.model.encode_text(tiny.tokenize([t.format(n) for n in names])), dim=-1)
                                for t in PROMPTSRC_TEMPLATES]).mean(dim=0)
    assert (F.normalize(teacher, dim=-1) - F.normalize(ensemble, dim=-1)).abs().max() > 1e-4


EXPECTED_TEMPLATES = {"PromptSRC": PROMPTSRC_TEMPLATES, "PromptSRC_BMIP": OPENAI_IMAGENET_TEMPLATES}


@pytest.fixture(scope="module")
def trainer_teachers(data_root, tmp_path_factory):
    """Each trainer's teacher of the toy training classes, the class names, and what computing it printed."""
    teachers = {}
    for name in EXPECTED_TEMPLATES:
        trainer = toy_trainer(data_root, name, tmp_path_factory.mktemp(name))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            teacher = trainer.teacher_text_features()
        teachers[name] = teacher, trainer.dm.dataset.classnames, printed.getvalue()
    return teachers


@pytest.mark.parametrize("name", list(EXPECTED_TEMPLATES))
def test_each_trainers_teacher_is_its_releases_template_mean(trainer_teachers, tiny, name):
    teacher, classnames, printed = trainer_teachers[name]
    templates = EXPECTED_TEMPLATES[name]
    assert f"Encoding the {len(classnames)} training classes with {len(templates)} templates" in printed
    expected = openai_template_mean(tiny.model, classnames, templates)
    assert teacher.dtype == torch.float32 and teacher.shape == expected.shape
    torch.testing.assert_close(teacher, expected, atol=1e-5, rtol=1e-5)


def test_the_two_trainers_teachers_differ(trainer_teachers):
    (srcs, names, _), (bmips, bmip_names, _) = trainer_teachers["PromptSRC"], trainer_teachers["PromptSRC_BMIP"]
    assert names == bmip_names
    with pytest.raises(AssertionError):  # so each trainer's check above fails with the other trainer's list
        torch.testing.assert_close(srcs, bmips, atol=1e-5, rtol=1e-5)
    # what the loss sees (normalised targets); 0.008 on the tiny model
    assert (F.normalize(srcs, dim=-1) - F.normalize(bmips, dim=-1)).abs().max() > 1e-3


class CountingTeacher(PromptSRC):
    calls = 0

    def teacher_text_features(self):
        if self.teacher is None:
            CountingTeacher.calls += 1
        return super().teacher_text_features()


def test_teacher_computed_once_for_training_and_never_in_evaluation(data_root, tmp_path):
    CountingTeacher.calls = 0
    trainer = CountingTeacher(toy_cfg(data_root, "PromptSRC", tmp_path))
    trainer.batch_idx, trainer.num_batches = 0, 10 ** 6
    trainer.test()
    assert trainer.teacher is None
    batch = next(iter(trainer.train_loader_x))
    summaries = [trainer.forward_backward(batch) for _ in range(3)]
    assert CountingTeacher.calls == 1 and trainer.teacher[0] == tuple(trainer.dm.dataset.classnames)
    assert {"loss", "acc", "loss_ce", "loss_text", "loss_image", "loss_kl"} <= set(summaries[-1])
    assert summaries[-1]["loss"] == pytest.approx(sum(summaries[-1][k] for k in
                                                      ("loss_ce", "loss_text", "loss_image", "loss_kl")), rel=1e-5)


def test_training_loss_equals_an_independent_computation_with_openai_clip(data_root, tmp_path, tiny):
    """The trainer's loss from its own prompted features, OpenAI's unprompted image encoder and the template teacher
    (checked against OpenAI's encode_text above)."""
    trainer = toy_trainer(data_root, "PromptSRC", tmp_path)
    image, label = first_batch(trainer)
    model = trainer.model
    loss, logits = trainer.compute_loss(image, label)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.prompt_learner.named_parameters()}

    model.prompt_learner.zero_grad()
    v, t = model.image_features(image), model.text_features()
    with torch.no_grad():
        z = tiny.model.encode_image(image)
        z = z / z.norm(dim=-1, keepdim=True)
    teacher = template_text_features(trainer.backbone, trainer.dm.dataset.classnames, trainer.TEACHER_TEMPLATES)
    t_bar = teacher / teacher.norm(dim=-1, keepdim=True)
    scale = tiny.logit_scale.exp()  # 1 / 0.07 for the random tiny CLIP (100 for OpenAI's)
    s = scale * v @ t.t()
    p_zs = (scale * z @ t_bar.t()).log_softmax(dim=1)
    expected = (F.cross_entropy(s, label) + 25 * (t - t_bar).abs().mean() + 10 * (v - z).abs().mean()
                + (p_zs.exp() * (p_zs - s.log_softmax(dim=1))).sum() / s.numel())
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(logits, s.detach())
    for k, p in model.prompt_learner.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, atol=1e-6, rtol=1e-4, msg=k)


# -- composition: the prompts are IVLP's / BMIP's ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["reference", "per_sample"])
def test_promptsrc_bmip_logits_and_ce_gradients_are_bmips(data_root, tmp_path, mode):
    ours = toy_trainer(data_root, "PromptSRC_BMIP", tmp_path / "ours", extra=[
        "TRAINER.PROMPTSRC.N_CTX_TEXT", "2", "TRAINER.PROMPTSRC.N_CTX_VISION", "2",
        "TRAINER.PROMPTSRC.BMIP_MODE", mode])
    bmip = toy_trainer(data_root, "BMIP", tmp_path / "bmip", extra=["TRAINER.BMIP.MODE", mode])
    assert ours.get_model_names() == ["VLPromptLearner"]
    assert learner_state(ours).keys() == learner_state(bmip).keys()
    for k, v in learner_state(bmip).items():
        assert torch.equal(learner_state(ours)[k], v), k  # same INIT_SEED, same learner, same draws
    image, label = first_batch(ours)
    terms, logits = ours.loss_terms(image, label)
    terms["loss_ce"].backward()
    bmip_loss, bmip_logits = bmip.compute_loss(image, label)
    bmip_loss.backward()
    assert torch.equal(logits, bmip_logits)
    for (k, p), q in zip(ours.model.prompt_learner.named_parameters(), bmip.model.prompt_learner.parameters()):
        assert torch.equal(p.grad, q.grad), k


def test_promptsrc_logits_are_ivlps(data_root, tmp_path):
    ours = toy_trainer(data_root, "PromptSRC", tmp_path / "ours", extra=["TRAINER.PROMPTSRC.N_CTX_TEXT", "2",
                                                                         "TRAINER.PROMPTSRC.N_CTX_VISION", "3"])
    ivlp = toy_trainer(data_root, "IVLP", tmp_path / "ivlp", extra=["TRAINER.IVLP.N_CTX_VISION", "3"])
    for k, v in learner_state(ivlp).items():
        assert torch.equal(learner_state(ours)[k], v), k
    image, label = first_batch(ours)
    assert torch.equal(ours.loss_terms(image, label)[1], ivlp.compute_loss(image, label)[1])


def test_promptsrc_bmip_depth_and_length_come_from_prompt_depth_and_n_ctx_text(data_root, tmp_path):
    with pytest.warns(UserWarning) as caught:
        trainer = toy_trainer(data_root, "PromptSRC_BMIP", tmp_path, extra=[
            "TRAINER.PROMPTSRC.N_CTX_TEXT", "2", "TRAINER.PROMPTSRC.N_CTX_VISION", "4",
            "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "3", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "3"])
    messages = " ".join(str(w.message) for w in caught)
    assert "ignores TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION/PROMPT_DEPTH_TEXT" in messages and "N_CTX_VISION = 4" in messages
    learner = trainer.model.prompt_learner
    assert len(learner.compound_prompts_visual) == 8 and learner.ctx_t.shape[0] == 2
    assert learner.vision_slots.stop - learner.vision_slots.start == 2


def test_bad_settings_are_rejected_before_training(data_root, tmp_path):
    with pytest.raises(ValueError, match="BMIP_MODE must be one of"):
        toy_trainer(data_root, "PromptSRC_BMIP", tmp_path, extra=["TRAINER.PROMPTSRC.BMIP_MODE", "joint"])
    with pytest.raises(ValueError, match="GPA_STD"):
        toy_trainer(data_root, "PromptSRC", tmp_path, extra=["TRAINER.PROMPTSRC.GPA_STD", "0"])
    with pytest.raises(ValueError, match=r"PROMPT_DEPTH_TEXT = 0 is out of range: use an integer >= 1"):
        toy_trainer(data_root, "PromptSRC", tmp_path, extra=["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "0"])
    for trainer in ("PromptSRC", "PromptSRC_BMIP"):
        with pytest.raises(ValueError, match=r"N_CTX_TEXT = 0 is out of range: use an integer >= 1"):
            toy_trainer(data_root, trainer, tmp_path, extra=["TRAINER.PROMPTSRC.N_CTX_TEXT", "0"])


# -- parameter counts with ViT-B/16 shapes (built on the meta device: shapes only) --------------------------------
@pytest.fixture(scope="module")
def vit_b16_shapes():
    from clip.model import CLIP

    from clip_patch import BackboneSpec
    from clip_patch.backbones import openai

    with torch.device("meta"):
        return openai.from_model(BackboneSpec("openai", "ViT-B/16"), CLIP(512, 224, 12, 768, 16, 77, 49408, 512, 8, 12))


@pytest.mark.parametrize("builder, expected", [
    (lambda c: VisionLanguagePrompts(c, ["a"], "a photo of a", 4, 9, 4, 9), 46080),
    (lambda c: VisionLanguagePrompts(c, ["a"], "a photo of a", 4, 3, 4, 3), 15360),
    (lambda c: BMIPPromptLearner(c, ["a"], 1, "a photo of a", 9, "reference", True, True), 1192478),
    (lambda c: BMIPPromptLearner(c, ["a"], 2, "a photo of a", 9, "reference", True, True), 1203230),
    (lambda c: BMIPPromptLearner(c, ["a"], 4, "a photo of a", 9, "reference", True, True), 1224734),
], ids=["PromptSRC", "PromptSRC-xd", "PromptSRC_BMIP-ctx1", "PromptSRC_BMIP-ctx2", "PromptSRC_BMIP-ctx4"])
def test_trainable_parameter_counts_with_vit_b16_shapes(vit_b16_shapes, builder, expected):
    assert sum(p.numel() for p in builder(vit_b16_shapes).parameters()) == expected


# -- Gaussian prompt aggregation over a real run, and exact resume -------------------------------------------------
class Recording(PromptSRC):
    """Keeps the learner's prompts at the end of every epoch (after its last optimizer step)."""

    def run_epoch(self):
        super().run_epoch()
        self.snapshots = getattr(self, "snapshots", []) + [learner_state(self)]


class Killed(Exception):
    pass


class KilledAfterTwoEpochs(PromptSRC):
    def before_epoch(self):
        if self.epoch == 2:
            raise Killed()
        super().before_epoch()


GPA_OPTS = ["TRAINER.PROMPTSRC.GPA_MEAN", "2", "TRAINER.PROMPTSRC.GPA_STD", "1", "TRAIN.CHECKPOINT_FREQ", "1"]


def test_deployed_prompts_are_the_gaussian_aggregate_and_resume_is_exact(data_root, tmp_path):
    full = Recording(toy_cfg(data_root, "PromptSRC", tmp_path / "full", extra=GPA_OPTS))
    frozen_before = {k: v.clone() for k, v in full.model.state_dict().items() if not k.startswith("prompt_learner.")}
    full.train()
    weights = gpa_weights(2, 1, 3)
    assert len(full.snapshots) == 3
    saved = [torch.load(tmp_path / "full" / "VLPromptLearner" / f"model.pth.tar-{e}", weights_only=True)
             for e in (1, 2, 3)]
    for epoch in (1, 2):  # the intermediate epoch files hold the raw prompts of that epoch
        for k, v in full.snapshots[epoch - 1].items():
            assert torch.equal(saved[epoch - 1]["state_dict"][k], v), k
    final = learner_state(full)
    for k in final:
        explicit = sum(weights[e].item() * full.snapshots[e][k] for e in range(3))
        torch.testing.assert_close(final[k], explicit, rtol=1e-6, atol=1e-7)
        assert torch.equal(saved[2]["state_dict"][k], final[k])
        assert not torch.equal(final[k], full.snapshots[2][k])
    assert [int(e) for e in saved[2]["run_state"]["gpa"]["epochs"]] == [1, 2, 3]
    frozen_after = {k: v for k, v in full.model.state_dict().items() if not k.startswith("prompt_learner.")}
    assert all(torch.equal(frozen_after[k], v) for k, v in frozen_before.items())

    killed = KilledAfterTwoEpochs(toy_cfg(data_root, "PromptSRC", tmp_path / "resumed", extra=GPA_OPTS))
    with pytest.raises(Killed):
        killed.train()
    resumed = PromptSRC(toy_cfg(data_root, "PromptSRC", tmp_path / "resumed", extra=GPA_OPTS))
    resumed.train()
    assert resumed.gpa.epochs == [1, 2, 3]
    for k, v in learner_state(resumed).items():
        assert torch.equal(v, final[k]), k


def test_resume_without_aggregation_state_is_refused(data_root, tmp_path):
    ivlp = build_trainer(toy_cfg(data_root, "IVLP", tmp_path, epochs=3, extra=[
        "TRAINER.IVLP.N_CTX_VISION", "4", "TRAINER.IVLP.N_CTX_TEXT", "4"]))
    ivlp.completed_epochs = 1
    ivlp.save_model(0, str(tmp_path))  # an epoch-1 checkpoint under VLPromptLearner/ without GPA state
    trainer = PromptSRC(toy_cfg(data_root, "PromptSRC", tmp_path))
    with pytest.raises(RuntimeError, match="no Gaussian prompt aggregation state.*new --output-dir"):
        trainer.train()


# -- released checkpoints ------------------------------------------------------------------------------------------
def write_release(directory, state_dict, epoch=20):
    """A whole-model checkpoint in the release's layout (after convert_checkpoint: plain tensors)."""
    path = directory / "VLPromptLearner" / f"model.pth.tar-{epoch}"
    os.makedirs(path.parent, exist_ok=True)
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": {"state": {}, "param_groups": []},
                "scheduler": {"last_epoch": epoch}, "val_result": None}, path)


def frozen_release_weights(trainer, prefix_zs=True):
    """Frozen CLIP (fp16) under the release's names, its second image encoder, class-dependent buffers (10 classes)."""
    visual = {k: v.half() for k, v in trainer.backbone.model.visual.state_dict().items()}
    weights = {f"image_encoder.{k}": v for k, v in visual.items()}
    weights.update({f"prompt_learner.ZS_image_encoder.{k}": v for k, v in visual.items()})
    weights.update({f"text_encoder.transformer.resblocks.{k}": v.half()
                    for k, v in trainer.model.text_encoder.blocks.state_dict().items()})
    weights["logit_scale"] = trainer.model.logit_scale.detach().clone()
    weights["prompt_learner.token_prefix"] = torch.zeros(10, 1, D).half()
    weights["prompt_learner.token_suffix"] = torch.zeros(10, 72, D).half()
    return weights


def test_released_promptsrc_checkpoint_loads_and_exports_back(data_root, tmp_path):
    trainer = toy_trainer(data_root, "PromptSRC", tmp_path / "run")
    g = torch.Generator().manual_seed(0)
    prompts = {"prompt_learner.ctx": torch.randn(4, D, generator=g).half(),  # fp16 in the release
               "image_encoder.VPT": torch.randn(4, D, generator=g)}
    for layer in range(1, 9):
        prompts[f"text_encoder.transformer.resblocks.{layer}.VPT_shallow"] = torch.randn(4, D, generator=g)
        prompts[f"image_encoder.transformer.resblocks.{layer}.VPT_shallow"] = torch.randn(4, D, generator=g)
    write_release(tmp_path / "release", {**frozen_release_weights(trainer), **prompts})
    image, _ = first_batch(trainer)
    trainer.set_model_mode("eval")
    before = trainer.model_inference(image)
    trainer.load_model(str(tmp_path / "release"), epoch=20)
    learner = trainer.model.prompt_learner
    assert torch.equal(learner.ctx, prompts["prompt_learner.ctx"].float())
    assert torch.equal(learner.ctx_vision, prompts["image_encoder.VPT"])
    for k in range(8):
        assert torch.equal(learner.deep_text[k], prompts[f"text_encoder.transformer.resblocks.{k + 1}.VPT_shallow"])
        assert torch.equal(learner.deep_vision[k], prompts[f"image_encoder.transformer.resblocks.{k + 1}.VPT_shallow"])
    assert all(p.dtype == torch.float32 for p in learner.parameters())
    assert (trainer.model_inference(image) - before).abs().max() > 1e-3

    layout = PromptSRC.RELEASE_LAYOUT
    exported = layout.to_release(learner.state_dict())
    assert exported.keys() == prompts.keys()
    assert all(torch.equal(exported[k], v.float()) for k, v in prompts.items())
    assert layout.to_learner(exported, learner.state_dict()).keys() == learner.state_dict().keys()
    with pytest.raises(KeyError, match="'proj.weight' is not a tensor of this trainer's prompt learner"):
        layout.to_release({"proj.weight": torch.zeros(1)})


def test_released_promptsrc_bmip_checkpoint_loads_and_exports_back(data_root, tmp_path):
    trainer = toy_trainer(data_root, "PromptSRC_BMIP", tmp_path / "run")  # N_CTX_TEXT 4, PROMPT_DEPTH 9
    b, g = 4, torch.Generator().manual_seed(1)
    live = {"prompt_learner.ctx_t": (b, D), "prompt_learner.proj_t.weight": (D, D), "prompt_learner.proj_t.bias": (D,),
            "prompt_learner.single_layer_t.weight": (D, D), "prompt_learner.single_layer_t.bias": (D,),
            "prompt_learner.single_layer_v.weight": (D, D), "prompt_learner.single_layer_v.bias": (D,)}
    for k in range(8):
        live[f"prompt_learner.compound_prompts_text.{k}"] = (b, D)
        live[f"prompt_learner.compound_prompts_visual.{k}"] = (b, D)
    for layer in range(1, 9):
        live[f"image_encoder.transformer.resblocks.{layer}.learnable_linear1.weight"] = (1, 1)
        live[f"image_encoder.transformer.resblocks.{layer}.learnable_linear1.bias"] = (1,)
    for layer in range(1, 8):
        live[f"text_encoder.transformer.resblocks.{layer}.learnable_linear2.weight"] = (1, 1)
        live[f"text_encoder.transformer.resblocks.{layer}.learnable_linear2.bias"] = (1,)
    dead = {"prompt_learner.ctx": (b, D), "prompt_learner.ctx_v": (77, D), "prompt_learner.proj_v.weight": (D, D),
            "prompt_learner.proj_v.bias": (D,), "image_encoder.transformer.resblocks.0.learnable_linear1.weight": (1, 1),
            "text_encoder.transformer.resblocks.8.learnable_linear2.weight": (1, 1)}
    live = {k: torch.randn(*s, generator=g).half() for k, s in live.items()}
    write_release(tmp_path / "release", {**frozen_release_weights(trainer), **live,
                                         **{k: torch.randn(*s, generator=g).half() for k, s in dead.items()}})
    trainer.load_model(str(tmp_path / "release"), epoch=20)
    learner = trainer.model.prompt_learner
    layout = PromptSRC_BMIP.RELEASE_LAYOUT
    exported = layout.to_release(learner.state_dict())
    assert exported.keys() == live.keys()
    assert all(torch.equal(exported[k], v.float()) for k, v in live.items())
    assert all(p.dtype == torch.float32 for p in learner.parameters())
    back = layout.to_learner(exported, learner.state_dict())
    assert all(torch.equal(back[k], v) for k, v in learner.state_dict().items())
