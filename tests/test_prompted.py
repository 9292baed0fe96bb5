"""clip_patch: the prompt-capable forward (fast path vs straightforward path vs CLIP's own forward), the attention
probe, EOT truncation, ResNet rejection and the precision policy. Tiny random-weight CLIP, no network."""
import warnings

import pytest
import torch

from clip_patch import DeepPrompts, OpaqueImageEncoder, Precision, load_backbone, load_clip, run_blocks

TOL = 1e-5


@pytest.fixture(scope="module")
def vit():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


@pytest.fixture(scope="module")
def resnet():
    return load_backbone("tiny-RN")


def manual_head_mean_attention(block, x, attn_mask=None):
    """Head-averaged softmax attention [B, N, N] of ``block`` on incoming tokens x [B, N, D], from its raw weights."""
    B, N, D = x.shape
    H = block.attn.num_heads
    h = block.ln_1(x)  # [B, N, D]
    w_q, w_k, _ = block.attn.in_proj_weight.chunk(3)
    b_q, b_k, _ = block.attn.in_proj_bias.chunk(3)
    q = (h @ w_q.t() + b_q).view(B, N, H, D // H).transpose(1, 2)  # [B, H, N, hd]
    k = (h @ w_k.t() + b_k).view(B, N, H, D // H).transpose(1, 2)  # [B, H, N, hd]
    scores = q @ k.transpose(-1, -2) / (D // H) ** 0.5  # [B, H, N, N]
    if attn_mask is not None:
        scores = scores + attn_mask[:N, :N]
    return scores.softmax(dim=-1).mean(dim=1)  # [B, N, N]


def probing_prompts(values, slots, rows, record):
    """DeepPrompts whose replacement depends (with gradient) on the probe, so both paths exercise it fully."""
    def replace(layer, probe):
        a = probe.to_slots(rows)  # [B, b]
        record.append(a.detach().clone())
        return values[layer] * (1 + a.unsqueeze(-1))  # [B, b, D]
    return DeepPrompts(slots, replace)


def run_both_paths(blocks, x0, values, slots, rows):
    """Outputs, gradients (w.r.t. input and prompt values) and probe readings of the fast and naive paths."""
    results = []
    for straightforward in (False, True):
        x = x0.clone().requires_grad_(True)
        v = values.clone().requires_grad_(True)
        record = []
        out = run_blocks(blocks, x, probing_prompts(v, slots, rows, record), straightforward)
        out.pow(2).sum().backward()
        results.append((out.detach(), x.grad, v.grad, record))
    return results


@pytest.mark.parametrize("rows_kind", ["slice", "per_sequence"])
def test_vision_blocks_fast_equals_straightforward_with_probed_replacement(vit, rows_kind):
    blocks = vit.image_encoder.blocks
    torch.manual_seed(0)
    x0 = torch.randn(3, 19, 64)  # [B, CLS + 16 patches + 2 slots, D]
    values = torch.randn(len(blocks), 2, 64)  # one [b, D] value per layer
    rows = slice(0, 17) if rows_kind == "slice" else torch.tensor([0, 5, 16])
    (fast, fgx, fgv, frec), (naive, ngx, ngv, nrec) = run_both_paths(blocks, x0, values, slice(17, 19), rows)
    assert len(frec) == len(nrec) == len(blocks) - 1  # layer 0 never replaces
    assert (fast - naive).abs().max() <= TOL
    assert (fgx - ngx).abs().max() <= TOL
    assert (fgv - ngv).abs().max() <= TOL
    for a_fast, a_naive in zip(frec, nrec):
        assert a_fast.shape == (3, 2)
        assert (a_fast - a_naive).abs().max() <= 1e-6


def test_text_blocks_fast_equals_straightforward_under_causal_mask(vit):
    blocks = vit.text_encoder.blocks
    torch.manual_seed(1)
    x0 = torch.randn(2, 10, 64)  # [n, L (truncated), D]
    values = torch.randn(len(blocks), 2, 64)
    eot_rows = torch.tensor([9, 6])
    (fast, fgx, fgv, frec), (naive, ngx, ngv, nrec) = run_both_paths(blocks, x0, values, slice(1, 3), eot_rows)
    assert (fast - naive).abs().max() <= TOL
    assert (fgx - ngx).abs().max() <= TOL
    assert (fgv - ngv).abs().max() <= TOL
    assert len(frec) == len(nrec) == len(blocks) - 1  # every replacing layer recorded on both paths
    assert all((a - b).abs().max() <= 1e-6 for a, b in zip(frec, nrec))


@pytest.mark.parametrize("straightforward", [False, True])
def test_probe_equals_attention_recomputed_from_block_weights(vit, straightforward):
    """The probe of layer l reads the softmax of layer l on its INCOMING tokens (slots not yet replaced)."""
    blocks = vit.image_encoder.blocks
    torch.manual_seed(2)
    x0 = torch.randn(2, 19, 64)
    incoming = {}  # layer -> the first LayerNorm input of that layer = its incoming tokens [B, N, D]

    def record_incoming(layer):
        def hook(module, args):
            if layer not in incoming:
                incoming[layer] = args[0].detach().clone()
        return hook
    hooks = [block.ln_1.register_forward_pre_hook(record_incoming(layer)) for layer, block in enumerate(blocks)]
    readings = {}

    def replace(layer, probe):
        readings[layer] = (probe.to_slots(slice(0, 17)), probe.to_slots(torch.tensor([3, 0])))
        return torch.full((2, 64), float(layer))
    try:
        run_blocks(blocks, x0, DeepPrompts(slice(17, 19), replace), straightforward)
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(readings) == list(range(1, len(blocks)))
    for layer, (mean_rows, one_row) in readings.items():
        x = incoming[layer]  # [B, N, D]
        assert not torch.equal(x[:, 17:], torch.full_like(x[:, 17:], float(layer)))  # read before replacing
        attention = manual_head_mean_attention(blocks[layer], x)  # [B, N, N]
        torch.testing.assert_close(mean_rows, attention[:, :17, 17:19].mean(dim=1), atol=1e-6, rtol=0)
        torch.testing.assert_close(one_row, attention[[0, 1], [3, 0]][:, 17:19], atol=1e-6, rtol=0)


def test_text_encoder_runs_only_up_to_eot_and_matches_clip(vit):
    encoder = vit.text_encoder
    tokens = vit.tokenize(["a photo of a cat.", "a photo of a very large striped tiger."])  # [2, 77]
    embeddings = encoder.embed(tokens)  # [2, 77, D]
    shapes = []
    hook = encoder.blocks[0].ln_1.register_forward_pre_hook(lambda m, args: shapes.append(args[0].shape))
    try:
        fast = encoder(embeddings, tokens)
        full = encoder(embeddings, tokens, straightforward=True)
    finally:
        hook.remove()
    longest = int(tokens.argmax(dim=-1).max()) + 1  # truncated at the longest EOT
    assert shapes[0] == (1, 5, 64)  # "<SOS> a photo of a" is the same in both prompts: encoded once
    assert shapes[1] == (2, longest - 5, 64) and longest < 77  # the class-specific rest, up to the longest EOT
    assert shapes[2] == (77, 2, 64)  # the straightforward path runs CLIP's [L, n, D] layout on all 77 tokens
    reference = vit.model.encode_text(tokens)  # CLIP's own 77-token forward
    assert fast.shape == (2, vit.model.text_projection.shape[1])
    assert (fast - reference).abs().max() <= TOL
    assert (full - reference).abs().max() <= TOL


def tokenwise_branch(weight, record):
    """A token-wise BlockBranch (none at layer 0) that records the shapes it is handed."""
    def branch(layer, block, x):
        record.append(tuple(x.shape))
        return None if layer == 0 else torch.tanh(block.ln_1(x) @ weight) * 0.1 * layer  # [B, N, D]
    return branch


def clip_blocks_with_branch(resblocks, views, x, weight):
    """CLIP's own blocks on x [B, N, D] (their [N, B, D] layout), each output plus the branch on the block's input."""
    branch = tokenwise_branch(weight, [])
    for layer, (resblock, view) in enumerate(zip(resblocks, views)):
        extra = branch(layer, view, x)
        x = resblock(x.transpose(0, 1)).transpose(0, 1) + (0 if extra is None else extra)
    return x


@pytest.mark.parametrize("straightforward", [False, True])
def test_block_branch_adds_to_every_block_output_in_both_encoders_on_every_path(vit, straightforward):
    torch.manual_seed(0)
    text, image_encoder, model = vit.text_encoder, vit.image_encoder, vit.model
    weight = torch.randn(64, 64, requires_grad=True)
    tokens = vit.tokenize(["a photo of a cat.", "a photo of a very large striped tiger."])  # [2, 77]
    shapes = []
    features = text(text.embed(tokens), tokens, straightforward=straightforward,
                    branch=tokenwise_branch(weight, shapes))  # [2, E]
    x = clip_blocks_with_branch(model.transformer.resblocks, text.blocks,
                                text.embed(tokens) + text.positional_embedding, weight)  # [2, 77, D]
    eot = tokens.argmax(dim=-1)
    reference = text.project(x[torch.arange(2), eot])  # [2, E]
    assert (features - reference).abs().max() <= 1e-4  # features of size ~2 through 12 blocks: fp32 rounding
    if not straightforward:  # the shortcuts hand the branch the tokens they compute: prefix, suffixes, EOT rows
        longest = int(eot.max()) + 1
        assert shapes[:2] == [(1, 5, 64), (2, longest - 5, 64)] and shapes[-1] == (2, 1, 64)
    image = torch.randn(2, 3, 32, 32)
    image_features = image_encoder(image, straightforward=straightforward, branch=tokenwise_branch(weight, []))
    visual = model.visual
    x = visual.conv1(image).flatten(2).transpose(1, 2)  # [2, 16, D]
    x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], dim=1) + visual.positional_embedding
    x = clip_blocks_with_branch(visual.transformer.resblocks, image_encoder.blocks, visual.ln_pre(x), weight)
    image_reference = visual.ln_post(x[:, 0]) @ visual.proj  # [2, E]
    assert (image_features - image_reference).abs().max() <= 1e-4
    grad, = torch.autograd.grad((features.sum() + image_features.sum()), weight)
    grad_reference, = torch.autograd.grad((reference.sum() + image_reference.sum()), weight)
    assert (grad - grad_reference).abs().max() <= 1e-4 * grad_reference.abs().max()
    assert (reference - model.encode_text(tokens)).abs().max() > 1e-3  # the branch does change the features


@pytest.mark.parametrize("straightforward", [False, True])
def test_image_encoder_without_prompts_matches_clip(vit, straightforward):
    encoder = vit.image_encoder
    assert encoder.num_patch_tokens == 17 and encoder.width == 64 and encoder.num_layers == 12
    image = torch.randn(2, 3, 32, 32)
    features = encoder(image, straightforward=straightforward)
    assert (features - vit.model.encode_image(image)).abs().max() <= TOL


def test_shallow_vision_prompts_change_features_identically_in_both_paths(vit):
    encoder = vit.image_encoder
    image = torch.randn(2, 3, 32, 32)
    shallow = torch.randn(2, 64)  # [b, D]
    fast = encoder(image, shallow=shallow)
    naive = encoder(image, shallow=shallow, straightforward=True)
    assert (fast - naive).abs().max() <= TOL
    assert (fast - encoder(image)).abs().max() > 1e-3


def test_resnet_backbone_rejected_for_visual_prompts_with_clear_error(resnet):
    with pytest.raises(ValueError, match="MaPLe puts prompts into the image encoder, which needs a ViT backbone.*"
                                         "image encoder is a ResNet.*MODEL.BACKBONE.NAME"):
        resnet.require_vit("MaPLe")
    encoder = resnet.image_encoder
    assert isinstance(encoder, OpaqueImageEncoder)
    with pytest.raises(ValueError, match="Visual prompts and adapters need a ViT backbone"):
        encoder(torch.randn(1, 3, 32, 32), shallow=torch.zeros(2, 64))


def test_resnet_encoder_without_prompts_matches_clip(resnet):
    image = torch.randn(2, 3, 32, 32)
    assert torch.equal(resnet.image_encoder(image), resnet.model.encode_image(image))


def test_loaded_clip_is_frozen_fp32(vit):
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in vit.model.parameters())


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="Unknown CLIP backbone 'tiny-ViT-typo'.*tiny-ViT"):
        load_clip("tiny-ViT-typo")


