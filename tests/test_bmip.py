"""BMIP as specified in shared/spec/bmip.md: parameter counts, gradients, gates, deep-prompt init, batch (in)dependence.

Models are built directly on the tiny random-weight CLIP (12 layers per side, width 64, 16 patches + CLS); the
ViT-B/16-shaped random CLIP is built once, only for the counting tests.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from clip_patch import load_backbone
from trainers.base import PromptedCLIP
from trainers.bmip import BMIP, BMIPPromptLearner
from trainers.maple import MaPLePromptLearner

CLASSNAMES = ["cat", "dog", "sea_lion"]
DEPTH = 9  # the published PROMPT_DEPTH: deep prompt sets k = 0..7 at layers 1..8


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


@pytest.fixture(scope="module")
def vit_b16():
    torch.set_num_threads(1)
    return load_backbone("random-ViT-B/16")


def build_bmip(clip_model, mode="reference", depth=DEPTH, share_text=True, share_visual=True, seed=0, classnames=None):
    torch.manual_seed(seed)
    learner = BMIPPromptLearner(clip_model, classnames or CLASSNAMES, 2, "a photo of a", depth, mode, share_text,
                                share_visual)
    return PromptedCLIP(clip_model, learner)


def scalars(module, prefix=""):
    return sum(p.numel() for name, p in module.named_parameters() if name.startswith(prefix))


# -- parameter counts (ViT-B/16 shapes) ----------------------------------------------------------------------------
def test_reference_has_1203230_trainable_scalars_and_all_reach_the_loss(vit_b16):
    model = build_bmip(vit_b16, classnames=["cat", "dog"])
    learner = model.prompt_learner
    groups = {"ctx_t": 1_024, "compound_prompts_text": 8_192, "compound_prompts_visual": 12_288,
              "single_layer_t": 393_984, "single_layer_v": 393_728, "proj_t": 393_984,
              "vision_gates": 16, "text_gates": 14}
    assert {prefix: scalars(learner, prefix) for prefix in groups} == groups
    assert scalars(learner) == 1_203_230
    model(torch.randn(1, 3, 224, 224)).logsumexp(dim=-1).sum().backward()
    reached = {name for name, p in learner.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    zero = {name for name, p in learner.named_parameters() if p.grad is not None and not p.grad.any()}
    assert zero == {f"text_gates.{k}.weight" for k in range(7)}  # the SOS gate input is exactly 0
    assert reached | zero == {name for name, _ in learner.named_parameters()}


def test_reference_with_per_layer_heads_counts_6323486(vit_b16):
    learner = build_bmip(vit_b16, share_text=False, share_visual=False, classnames=["cat"]).prompt_learner
    assert len(learner.compound_prompt_projections_t) == 8 and len(learner.compound_prompt_projections_v) == 7
    assert scalars(learner) == 6_323_486


def test_maple_count_with_the_same_shapes(vit_b16):
    torch.manual_seed(0)
    learner = MaPLePromptLearner(vit_b16, ["cat"], 2, "a photo of a", DEPTH)
    assert scalars(learner) == 3_555_072  # ctx 1,024 + proj 393,984 + 8 x (1,024 + 393,984)


# -- gradients (tiny backbone) -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["reference", "per_sample"])
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("depth", [2, DEPTH])
def test_gradients_reach_exactly_the_learner(tiny, mode, share, depth):
    model = build_bmip(tiny, mode, depth=depth, share_text=share, share_visual=share)
    loss = F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 2]))
    loss.backward()
    zero_by_design = {f"text_gates.{k}.weight" for k in range(depth - 2)} if mode == "reference" else set()
    for name, p in model.prompt_learner.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (not p.grad.any()) == (name in zero_by_design), name
    learner_ids = {id(p) for p in model.prompt_learner.parameters()}
    frozen = [p for p in model.parameters() if id(p) not in learner_ids]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)


# -- gates ---------------------------------------------------------------------------------------------------------
def test_reference_text_gate_is_sigmoid_of_bias_at_layers_1_to_J_minus_2(tiny):
    learner = build_bmip(tiny).prompt_learner
    _, _, deep = learner.text_inputs()
    for layer in range(1, DEPTH - 1):
        k = layer - 1
        w = torch.sigmoid(learner.text_gates[k].bias)  # [1]
        other = learner.compound_prompts_visual[k] @ learner.single_layer_v.weight.t() + learner.single_layer_v.bias
        expected = w * learner.compound_prompts_text[k] + (1 - w) * other  # [b, D_t]
        torch.testing.assert_close(deep.replace(layer, None), expected)  # no attention is needed to compute it
    assert deep.replace(DEPTH - 1, None) is None  # the release blends one text layer fewer than vision
    assert len(learner.text_gates) == DEPTH - 2 and len(learner.vision_gates) == DEPTH - 1


def test_reference_text_gate_weight_has_no_effect(tiny):
    model = build_bmip(tiny)
    with torch.no_grad():
        before = model.text_features().clone()
        for gate in model.prompt_learner.text_gates:
            gate.weight.mul_(-50.0)
        assert torch.equal(model.text_features(), before)


def spy_on(learner, method_name, record):
    """Replace a learner method by a wrapper that records its results."""
    original = getattr(learner, method_name)

    def wrapper(*args):
        result = original(*args)
        record.append(result.detach().clone())
        return result
    setattr(learner, method_name, wrapper)


def test_straightforward_reference_reads_an_exactly_zero_sos_attention(tiny):
    model = build_bmip(tiny)
    model.straightforward = True
    read = []
    spy_on(model.prompt_learner, "text_gate_input", read)
    with torch.no_grad():
        model.text_features()
    assert len(read) == DEPTH - 2
    assert all(a.shape == (2,) and torch.equal(a, torch.zeros(2)) for a in read)


@pytest.mark.parametrize("classnames, probed", [(None, False), (["cat"], True)])
def test_fast_reference_text_gate_input_is_zero_with_and_without_a_probe(tiny, classnames, probed):
    """Several classes: the shared prefix is encoded once and replace() gets no probe. One class: no shared prefix,
    the fast block's probe is read. Either way a = 0 exactly, and the features equal the straightforward path's."""
    model = build_bmip(tiny, classnames=classnames)
    probes, read = [], []
    original_text_inputs = model.prompt_learner.text_inputs
    def text_inputs():
        embeddings, tokens, deep = original_text_inputs()
        replace = deep.replace
        deep.replace = lambda layer, probe: (probes.append(probe), replace(layer, probe))[1]
        return embeddings, tokens, deep
    model.prompt_learner.text_inputs = text_inputs
    spy_on(model.prompt_learner, "text_gate_input", read)
    with torch.no_grad():
        fast = model.text_features()
        assert len(read) == DEPTH - 2 and all(torch.equal(a, torch.zeros(2)) for a in read)
        assert all((p is not None) == probed for p in probes)
        model.straightforward = True
        torch.testing.assert_close(model.text_features(), fast, atol=1e-6, rtol=0)


class IncomingTokens:
    """Forward pre-hooks that keep, per layer, the first LayerNorm input = the layer's incoming tokens [B, N, D]."""

    def __init__(self, blocks):
        self.tokens = {}
        self.handles = [block.ln_1.register_forward_pre_hook(self._hook(layer)) for layer, block in enumerate(blocks)]

    def _hook(self, layer):
        def hook(module, args):
            if layer not in self.tokens:
                self.tokens[layer] = args[0].detach().clone()
        return hook

    def __enter__(self):
        return self.tokens

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def head_mean_attention(block, x, attn_mask=None):
    """nn.MultiheadAttention(need_weights=True) of ``block`` on x [B, N, D]: head-averaged probabilities [B, N, N]."""
    h = block.ln_1(x).transpose(0, 1)  # [N, B, D]
    mask = None if attn_mask is None else attn_mask[: h.shape[0], : h.shape[0]]
    return block.attn(h, h, h, need_weights=True, average_attn_weights=True, attn_mask=mask)[1]


