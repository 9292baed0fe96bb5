"""Backbone families behind one seam: the open_clip family against open_clip's own forward, OpenAI-format weights
through both families, the shortcuts on open_clip blocks, refusals, config checks and the checkpoint record.
Tiny random-weight models, no network."""
import json
import urllib.error

import pytest
import torch
import torch.nn.functional as F

from clip_patch import (OPENAI_BACKBONE_NAMES, RANDOM_BACKBONES, BackboneSpec, DeepPrompts, WeightsNotFoundError,
                        backbone_depths, build_random_clip, check_backbone, load_backbone)
from clip_patch.backbones import open_clip as open_clip_family
from clip_patch.backbones import openai as openai_family
from clip_patch.prompted import run_blocks, run_blocks_shared_prefix, shared_prefix_length
from tests.test_trainers import (MODEL_BUILDERS, build_model, build_toy_trainer, data_root,  # noqa: F401 (fixture)
                                 fixed_batch, learner_of, logits_and_gradients, method_cfg)
from trainers.base import PromptedCLIP
from trainers.bitp import BITPPromptLearner
from trainers.coop import CoOpPromptLearner
from trainers.kgcoop import fill_template, knowledge_features
from trainers.linear_probe import LinearProbeCLIPModel, LinearProbeHead
from trainers.maple import MaPLePromptLearner
from trainers.mma import AdapterLearner
from trainers.proda import ProDACLIP, ProDAPromptLearner
from trainers.tcp import TCPPromptLearner
from trainers.upt import UPTPromptLearner
from trainers.zsclip import HandcraftedPrompts

TOL = 1e-5
CLASSNAMES = ["cat", "dog", "sea_lion", "red panda"]
TINY_OPEN_CLIP = "tiny-open-clip-test"  # an open_clip model config registered by the fixture below
TINY_CONFIG = {  # open_clip's own CLIP architecture with LayerScale, at tiny-ViT's sizes
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "patch_size": 8, "ls_init_value": 0.5},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3,
                 "ls_init_value": 0.5},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)  # tiny models: a second thread only adds contention (as in the other model tests)


def open_clip():
    return open_clip_family.open_clip()


@pytest.fixture(scope="module")
def tiny_open_clip_name(tmp_path_factory):
    """Registers TINY_OPEN_CLIP with open_clip (a JSON model config, as open_clip's own configs are)."""
    folder = tmp_path_factory.mktemp("open_clip_config")
    (folder / f"{TINY_OPEN_CLIP}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip().add_model_config(str(folder))
    return TINY_OPEN_CLIP


def randomise_layer_scales(model, seed=0):
    """LayerScale gammas drawn away from their constant init, so a forward that skipped them would be caught."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ls_1.gamma", "ls_2.gamma")):
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def tiny_oc(tiny_open_clip_name):
    backbone = load_backbone(BackboneSpec("open_clip", tiny_open_clip_name, "random"))
    randomise_layer_scales(backbone.model)
    return backbone


@pytest.fixture(scope="module")
def openai_file(tmp_path_factory):
    """tiny-ViT's weights as an OpenAI-format file (a state dict with OpenAI's metadata entries)."""
    path = tmp_path_factory.mktemp("weights") / "tiny-ViT-openai.pt"
    model = load_backbone("tiny-ViT").model
    metadata = {"input_resolution": torch.tensor(32), "context_length": torch.tensor(77),
                "vocab_size": torch.tensor(49408)}
    torch.save({**model.state_dict(), **metadata}, path)
    return str(path)


@pytest.fixture(scope="module")
def both_families(openai_file):
    """The same OpenAI-format weights through the openai family and through open_clip's converter."""
    return (load_backbone(BackboneSpec("openai", "tiny-ViT", path=openai_file)),
            load_backbone(BackboneSpec("open_clip", "tiny-ViT", path=openai_file)))