@pytest.mark.parametrize("prec", ["fp16", "amp"])
def test_gpu_only_precisions_fall_back_to_fp32_on_cpu_with_one_warning(vit, prec):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precision = Precision(prec, "cpu")
    assert [str(w.message) for w in caught] == [f"PREC '{prec}' needs a CUDA device; running in fp32 on cpu"]
    assert precision.prec == "fp32" and precision.grad_scaler() is None
    precision.prepare_frozen(vit)
    assert vit.model.visual.conv1.weight.dtype == torch.float32
    with precision.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_autocasts_on_cpu_and_keeps_weights_fp32(vit):
    precision = Precision("bf16", "cpu")
    precision.prepare_frozen(vit)
    assert vit.model.visual.conv1.weight.dtype == torch.float32
    with precision.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_unknown_precision_is_rejected():
    with pytest.raises(ValueError, match=r"PREC must be one of \('fp16', 'fp32', 'amp', 'bf16'\), got 'fp64'"):
        Precision("fp64", "cpu")


def inserted_prompts(values, slots, insert_at, mix_at):
    """Deep prompts absent before layer ``insert_at``, inserted there, replaced by ``values[l]`` after it, and mixed
    half and half with the previous layer's outputs at layer ``mix_at`` (read through ``probe.incoming()``)."""
    def replace(layer, probe):
        if layer == mix_at:
            return 0.5 * values[layer] + 0.5 * probe.incoming()  # [B, b, D]
        return values[layer] if layer <= insert_at + 2 else None  # [b, D]; later layers keep the outputs
    return DeepPrompts(slots, replace, shared=True, insert_at=insert_at)