@pytest.mark.parametrize("mode", ["reference", "per_sample"])
@pytest.mark.parametrize("straightforward", [False, True])
def test_vision_gate_input_equals_naive_attention_recomputation(tiny, mode, straightforward):
    model = build_bmip(tiny, mode)
    model.straightforward = straightforward
    blocks = tiny.model.visual.transformer.resblocks
    n_patch = model.image_encoder.num_patch_tokens  # CLS + patches (197 for ViT-B/16)
    read = []
    spy_on(model.prompt_learner, "vision_gate_input", read)
    with torch.no_grad(), IncomingTokens(blocks) as incoming:
        model.image_features(torch.randn(3, 3, 32, 32))
    assert len(read) == DEPTH - 1
    for layer, a in enumerate(read, start=1):
        attention = head_mean_attention(blocks[layer], incoming[layer])  # [B, N, N]
        if mode == "reference":
            expected = attention.mean(dim=0)[:n_patch].mean(dim=0)[n_patch: n_patch + 2]  # batch, then rows
        else:
            expected = attention[:, :n_patch].mean(dim=1)[:, n_patch: n_patch + 2]  # [B, b] per image
        assert a.shape == expected.shape
        torch.testing.assert_close(a, expected, atol=1e-6, rtol=0)


def test_per_sample_text_gate_reads_each_class_eot_row(tiny):
    model = build_bmip(tiny, "per_sample")
    learner = model.prompt_learner
    blocks = tiny.model.transformer.resblocks
    read = []
    spy_on(learner, "text_gate_input", read)
    with torch.no_grad(), IncomingTokens(blocks) as incoming:
        model.text_features()
    eot = learner.prompts.tokens.argmax(dim=-1)  # [n_cls]
    assert len(read) == DEPTH - 1  # symmetric with vision
    for layer, a in enumerate(read, start=1):
        attention = head_mean_attention(blocks[layer], incoming[layer], blocks[layer].attn_mask)  # [n, L, L]
        expected = attention[torch.arange(len(CLASSNAMES)), eot][:, 1:3]  # [n_cls, b]
        torch.testing.assert_close(a, expected, atol=1e-6, rtol=0)
        assert a.min() > 0


