"""Class-chunked text encoding (clip_patch/chunked.py): the logits and every learner gradient equal the one-pass
encoding's for every method, chunks recompute in backward, evaluation encodes in chunks once, bad settings refuse."""
import pytest
import torch
import torch.nn.functional as F

from clip_patch import BackboneSpec, DeepPrompts, load_backbone
from clip_patch.backbones import open_clip as open_clip_family
from clip_patch.chunked import AUTO, AUTO_CHUNK_CLASSES, chunk_size, class_chunks, encode_text, eot_cut
from tests.test_backbones import (both_families, custom_backbone, openai_file,  # noqa: F401 (fixtures)
                                  randomise_layer_scales, tiny_open_clip_name)
from tests.test_promptsrc import data_root, first_batch, toy_trainer  # noqa: F401 (data_root is a fixture)
from tests.test_trainers import CLASSNAMES, MODEL_BUILDERS, TOL, build_model, logits_and_gradients
from trainers.base import PromptedCLIP
from trainers.bmip import BMIPPromptLearner
from trainers.zsclip import HandcraftedPrompts

CHUNK = 3  # the 4 test classes: a chunk of 3 (shared-prefix path) and one of 1 (plain path)
ENCODINGS_PER_FORWARD = {"CoCoOp": 3, "ProDA": 8}  # class sets encoded per forward: one per image, one per prompt


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


class EncoderBatches:
    """Within its scope, records the class count of every run of a model's text encoder (the backbone's, shared by
    the models built on it), and whether it ran with gradients."""

    def __init__(self, model):
        self.runs = []
        self.encoder = model.text_encoder

    def __enter__(self):
        self.handle = self.encoder.register_forward_pre_hook(
            lambda module, args: self.runs.append((args[1].shape[0], torch.is_grad_enabled())))  # tokens [n, L]
        return self.runs

    def __exit__(self, *exc):
        self.handle.remove()


def assert_gradients_equal(chunked, whole):
    """Every gradient equal up to fp32 rounding (absolute for gradients of order 1, relative above)."""
    assert chunked.keys() == whole.keys()
    for key in whole:
        scale = max(1.0, whole[key].abs().max().item())
        assert (chunked[key] - whole[key]).abs().max() <= TOL * scale, key


@pytest.fixture(scope="module")
def tiny_open_clip_eos(tiny_open_clip_name):  # noqa: F811 (the fixture imported above)
    """A tiny open_clip-family backbone that pools the first EOS token (open_clip's "eos" pooling), LayerScale on."""
    backbone = load_backbone(BackboneSpec("open_clip", tiny_open_clip_name, "random"))
    model = randomise_layer_scales(backbone.model, seed=1)
    model.text_pool_type, model.text_eos_id = "eos", backbone.tokenizer.eot_token_id
    return open_clip_family.from_model(backbone.spec, model, backbone.tokenizer)


@pytest.mark.parametrize("straightforward", [False, True], ids=["fast", "straightforward"])
@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_chunked_logits_and_gradients_equal_one_pass(tiny, name, straightforward):
    assert_chunked_equals_one_pass(build_model(name, tiny), name, straightforward)


@pytest.mark.parametrize("name", ["CoOp", "CoCoOp", "MaPLe", "BMIP-per_sample", "BITP-atten", "UPT", "ProDA", "TCP",
                                  "MMA", "MMRL", "MMRLpp", "CoPrompt", "CoPrompt_BMIP-per_sample"])
def test_chunked_equals_one_pass_on_the_open_clip_family(both_families, name):  # noqa: F811
    assert_chunked_equals_one_pass(build_model(name, both_families[1]), name, straightforward=False)


@pytest.mark.parametrize("name", ["CoOp", "CoCoOp", "ProDA"])  # (its 3 layers take no deep prompts at depth 9)
def test_chunked_equals_one_pass_with_open_clip_eos_pooling_and_layer_scale(tiny_open_clip_eos, name):
    assert_chunked_equals_one_pass(build_model(name, tiny_open_clip_eos), name, straightforward=False)