def clip_block(resblock, x, mask=None):
    """CLIP's block (its own modules) on x [B, N, D] with the additive ``mask`` [N, N] or None."""
    h = resblock.ln_1(x).transpose(0, 1)  # [N, B, D]
    x = x + resblock.attn(h, h, h, need_weights=False, attn_mask=mask)[0].transpose(0, 1)
    return x + resblock.mlp(resblock.ln_2(x))


def clip_blocks_with_insertion(resblocks, x, values, start, insert_at, mix_at, causal):
    """The reference: tokens inserted at ``start`` before block ``insert_at``, replaced / mixed as in
    :func:`inserted_prompts`, the causal mask (text) over the longer sequence."""
    b = values.shape[1]
    for layer, resblock in enumerate(resblocks):
        if layer == insert_at:
            x = torch.cat([x[:, :start], values[layer].expand(x.shape[0], -1, -1), x[:, start:]], dim=1)
        elif layer > insert_at and (layer == mix_at or layer <= insert_at + 2):
            new = values[layer] if layer != mix_at else 0.5 * values[layer] + 0.5 * x[:, start:start + b]
            x = torch.cat([x[:, :start], new.expand(x.shape[0], -1, -1), x[:, start + b:]], dim=1)
        n = x.shape[1]
        mask = torch.full((n, n), float("-inf")).triu(1) if causal else None
        x = clip_block(resblock, x, mask)
    return x