# -- initialisation ------------------------------------------------------------------------------------------------
def test_reference_deep_visual_prompts_start_from_one_shared_draw(tiny):
    learner = build_bmip(tiny).prompt_learner
    prompts = list(learner.compound_prompts_visual)
    assert len(prompts) == DEPTH - 1
    assert all(torch.equal(p, prompts[0]) for p in prompts)
    assert len({p.data_ptr() for p in prompts}) == len(prompts)  # distinct Parameters, no aliasing
    assert 0.01 < prompts[0].std().item() < 0.03  # N(0, 0.02)
    with torch.no_grad():
        prompts[0].add_(1.0)
    assert not torch.equal(prompts[0], prompts[1])


def test_per_sample_deep_visual_prompts_are_independent_draws(tiny):
    prompts = list(build_bmip(tiny, "per_sample").prompt_learner.compound_prompts_visual)
    assert not any(torch.equal(prompts[0], p) for p in prompts[1:])


def test_reference_per_layer_heads_start_identical_and_visual_prompts_uniform(tiny):
    learner = build_bmip(tiny, share_text=False, share_visual=False).prompt_learner
    heads = list(learner.compound_prompt_projections_t) + list(learner.compound_prompt_projections_v)
    for group in (learner.compound_prompt_projections_t, learner.compound_prompt_projections_v):
        assert all(torch.equal(h.weight, group[0].weight) and torch.equal(h.bias, group[0].bias) for h in group)
    assert len({h.weight.data_ptr() for h in heads}) == len(heads)
    prompts = list(learner.compound_prompts_visual)
    bound = math.sqrt(6.0 / (3 * 16 + 64))
    assert all(p.abs().max() <= bound for p in prompts) and not torch.equal(prompts[0], prompts[1])


def test_context_starts_from_the_ctx_init_word_embeddings(tiny):
    model = build_bmip(tiny)
    words = model.text_encoder.embed(tiny.tokenize(["a photo of a"]))[0, 1:3]  # "a", "photo"
    assert torch.equal(model.prompt_learner.ctx_t.data, words)