def assert_chunked_equals_one_pass(model, name, straightforward):
    """Logits and every gradient of the chunked encoding (CHUNK classes) equal the one-pass encoding's; each chunk
    runs with gradients and is recomputed in backward when the text side is trained."""
    model.straightforward = straightforward
    torch.manual_seed(1)
    image, label = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 1])
    model.text_chunk_classes = 0
    whole_logits, whole_grads = logits_and_gradients(model, image, label)
    model.text_chunk_classes = CHUNK
    with EncoderBatches(model) as runs:
        chunked_logits, chunked_grads = logits_and_gradients(model, image, label)
    per_forward = [CHUNK, 1] * ENCODINGS_PER_FORWARD.get(name, 1)
    assert runs[:len(per_forward)] == [(n, True) for n in per_forward]
    recomputed = [] if name in ("VPT", "ZeroshotCLIP") else runs[:len(per_forward)]  # (no trained text input)
    assert sorted(runs[len(per_forward):]) == sorted(recomputed)  # each chunk recomputed in backward
    assert (chunked_logits - whole_logits).abs().max() <= TOL
    assert_gradients_equal(chunked_grads, whole_grads)


def test_per_sample_bmip_chunk_reads_its_own_classes_eot_rows(tiny):
    learner = BMIPPromptLearner(tiny, ["cat", "dog", "sea_lion", "red panda"], 2, "a photo of a", 9, "per_sample",
                                True, True)
    eots = []
    original = learner.text_gate_input
    learner.text_gate_input = lambda probe, eot: (eots.append(eot), original(probe, eot))[1]
    with torch.no_grad():
        PromptedCLIP(tiny, learner, text_chunk_classes=3).text_features()
    assert [e.tolist() for e in eots[:1]] == [learner.eot[:3].tolist()]
    assert [e.tolist() for e in eots[8:9]] == [learner.eot[3:].tolist()]  # 8 blended layers per chunk


@pytest.mark.parametrize("run", ["PromptSRC", "PromptSRC_BMIP"])
def test_self_regulating_loss_gradients_equal_one_pass(data_root, tmp_path, run):  # noqa: F811
    trainer = toy_trainer(data_root, run, tmp_path)
    image, label = first_batch(trainer)
    learner = trainer.model.prompt_learner
    grads = {}
    for chunk in (0, 4):  # 6 toy classes: chunks of 4 and 2
        trainer.model.text_chunk_classes = chunk
        learner.zero_grad(set_to_none=True)
        loss, _ = trainer.compute_loss(image, label)
        loss.backward()
        grads[chunk] = {name: p.grad.clone() for name, p in learner.named_parameters() if p.grad is not None}
    assert len(grads[0]) > 2
    assert_gradients_equal(grads[4], grads[0])


@pytest.mark.parametrize("multilabel", [False, True])
def test_proda_training_logits_and_gradient_equal_one_pass(tiny, multilabel):
    model = build_model("ProDA", tiny)
    image, label = torch.randn(4, 3, 32, 32), torch.tensor([0, 2, 1, 3])
    results = {}
    for chunk in (0, CHUNK):  # the sampled prompts' features, and ProDA's Gaussian term on their spread
        model.text_chunk_classes = chunk
        with EncoderBatches(model) as runs:
            logits = model.training_logits(image, label, [5, 0, 7], multilabel)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, label), model.prompt_learner.ctx)
        results[chunk] = logits.detach(), grad, runs
    classes = [n for n, _ in results[CHUNK][2]]
    assert classes[:6] == [CHUNK, 1] * 3 and sorted(classes[6:]) == sorted(classes[:6])  # recomputed in backward
    assert (results[CHUNK][0] - results[0][0]).abs().max() <= TOL
    assert_gradients_equal({"ctx": results[CHUNK][1]}, {"ctx": results[0][1]})