# -- (a) no prompts: the encoders are open_clip's own forward ------------------------------------------------------
@pytest.mark.parametrize("straightforward", [False, True])
def test_open_clip_encoders_equal_encode_text_and_encode_image_with_layer_scale(tiny_oc, straightforward):
    model = tiny_oc.model
    assert type(model.transformer.resblocks[0].ls_1).__name__ == "LayerScale"
    assert model.transformer.resblocks[0].ls_1.gamma.std() > 0.1  # not the constant init
    tokens = tiny_oc.tokenize(["a photo of a cat.", "a photo of a very large striped tiger.", "dog"])  # [3, 77]
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        text = tiny_oc.text_encoder(tiny_oc.text_encoder.embed(tokens), tokens, straightforward=straightforward)
        features = tiny_oc.image_encoder(image, straightforward=straightforward)
        assert (text - model.encode_text(tokens)).abs().max() <= TOL
        assert (features - model.encode_image(image)).abs().max() <= TOL
    assert text.shape == (3, 32) and features.shape == (2, 32)


def test_eos_pooling_reads_the_row_open_clip_reads(tiny_open_clip_name):
    backbone = load_backbone(BackboneSpec("open_clip", tiny_open_clip_name, "random"))
    model = randomise_layer_scales(backbone.model, seed=1)
    model.text_pool_type, model.text_eos_id = "eos", backbone.tokenizer.eot_token_id
    eos = open_clip_family.from_model(backbone.spec, model, backbone.tokenizer)
    tokens = eos.tokenize(["a photo of a cat.", "a big dog"])
    with torch.no_grad():
        text = eos.text_encoder(eos.text_encoder.embed(tokens), tokens)
        assert (text - model.encode_text(tokens)).abs().max() <= TOL


def test_open_clip_tokenizer_gives_openai_tokens(tiny_oc):
    from clip_patch.openai_clip import openai_clip

    texts = ["a photo of a sea lion.", "X X X X red panda."]
    assert torch.equal(tiny_oc.tokenize(texts), openai_clip().tokenize(texts).long())
    assert tiny_oc.token_ids("red panda") == load_backbone("tiny-ViT").token_ids("red panda")


# -- (b) OpenAI-format weights: the same logits and gradients through both families --------------------------------
def test_openai_file_through_open_clip_is_open_clips_converted_model(both_families):
    openai, converted = both_families
    assert type(converted.model).__module__ == "open_clip.model"
    assert converted.model.transformer.batch_first and not openai.text_encoder.blocks[0].batch_first
    for key, value in openai.model.state_dict().items():
        assert torch.equal(converted.model.state_dict()[key], value), key  # exact fp32 values


@pytest.mark.parametrize("straightforward", [False, True])
@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_openai_weights_give_the_same_logits_and_gradients_through_both_families(both_families, name,
                                                                                 straightforward):
    results = []
    for backbone in both_families:
        model = build_model(name, backbone)
        model.straightforward = straightforward
        torch.manual_seed(1)
        image, label = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 1])
        if name == "ZeroshotCLIP":
            with torch.no_grad():
                results.append((model(image), {}))
        else:
            results.append(logits_and_gradients(model, image, label))
    (logits_a, grads_a), (logits_b, grads_b) = results
    assert (logits_a - logits_b).abs().max() <= TOL
    assert grads_a.keys() == grads_b.keys()
    for key in grads_a:
        scale = max(1.0, grads_a[key].abs().max().item())
        assert (grads_a[key] - grads_b[key]).abs().max() <= TOL * scale, key


def family_opts(family, path):
    return ["MODEL.BACKBONE.FAMILY", family, "MODEL.BACKBONE.PATH", path]