# -- batch (in)dependence ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, depends_on_batch", [("reference", True), ("per_sample", False)])
def test_image_logits_depend_on_batch_mates_only_in_reference_mode(tiny, mode, depends_on_batch):
    model = build_bmip(tiny, mode)
    torch.manual_seed(3)
    image0 = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        n_tokens = model.image_encoder.num_patch_tokens + 2
        for gate in model.prompt_learner.vision_gates:  # large alpha, centred where attention is uniform,
            gate.weight.fill_(1000.0)  # so the attention-dependent part of the gate matters
            gate.bias.fill_(-1000.0 / n_tokens)
        for prompt in model.prompt_learner.compound_prompts_visual:  # token-sized prompts (std 2)
            prompt.mul_(100.0)
        first = model(torch.cat([image0, torch.randn(3, 3, 32, 32)]))[0]
        second = model(torch.cat([image0, 5 * torch.randn(3, 3, 32, 32)]))[0]
    if depends_on_batch:
        assert (first - second).abs().max() > 1e-2
    else:
        torch.testing.assert_close(first, second, atol=1e-6, rtol=0)


# -- released checkpoints ------------------------------------------------------------------------------------------
def released_state(learner, depth, share):
    """A release-format whole-model state dict (fp16, tiny-ViT widths): ``learner``'s values under the release's
    names, plus what the release registers besides: a v->t head at every depth (one per deep layer when unshared),
    both gates in every block, frozen CLIP weights and dead tensors."""
    release = {f"prompt_learner.{k}": v.half() for k, v in learner.state_dict().items()
               if "gates" not in k and "projections_v" not in k and "single_layer_v" not in k}
    n_deep = depth - 1
    if share:
        release["prompt_learner.single_layer_v.weight"] = torch.randn(64, 64).half()
        release["prompt_learner.single_layer_v.bias"] = torch.randn(64).half()
    for k in range(0 if share else n_deep):
        release[f"prompt_learner.compound_prompt_projections_v.{k}.weight"] = torch.randn(64, 64).half()
        release[f"prompt_learner.compound_prompt_projections_v.{k}.bias"] = torch.randn(64).half()
    for layer in range(12):
        for encoder in ("image_encoder", "text_encoder"):
            for gate in ("learnable_linear1", "learnable_linear2"):
                release[f"{encoder}.transformer.resblocks.{layer}.{gate}.weight"] = torch.randn(1, 1).half()
                release[f"{encoder}.transformer.resblocks.{layer}.{gate}.bias"] = torch.randn(1).half()
    release["image_encoder.conv1.weight"] = torch.randn(64, 3, 8, 8).half()  # a frozen CLIP weight
    release["prompt_learner.ctx_v"] = torch.randn(77, 64).half()  # a dead tensor
    return release


@pytest.mark.parametrize("mode", ["reference", "per_sample"])
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("depth", [2, DEPTH])
def test_released_state_maps_onto_exactly_the_learner_keys(tiny, mode, share, depth):
    learner = build_bmip(tiny, mode, depth=depth, share_text=share, share_visual=share).prompt_learner
    release = released_state(learner, depth, share)
    converted = BMIP.RELEASE_LAYOUT.to_learner(release, learner.state_dict())
    assert converted.keys() == learner.state_dict().keys()
    assert all(v.dtype == torch.float32 for v in converted.values())
    for layer in range(1, depth):
        assert torch.equal(converted[f"vision_gates.{layer - 1}.bias"],
                           release[f"image_encoder.transformer.resblocks.{layer}.learnable_linear1.bias"].float())
    for layer in range(1, learner.n_text_blend + 1):
        assert torch.equal(converted[f"text_gates.{layer - 1}.weight"],
                           release[f"text_encoder.transformer.resblocks.{layer}.learnable_linear2.weight"].float())


# -- configuration errors ------------------------------------------------------------------------------------------
def test_bad_mode_and_depth_are_rejected(tiny):
    with pytest.raises(ValueError, match="TRAINER.BMIP.MODE must be one of .*'batch'"):
        build_bmip(tiny, "batch")
    with pytest.raises(ValueError, match=r"PROMPT_DEPTH = 13; use 1..12"):
        build_bmip(tiny, depth=13)