def test_evaluation_at_many_classes_encodes_chunks_once_with_one_pass_logits(tiny):
    n_cls = 2 * AUTO_CHUNK_CLASSES + 37
    names = [f"class {i} {chr(97 + i % 26)}" for i in range(n_cls)]
    model = PromptedCLIP(tiny, HandcraftedPrompts(tiny, names, "a photo of a {}.")).eval()
    assert model.text_chunk_classes == AUTO
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad(), model.text_cache(), EncoderBatches(model) as runs:
        chunked = torch.cat([model(images[:3]), model(images[3:])])
    assert runs == [(AUTO_CHUNK_CLASSES, False), (AUTO_CHUNK_CLASSES, False), (37, False)]  # once per evaluation
    model.text_chunk_classes = 0
    with torch.no_grad():
        whole = model(images)
    assert chunked.shape == (5, n_cls)
    assert (chunked - whole).abs().max() <= TOL


def test_fast_path_chunks_get_the_prompts_cut_after_the_last_eot(tiny):
    names = ["cat", "sea lion", "a very long class name of many words", "dog", "red panda"]
    model = PromptedCLIP(tiny, HandcraftedPrompts(tiny, names, "a photo of a {}."), text_chunk_classes=2)
    lengths = []
    handle = model.text_encoder.register_forward_pre_hook(lambda module, args: lengths.append(
        (args[0].shape[0], args[0].shape[1], args[1].shape[1])))
    longest = int(model.prompt_learner.text_inputs()[1].argmax(dim=-1).max()) + 1  # the long name's EOT + 1
    assert 12 < longest < 77
    with torch.no_grad():
        model.text_features()
        model.straightforward = True
        model.text_features()
    handle.remove()
    assert lengths == [(2, longest, longest), (2, longest, longest), (1, longest, longest)] + [
        (2, 77, 77), (2, 77, 77), (1, 77, 77)]  # the straightforward path runs all 77 positions, as released
    embeddings, tokens = torch.randn(3, 77, 8), torch.zeros(3, 77, dtype=torch.long)
    tokens[:, 4], tokens[1, 9] = 5, 7  # EOT (the largest token id) of the second prompt at 9
    cut, cut_tokens = eot_cut(embeddings, tokens, tokens.argmax(dim=-1))
    assert torch.equal(cut, embeddings[:, :10]) and cut.is_contiguous() and torch.equal(cut_tokens, tokens[:, :10])
    assert eot_cut(embeddings, tokens, torch.tensor([4, 4, 4]))[0].shape == (3, 5, 8)  # the family's pooled rows


def test_a_token_only_text_tower_is_encoded_in_chunks_of_token_rows():
    backbone = custom_backbone(text={"no_causal_mask": True})  # bidirectional: run on token ids by the family
    model = PromptedCLIP(backbone, HandcraftedPrompts(backbone, CLASSNAMES, "a photo of a {}."),
                         text_chunk_classes=CHUNK)
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), EncoderBatches(model) as runs:
        chunked = model(image)
        model.text_chunk_classes = 0
        whole = model(image)
    assert runs == [(CHUNK, False), (1, False), (4, False)]
    assert (chunked - whole).abs().max() <= TOL


def test_chunk_size_setting():
    assert chunk_size(AUTO, AUTO_CHUNK_CLASSES) == 0 and chunk_size(AUTO, AUTO_CHUNK_CLASSES + 1) == AUTO_CHUNK_CLASSES
    assert chunk_size(0, 10 ** 5) == 0 and chunk_size(8, 8) == 0 and chunk_size(8, 9) == 8
    assert class_chunks(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    for bad in (-2, 1.5):
        with pytest.raises(ValueError, match="MODEL.TEXT_CHUNK_CLASSES.*-1 \\(auto.*0 \\(never chunk\\)"):
            chunk_size(bad, 10)


def test_per_class_deep_prompts_without_restrict_refuse_chunking(tiny):
    embeddings, tokens = torch.zeros(4, 77, 64), torch.zeros(4, 77, dtype=torch.long)
    deep = DeepPrompts(slice(1, 3), lambda layer, probe: None)  # per-sequence, no restrict
    with pytest.raises(ValueError, match="give restrict, or set MODEL.TEXT_CHUNK_CLASSES 0"):
        encode_text(tiny.text_encoder, embeddings, tokens, deep, chunk_classes=2)
