"""Class-chunked text encoding (clip_patch/chunked.py): the logits and every learner gradient equal the one-pass
encoding's for every method, chunks recompute in backward, evaluation encodes in chunks once, bad settings refuse."""
import pytest
import torch
import torch.nn.functional as F

from clip_patch import DeepPrompts, PromptedTextEncoder, load_clip
from clip_patch.chunked import AUTO, AUTO_CHUNK_CLASSES, chunk_size, class_chunks, encode_text, eot_cut
from tests.test_promptsrc import data_root, first_batch, toy_trainer  # noqa: F401 (data_root is a fixture)
from tests.test_trainers import MODEL_BUILDERS, TOL, TextEncoderCalls, build_model, logits_and_gradients
from trainers.base import PromptedCLIP
from trainers.bmip import BMIPPromptLearner
from trainers.zsclip import HandcraftedPrompts

CHUNK = 3  # the 4 test classes: a chunk of 3 (shared-prefix path) and one of 1 (plain path)


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_clip("tiny-ViT")


class EncoderBatches:
    """Records the class count of every run of a model's text encoder, and whether it ran with gradients."""

    def __init__(self, model):
        self.runs = []
        model.text_encoder.register_forward_pre_hook(
            lambda module, args: self.runs.append((args[0].shape[0], torch.is_grad_enabled())))


def assert_gradients_equal(chunked, whole):
    """Every gradient equal up to fp32 rounding (absolute for gradients of order 1, relative above)."""
    assert chunked.keys() == whole.keys()
    for key in whole:
        scale = max(1.0, whole[key].abs().max().item())
        assert (chunked[key] - whole[key]).abs().max() <= TOL * scale, key


@pytest.mark.parametrize("straightforward", [False, True], ids=["fast", "straightforward"])
@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_chunked_logits_and_gradients_equal_one_pass(tiny, name, straightforward):
    model = build_model(name, tiny)
    model.straightforward = straightforward
    torch.manual_seed(1)
    image, label = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 1])
    model.text_chunk_classes = 0
    whole_logits, whole_grads = logits_and_gradients(model, image, label)
    model.text_chunk_classes = CHUNK
    runs = EncoderBatches(model).runs
    chunked_logits, chunked_grads = logits_and_gradients(model, image, label)
    per_forward = [CHUNK, 1] * (3 if name == "CoCoOp" else 1)  # CoCoOp encodes the classes once per image
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


def test_evaluation_at_many_classes_encodes_chunks_once_with_one_pass_logits(tiny):
    n_cls = 2 * AUTO_CHUNK_CLASSES + 37
    names = [f"class {i} {chr(97 + i % 26)}" for i in range(n_cls)]
    model = PromptedCLIP(tiny, HandcraftedPrompts(tiny, names, "a photo of a {}.")).eval()
    assert model.text_chunk_classes == AUTO
    runs = EncoderBatches(model).runs
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad(), model.text_cache():
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
    model.text_encoder.register_forward_pre_hook(lambda module, args: lengths.append(
        (args[0].shape[0], args[0].shape[1], args[1].shape[1])))
    longest = int(model.prompt_learner.text_inputs()[1].argmax(dim=-1).max()) + 1  # the long name's EOT + 1
    assert 12 < longest < 77
    with torch.no_grad():
        model.text_features()
        model.straightforward = True
        model.text_features()
    assert lengths == [(2, longest, longest), (2, longest, longest), (1, longest, longest)] + [
        (2, 77, 77), (2, 77, 77), (1, 77, 77)]  # the straightforward path runs all 77 positions, as released
    embeddings, tokens = torch.randn(3, 77, 8), torch.zeros(3, 77, dtype=torch.long)
    tokens[:, 4], tokens[1, 9] = 5, 7  # EOT (the largest token id) of the second prompt at 9
    cut, cut_tokens = eot_cut(embeddings, tokens)
    assert torch.equal(cut, embeddings[:, :10]) and cut.is_contiguous() and torch.equal(cut_tokens, tokens[:, :10])


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
        encode_text(PromptedTextEncoder(tiny), embeddings, tokens, deep, chunk_classes=2)