@pytest.mark.parametrize("run, extra", [
    ("PromptSRC", ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "3", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "3"]),
    ("PromptSRC_BMIP", ["TRAINER.PROMPTSRC.PROMPT_DEPTH", "3"]),
    ("ProDA", ["TRAINER.ProDA.N_CTX", "4", "TRAINER.ProDA.N_PROMPT", "8", "TRAINER.ProDA.LOSS_M_WEIGHT", "0.5"]),
    ("UPT", ["TRAINER.UPT.PROMPT_DEPTH", "3"]),
    ("KgCoOp", ["TRAINER.KGCOOP.CTX_INIT", "True", "TRAINER.KGCOOP.W", "8.0"]),  # the release's fp16 target
    ("TCP", ["TRAINER.TCP.CLASS_TOKEN_LAYER", "3"]),
])
def test_training_steps_beyond_the_forward_are_the_same_through_both_families(data_root, openai_file, run, extra):
    """One training step of the trainers whose loss is more than the cross-entropy of the model's forward
    (PromptSRC's teacher and frozen image features; ProDA's sampled prompts, Gaussian term and diversity term; UPT's
    dropout, drawn from the same RNG state; KgCoOp's and TCP's knowledge term, its target from each family's fp16
    cast): the same loss, loss terms and learner gradients through both families."""
    steps = []
    for family in ("openai", "open_clip"):
        trainer = build_toy_trainer(data_root, run, extra=[*family_opts(family, openai_file), *extra])
        batch = fixed_batch(trainer)
        trainer.set_model_mode("train")
        torch.manual_seed(7)  # UPT's dropout
        loss, _ = trainer.compute_loss(batch["img"], batch["label"])
        loss.backward()
        grads = {k: p.grad.clone() for k, p in learner_of(trainer).named_parameters() if p.grad is not None}
        terms = {k: float(v) for k, v in trainer.last_loss_terms.items()}  # the parts of a loss with several
        steps.append((loss.item(), terms, grads))
    (loss_a, terms_a, grads_a), (loss_b, terms_b, grads_b) = steps
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert terms_a == pytest.approx(terms_b, rel=1e-5, abs=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for key in grads_a:
        assert (grads_a[key] - grads_b[key]).abs().max() <= TOL * max(1.0, grads_a[key].abs().max().item()), key


def test_linear_probe_features_are_the_same_through_both_families(both_families):
    image = torch.randn(3, 3, 32, 32)
    features = [LinearProbeCLIPModel(b, LinearProbeHead(CLASSNAMES, b.embed_dim)).image_features(image)
                for b in both_families]
    assert (features[0] - features[1]).abs().max() <= TOL


# -- (c) the exact shortcuts on open_clip blocks ----------------------------------------------------------------------
def test_shared_prefix_and_eot_cut_are_exact_on_open_clip_blocks(tiny_oc):
    encoder = tiny_oc.text_encoder
    tokens = tiny_oc.tokenize(["a photo of a cat.", "a photo of a big dog.", "a photo of a red fox on a hill."])
    eot = encoder.pool_rows(tokens)
    x = encoder.embed(tokens) + encoder.positional_embedding  # [3, 77, D]
    deep_values = torch.randn(2, 2, encoder.width, requires_grad=True)
    deep = DeepPrompts(slice(1, 3), lambda layer, probe: deep_values[layer - 1], shared=True)
    cut = x[:, : int(eot.max()) + 1]
    assert shared_prefix_length(cut, eot, deep) == 5  # <SOS> a photo of a
    shared = run_blocks_shared_prefix(encoder.blocks, cut, 5, deep, out_rows=eot)  # [3, D]
    full = run_blocks(encoder.blocks, x, deep, straightforward=True, out_rows=eot)  # all 77 tokens, nn.MHA
    (grad_shared,) = torch.autograd.grad(shared.sum(), deep_values)
    (grad_full,) = torch.autograd.grad(full.sum(), deep_values)
    assert (shared - full).abs().max() <= TOL
    assert (grad_shared - grad_full).abs().max() <= TOL and grad_full.abs().sum() > 0


def test_text_features_are_encoded_once_per_evaluation_on_open_clip(tiny_oc):
    torch.manual_seed(0)
    model = PromptedCLIP(tiny_oc, CoOpPromptLearner(_coop_cfg(), CLASSNAMES, tiny_oc))
    calls = []
    handle = model.text_encoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    image = torch.randn(2, 3, 32, 32)
    try:
        with torch.no_grad(), model.text_cache():
            first, second = model(image), model(image)
        assert len(calls) == 1 and torch.equal(first, second)
        model.straightforward = True
        with torch.no_grad():
            assert (model(image) - first).abs().max() <= TOL
    finally:
        handle.remove()
        model.straightforward = False


def _coop_cfg():
    from dassl.config import get_cfg_default
    from dassl.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    cfg.TRAINER.COOP.N_CTX = 4
    return cfg.TRAINER.COOP


# -- (d) towers the prompted forward cannot serve ---------------------------------------------------------------------
def custom_backbone(vision=None, text=None):
    """An open_clip CLIP with tiny towers (``vision`` / ``text``: extra open_clip tower settings)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(32, CLIPVisionCfg(image_size=32, layers=2, width=64, patch_size=8, **(vision or {})),
                 CLIPTextCfg(width=64, heads=4, layers=2, **(text or {}))).eval().requires_grad_(False)
    return open_clip_family.from_model(BackboneSpec("open_clip", "custom", "random"), model,
                                       open_clip().SimpleTokenizer())


SERVED = ("OpenAI CLIP ViTs, and open_clip CLIP models with a class-token ViT and a causal text transformer pooled at "
          "EOT (e.g. ViT-B-32, ViT-B-16, ViT-L-14, ViT-H-14)")


@pytest.mark.parametrize("vision, why", [
    ({"pool_type": "avg"}, "a ViT pooled by 'avg', not its class token"),
    ({"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 1}, "a ViT with attention pooling"),
    ({"timm_model_name": "resnet18", "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": "linear"},
     "a TimmModel tower"),
])
def test_unserved_image_towers_refuse_visual_prompts_and_serve_text_prompts(vision, why):
    backbone = custom_backbone(vision=vision)
    with pytest.raises(ValueError) as refusal:
        MaPLePromptLearner(backbone, CLASSNAMES, 2, "a photo of a", 2)
    assert str(refusal.value) == (
        f"MaPLe puts prompts into the image encoder, which needs a ViT backbone the prompted forward serves ({SERVED}), "
        f"but this backbone's image encoder is {why}. Use such a ViT (e.g. MODEL.BACKBONE.NAME ViT-B/16) or a "
        f"text-prompt method (CoOp, CoCoOp, ProDA, KgCoOp, TCP, ZeroshotCLIP).")
    image = torch.randn(2, 3, 32, 32)
    model = PromptedCLIP(backbone, CoOpPromptLearner(_coop_cfg(), CLASSNAMES, backbone))
    with torch.no_grad():
        assert (model.image_encoder(image) - backbone.model.encode_image(image)).abs().max() <= TOL
        zeroshot = PromptedCLIP(backbone, HandcraftedPrompts(backbone, CLASSNAMES, "a photo of a {}."))(image)
        text = F.normalize(backbone.model.encode_text(backbone.tokenize([f"a photo of a {c.replace('_', ' ')}."
                                                                         for c in CLASSNAMES])), dim=-1)
        expected = backbone.logit_scale.exp() * F.normalize(backbone.model.encode_image(image), dim=-1) @ text.t()
    assert (zeroshot - expected).abs().max() <= 1e-4
    logits, grads = logits_and_gradients(model, image, torch.tensor([0, 1]))
    assert logits.shape == (2, 4) and grads["ctx"].abs().sum() > 0


def test_each_method_refuses_only_the_towers_it_puts_prompts_into():
    """BITP and UPT prompt the image tower and MMA adapts it (refused on an unserved one), ProDA and TCP only the text
    tower (served there, refused with a bidirectional text tower)."""
    image_unserved = custom_backbone(vision={"pool_type": "avg"})
    for method, build in [
        ("BITP", lambda b: BITPPromptLearner(b, CLASSNAMES, 2, "a photo of a", 2, "joint", True, True)),
        ("UPT", lambda b: UPTPromptLearner(b, CLASSNAMES, 2, "a photo of a", 2)),
        ("MMA", lambda b: AdapterLearner(b, CLASSNAMES, "a photo of a", 1, 2, 8, 0.1)),
    ]:
        with pytest.raises(ValueError, match=rf"^{method} puts prompts into the image encoder, which needs a ViT"):
            build(image_unserved)
    torch.manual_seed(0)
    proda = ProDACLIP(image_unserved, ProDAPromptLearner(image_unserved, CLASSNAMES, 4, 4, False))
    logits, grads = logits_and_gradients(proda, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert logits.shape == (2, 4) and grads["ctx"].abs().amax(dim=(1, 2)).min() > 0
    with pytest.raises(ValueError, match=r"^ProDA runs the text transformer through the prompted forward, .* "
                                         r"bidirectional \(no causal mask\)"):
        ProDAPromptLearner(custom_backbone(text={"no_causal_mask": True}), CLASSNAMES, 4, 4, False)
    tcp_cfg = method_cfg("TCP", CLASS_TOKEN_LAYER=1)  # TCP: the text tower only (its knowledge target from it too)
    target = knowledge_features(image_unserved, fill_template("a photo of a {}.", CLASSNAMES), "cpu", True)
    torch.manual_seed(0)
    tcp = PromptedCLIP(image_unserved, TCPPromptLearner(tcp_cfg, CLASSNAMES, image_unserved, "X X X X {}.", target))
    logits, grads = logits_and_gradients(tcp, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert logits.shape == (2, 4) and grads["meta_net.linear2.weight"].abs().sum() > 0
    with pytest.raises(ValueError, match=r"^TCP runs the text transformer through the prompted forward, .* "
                                         r"bidirectional \(no causal mask\)"):
        TCPPromptLearner(tcp_cfg, CLASSNAMES, custom_backbone(text={"no_causal_mask": True}), "X X X X {}.", target)


def test_bidirectional_text_tower_is_refused_for_text_prompts_and_serves_zero_shot_and_the_linear_probe():
    backbone = custom_backbone(text={"no_causal_mask": True})
    assert not backbone.has_prompted_text
    with pytest.raises(ValueError) as refusal:
        CoOpPromptLearner(_coop_cfg(), CLASSNAMES, backbone)
    assert str(refusal.value) == (
        f"CoOp runs the text transformer through the prompted forward, which serves {SERVED}, but the text tower of "
        f"custom is bidirectional (no causal mask). Use such a model, or a method without text prompts "
        f"(ZeroshotCLIP, LinearProbeCLIP).")
    image = torch.randn(2, 3, 32, 32)
    probe = LinearProbeCLIPModel(backbone, LinearProbeHead(CLASSNAMES, backbone.embed_dim))
    assert (probe.image_features(image) - backbone.model.encode_image(image)).abs().max() <= TOL
    texts = [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES]
    with torch.no_grad():
        zeroshot = PromptedCLIP(backbone, HandcraftedPrompts(backbone, CLASSNAMES, "a photo of a {}."))(image)
        text = F.normalize(backbone.model.encode_text(backbone.tokenize(texts)), dim=-1)
        expected = backbone.logit_scale.exp() * F.normalize(backbone.model.encode_image(image), dim=-1) @ text.t()
    assert (zeroshot - expected).abs().max() <= 1e-4


# -- config checks: one line before anything is built -----------------------------------------------------------------
@pytest.mark.parametrize("spec, message", [
    (BackboneSpec("openai", "ViT-B-16"),
     "MODEL.BACKBONE.NAME 'ViT-B-16' is an open_clip model name: set MODEL.BACKBONE.FAMILY open_clip and "
     "MODEL.BACKBONE.PRETRAINED_TAG (e.g. laion2b_s34b_b88k, openai), or use an OpenAI name such as ViT-B/16"),
    (BackboneSpec("openai", "ViT-B/16", "laion2b_s34b_b88k"),
     "MODEL.BACKBONE.PRETRAINED_TAG 'laion2b_s34b_b88k' is an open_clip setting: with MODEL.BACKBONE.FAMILY openai "
     "the weights follow MODEL.BACKBONE.NAME; set it to '' (or MODEL.BACKBONE.FAMILY open_clip)"),
    (BackboneSpec("open_clip", "ViT-B/16", "openai"),
     "MODEL.BACKBONE.NAME 'ViT-B/16' is an OpenAI name: open_clip spells it 'ViT-B-16' (or set "
     "MODEL.BACKBONE.FAMILY openai)"),
    (BackboneSpec("open_clip", "ViT-L/14@336px", "openai"),
     "MODEL.BACKBONE.NAME 'ViT-L/14@336px' is an OpenAI name: open_clip spells it 'ViT-L-14-336' (or set "
     "MODEL.BACKBONE.FAMILY openai)"),
    (BackboneSpec("open_clip", "ViT-B-32"),
     "MODEL.BACKBONE.PRETRAINED_TAG is required with MODEL.BACKBONE.FAMILY open_clip for ViT-B-32: use one of "),
    (BackboneSpec("open_clip", "ViT-B-32", "laion2b"),
     "MODEL.BACKBONE.PRETRAINED_TAG 'laion2b' is not one of its tags for ViT-B-32: use one of ['openai', "),
    (BackboneSpec("open_clip", "ViT-Q-99", "openai"),
     "MODEL.BACKBONE.NAME 'ViT-Q-99' is not an open_clip model: use one of open_clip.list_models() (e.g. ViT-B-32, "
     "ViT-B-16, ViT-L-14) or an hf-hub:org/repo name"),
    (BackboneSpec("clip", "ViT-B/16"), "MODEL.BACKBONE.FAMILY 'clip' is unknown: use one of ('openai', 'open_clip')"),
])
def test_bad_backbone_settings_are_one_line(spec, message):
    with pytest.raises(ValueError) as refusal:
        check_backbone(spec)
    assert str(refusal.value).startswith(message) and "\n" not in str(refusal.value)


def test_every_openai_model_has_the_open_clip_name_the_refusal_suggests():
    import open_clip

    from clip_patch.backbones.open_clip import open_clip_name
    from clip_patch.loading import OPENAI_BACKBONE_NAMES

    for name in OPENAI_BACKBONE_NAMES:
        assert (open_clip_name(name), "openai") in open_clip.list_pretrained(), name
    check_backbone(BackboneSpec("open_clip", "RN50", "openai"))  # the same name in both families: not refused


def test_open_clip_name_under_the_openai_family_exits_2_before_building(data_root, tmp_path, capsys):
    from runs.run import cli
    from tests.toy_data import toy_opts

    out = tmp_path / "run"
    argv = ["--root", str(data_root), "--trainer", "CoOp", "--output-dir", str(out), *toy_opts(str(data_root)),
            "MODEL.BACKBONE.NAME", "ViT-L-14"]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: MODEL.BACKBONE.NAME 'ViT-L-14' is an open_clip model name: set MODEL.BACKBONE.FAMILY "
                   "open_clip and MODEL.BACKBONE.PRETRAINED_TAG (e.g. laion2b_s34b_b88k, openai), or use an OpenAI "
                   "name such as ViT-B/16"]
    assert not out.exists()


def test_offline_open_clip_weights_fail_in_one_line_naming_the_source(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(open_clip(), "download_pretrained", offline)
    with pytest.raises(WeightsNotFoundError) as missing:
        load_backbone(BackboneSpec("open_clip", "ViT-B-32", "laion2b_s34b_b79k"))
    assert str(missing.value) == (
        "open_clip weights ViT-B-32 / laion2b_s34b_b79k are not available: they are not in open_clip's cache and "
        "downloading hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K/ failed (URLError). Fix: download that file on a "
        "machine with internet access into open_clip's cache (cache_dir, or $HF_HOME for hub weights), or point "
        "MODEL.BACKBONE.PATH at a local copy.")


# -- local open_clip-format files (RemoteCLIP, GeoRSCLIP) ------------------------------------------------------------
def test_open_clip_state_dict_file_loads_into_its_named_architecture(tiny_oc, tiny_open_clip_name, tmp_path):
    path = tmp_path / "remote-sensing-tiny.pt"
    torch.save({f"module.{k}": v for k, v in tiny_oc.model.state_dict().items()}, path)  # saved from DDP
    loaded = load_backbone(BackboneSpec("open_clip", tiny_open_clip_name, path=str(path)))
    tokens = loaded.tokenize(["a satellite photo of a harbor."])
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_text(tokens), tiny_oc.model.encode_text(tokens))
    torch.save({k: v for k, v in tiny_oc.model.state_dict().items() if k != "text_projection"}, path)
    with pytest.raises(ValueError, match=rf"does not hold the weights of open_clip model {tiny_open_clip_name} "
                                         r"\(.*text_projection.*\): set MODEL.BACKBONE.NAME to the architecture"):
        open_clip_family.load_file(tiny_open_clip_name, str(path))


# -- checkpoints record the backbone -----------------------------------------------------------------------------------
def test_checkpoints_record_the_backbone_and_refuse_another(data_root, openai_file, tmp_path):
    trainer = build_toy_trainer(data_root, "CoOp", extra=family_opts("open_clip", openai_file))
    trainer.save_model(0, str(tmp_path))
    saved = torch.load(tmp_path / "prompt_learner" / "model.pth.tar-1", map_location="cpu", weights_only=True)
    assert saved["backbone"] == {"family": "open_clip", "name": "tiny-ViT", "pretrained_tag": "",
                                 "path": "tiny-ViT-openai.pt"}
    same = build_toy_trainer(data_root, "CoOp", extra=[*family_opts("open_clip", openai_file), "MODEL.INIT_SEED", "3"])
    same.load_model(str(tmp_path), epoch=1)
    assert torch.equal(learner_of(same).ctx, learner_of(trainer).ctx)
    other = build_toy_trainer(data_root, "CoOp", extra=family_opts("openai", openai_file))
    with pytest.raises(ValueError) as refusal:
        other.load_model(str(tmp_path), epoch=1)
    assert str(refusal.value) == (
        f'Checkpoint "{tmp_path / "prompt_learner" / "model.pth.tar-1"}" was trained on another backbone (family '
        f"'open_clip' -> 'openai'): set MODEL.BACKBONE as it was trained, or train for this backbone")


def test_checkpoints_without_a_backbone_record_still_load(data_root, tmp_path):
    trainer = build_toy_trainer(data_root, "CoOp")
    trainer.save_model(0, str(tmp_path))
    path = tmp_path / "prompt_learner" / "model.pth.tar-1"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    del checkpoint["backbone"]  # as written before the record existed
    torch.save(checkpoint, path)
    fresh = build_toy_trainer(data_root, "CoOp", extra=["MODEL.INIT_SEED", "3"])
    fresh.load_model(str(tmp_path), epoch=1)
    assert torch.equal(learner_of(fresh).ctx, learner_of(trainer).ctx)


# -- encoder depths known before loading (the early check of depth keys) ---------------------------------------------
def built_depths(backbone):
    """(text, vision) layers of a built backbone's encoders; vision None for a tower without prompted blocks."""
    vision = backbone.image_encoder.num_layers if backbone.has_prompted_vision else None
    return backbone.text_encoder.num_layers, vision


@pytest.mark.parametrize("name", sorted(RANDOM_BACKBONES) + ["MicroViT"])
def test_openai_depths_are_those_of_the_built_encoders(name):
    spec = BackboneSpec("openai", name)
    if name == "MicroViT":  # (the shipped file: its real weights)
        built = load_backbone(spec)
    else:
        with torch.device("meta"):  # the loader's own build, without allocating the large ones
            built = openai_family.from_model(spec, build_random_clip(name))
    assert backbone_depths(spec) == built_depths(built)


@pytest.mark.parametrize("name", ["ViT-B-32", "RN50-quickgelu", "ViT-bigG-14"])
def test_open_clip_depths_are_those_of_the_built_encoders(name):
    spec = BackboneSpec("open_clip", name, "random")
    with torch.device("meta"):  # the architecture, without allocating its weights
        model = open_clip().create_model(name, pretrained=None, device="meta")
    built = open_clip_family.from_model(spec, model, open_clip_family.tokenizer_for(spec, model))
    assert backbone_depths(spec) == built_depths(built)


def test_released_openai_depths_agree_with_open_clips_configs_of_the_same_models():
    for name in OPENAI_BACKBONE_NAMES:
        config = open_clip().get_model_config(name.replace("/", "-").replace("@336px", "-336"))
        vision = config["vision_cfg"]["layers"]
        expected = (config["text_cfg"]["layers"], vision if isinstance(vision, int) else None)
        assert backbone_depths(BackboneSpec("openai", name)) == expected, name


def test_depths_of_a_local_file_are_unknown_before_it_is_read(openai_file):
    assert backbone_depths(BackboneSpec("openai", "tiny-ViT", path=openai_file)) == (None, None)
    assert backbone_depths(BackboneSpec("open_clip", "ViT-B-32", path=openai_file)) == (None, None)


# -- sweeps vary the backbone in folders of their own --------------------------------------------------------------------
OPEN_CLIP_OPTS = ["MODEL.BACKBONE.FAMILY", "open_clip", "MODEL.BACKBONE.NAME", "ViT-B-16",
                  "MODEL.BACKBONE.PRETRAINED_TAG", "laion2b_s34b_b88k"]


def sweep_file(tmp_path, name=None):
    backbone_run = {"trainer": "MaPLe", "cfg": "vit_b16_c2_ep5_batch4_2ctx", "opts": OPEN_CLIP_OPTS}
    if name:
        backbone_run["name"] = name
    sweep = {"output": str(tmp_path / "out"), "opts": [], "experiments": [{
        "protocol": "base2new", "datasets": ["caltech101"], "seeds": [1],
        "runs": [{"trainer": "MaPLe", "cfg": "vit_b16_c2_ep5_batch4_2ctx"}, backbone_run]}]}
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(sweep))  # JSON is YAML
    return str(path)


def test_a_sweep_runs_another_backbone_into_its_own_folders(tmp_path):
    from sweeps import sweep_files
    from sweeps.jobs import SetupError

    jobs = [job for chain in sweep_files.load_sweeps([sweep_file(tmp_path, name="laion2b")]).chains for job in chain]
    open_clip_jobs = [job for job in jobs if "open_clip" in job.opts]
    openai_dirs = {job.output_dir for job in jobs if job not in open_clip_jobs}
    assert len(open_clip_jobs) == len(openai_dirs) >= 2  # the same chain (train on base, evaluations) twice
    for job in open_clip_jobs:
        assert list(job.opts[-len(OPEN_CLIP_OPTS):]) == OPEN_CLIP_OPTS
        assert "laion2b" in str(job.output_dir) and job.output_dir not in openai_dirs
    with pytest.raises(SetupError, match=r"two different jobs write to .* give one of the runs its own `name:`"):
        sweep_files.load_sweeps([sweep_file(tmp_path)])