@pytest.mark.parametrize("straightforward", [False, True])
def test_tokens_inserted_after_cls_and_sot_then_replaced_and_mixed(vit, straightforward):
    """DeepPrompts.insert_at: absent before the layer, inserted after CLS / SOT, replaced later; the text's causal mask
    covers the longer sequence and the EOT feature moves behind the tokens; the vision slots' outputs are read."""
    from clip_patch.chunked import encode_text
    torch.manual_seed(0)
    text, image_encoder, model = vit.text_encoder, vit.image_encoder, vit.model
    values = (torch.randn(12, 3, 64) * 0.5).requires_grad_(True)  # [layers, b, D]
    slots, insert_at, mix_at = slice(1, 4), 2, 7
    tokens = vit.tokenize(["a photo of a cat.", "a photo of a very large striped tiger.", "a dog."])  # [3, 77]
    deep = inserted_prompts(values, slots, insert_at, mix_at)
    features = text(text.embed(tokens), tokens, deep, straightforward)  # [3, E]
    chunked = encode_text(text, text.embed(tokens), tokens, deep, straightforward, chunk_classes=1)
    x = clip_blocks_with_insertion(model.transformer.resblocks, text.embed(tokens) + text.positional_embedding,
                                   values, 1, insert_at, mix_at, causal=True)  # [3, 80, D]
    reference = text.project(x[torch.arange(3), tokens.argmax(dim=-1) + 3])  # [3, E]
    assert (features - reference).abs().max() <= 1e-4 and (chunked - reference).abs().max() <= 1e-4
    assert (reference - model.encode_text(tokens)).abs().max() > 1e-3  # the tokens do change the features

    image = torch.randn(2, 3, 32, 32)
    image_features, slot_outputs = image_encoder.with_slot_outputs(image, deep, straightforward)
    visual = model.visual
    y = visual.conv1(image).flatten(2).transpose(1, 2)  # [2, 16, D]
    y = torch.cat([visual.class_embedding.expand(2, 1, -1), y], dim=1) + visual.positional_embedding
    y = clip_blocks_with_insertion(visual.transformer.resblocks, visual.ln_pre(y), values, 1, insert_at, mix_at,
                                   causal=False)  # [2, 20, D]
    assert (image_features - visual.ln_post(y[:, 0]) @ visual.proj).abs().max() <= 1e-4
    assert (slot_outputs - visual.ln_post(y[:, 1:4])).abs().max() <= 1e-4
    assert (image_encoder(image, deep=deep, straightforward=straightforward) - image_features).abs().max() <= 1e-5
    grad, = torch.autograd.grad(features.sum() + slot_outputs.sum(), values)
    grad_reference, = torch.autograd.grad(reference.sum() + visual.ln_post(y[:, 1:4]).sum(), values)
    assert (grad - grad_reference).abs().max() <= 1e-4 * grad_reference.abs().max()
    assert grad[:insert_at].abs().max() == 0 and grad[insert_at].abs().max() > 0
