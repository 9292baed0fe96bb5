"""BITP against the released algorithm, written out here from the BMIP release (trainers/bitp.py, clip/model.py).

A released-format state dict (every tensor the released CustomCLIP registers under ``prompt_learner.``, with the
released shapes: ctx_v [77, D_v], proj_v, the exchange layers, all per-layer heads) is the one source of weights.
``released_logits`` computes the release's forward from it with CLIP's own blocks: the release's prompt lists, its
layer counters (text: insert while counter <= len - 2; vision: while counter <= len - 1) and its stack/view layouts.
Our learner loads the same state dict through the release layout; logits and one step's gradients must agree.
"""
import pytest
import torch
import torch.nn.functional as F

from clip_patch import load_backbone
from clip_patch.openai_clip import openai_clip
from trainers.base import PromptedCLIP
from trainers.bitp import BITP, CONNECT_METHODS, BITPPromptLearner, stacked

CLASSNAMES = ["cat", "dog", "sea_lion"]
CTX_INIT = "a photo of a"
LAYOUT = BITP.RELEASE_LAYOUT


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


# -- the released computation, from a released-format state dict ----------------------------------------------------
def released_state(clip_model, n_ctx, depth, share, seed=0):
    """Every prompt_learner tensor of the released BITP (trainers/bitp.py L171-231), random, plus a frozen weight
    and the class buffers (which a load must ignore)."""
    d_t, d_v = clip_model.ln_final.weight.shape[0], clip_model.visual.class_embedding.shape[0]
    g = torch.Generator().manual_seed(seed)
    shapes = {"ctx_t": (n_ctx, d_t), "ctx_v": (77, d_v), "proj_t.weight": (d_v, d_t), "proj_t.bias": (d_v,),
              "proj_v.weight": (d_t, d_v), "proj_v.bias": (d_t,)}
    for k in range(depth - 1):
        shapes[f"compound_prompts_text.{k}"] = (n_ctx, d_t)
        shapes[f"compound_prompts_visual.{k}"] = (n_ctx, d_v)
    heads = {"t": [("single_layer_t", d_t, d_v), ("exchange_layer_t", 2 * d_t, d_t)],
             "v": [("single_layer_v", d_v, d_t), ("exchange_layer_v", 2 * d_v, d_v)]}
    per_layer = {"single_layer_t": "compound_prompt_projections_t", "single_layer_v": "compound_prompt_projections_v",
                 "exchange_layer_t": "compound_exchange_t", "exchange_layer_v": "compound_exchange_v"}
    for name, d_in, d_out in heads["t"] + heads["v"]:
        names = [name] if share else [f"{per_layer[name]}.{k}" for k in range(depth - 1)]
        for n in names:
            shapes[f"{n}.weight"], shapes[f"{n}.bias"] = (d_out, d_in), (d_out,)
    state = {f"prompt_learner.{k}": (torch.randn(s, generator=g) * 0.1).requires_grad_() for k, s in shapes.items()}
    state["prompt_learner.token_prefix"] = torch.zeros(len(CLASSNAMES), 1, d_t)
    state["image_encoder.conv1.weight"] = clip_model.visual.conv1.weight.detach().clone()
    return state


def linear(state, name, x):
    return F.linear(x, state[f"prompt_learner.{name}.weight"], state[f"prompt_learner.{name}.bias"])


def atten(output, weight):  # trainers/bitp.py L424-434
    return torch.softmax(output @ weight.T, dim=1) @ output


def released_prompts(state, connect, n_ctx, depth, share):
    """(shallow vision prompt, deep text list, deep vision list), as CustomCLIP.forward builds them (L270-409)."""
    p = lambda name: state[f"prompt_learner.{name}"]  # noqa: E731
    ctx_t, ctx_v = p("ctx_t"), p("ctx_v")[:n_ctx]
    text_t = [p(f"compound_prompts_text.{k}") for k in range(depth - 1)]
    vision_v = [p(f"compound_prompts_visual.{k}") for k in range(depth - 1)]
    head = lambda shared, per_layer, k, x: linear(state, shared if share else f"{per_layer}.{k}", x)  # noqa: E731
    vision_t = [head("single_layer_t", "compound_prompt_projections_t", k, t) for k, t in enumerate(text_t)]
    text_v = [head("single_layer_v", "compound_prompt_projections_v", k, v) for k, v in enumerate(vision_v)] + [ctx_t]
    shared_ctx = linear(state, "proj_t", ctx_t)
    d_t, d_v = ctx_t.shape[1], ctx_v.shape[1]
    if connect == "add":
        return shared_ctx + ctx_v, text_t + text_v, vision_v + vision_t
    if connect == "atten":
        text = [atten(text_v[i], text_t[i]) + text_t[i] for i in range(len(text_t))]
        vision = [atten(vision_t[i], vision_v[i]) + vision_v[i] for i in range(len(vision_v))]
        return atten(shared_ctx, ctx_v) + ctx_v, text, vision
    if connect == "joint":
        text = [torch.stack([text_v[i], text_t[i]], dim=0).view(2 * n_ctx, d_t) for i in range(len(text_t))]
        vision = [torch.stack([vision_v[i], vision_t[i]], dim=0).view(2 * n_ctx, d_v) for i in range(len(vision_v))]
        return torch.stack([shared_ctx, ctx_v], dim=0).view(2 * n_ctx, d_v), text, vision
    text = [torch.stack([text_v[i], text_t[i]], dim=0).view(n_ctx, 2 * d_t) for i in range(len(text_t))]
    text = [head("exchange_layer_t", "compound_exchange_t", i, x) for i, x in enumerate(text)]
    vision = [torch.stack([vision_v[i], vision_t[i]], dim=0).view(n_ctx, 2 * d_v) for i in range(len(vision_v))]
    vision = [head("exchange_layer_v", "compound_exchange_v", i, x) for i, x in enumerate(vision)]
    return shared_ctx, text, vision


def released_logits(clip_model, state, connect, n_ctx, depth, share, image):
    """The released forward (TextEncoder, VisionTransformer_BITP, ResidualAttentionBlock_BITP) in fp32."""
    shallow, text_list, vision_list = released_prompts(state, connect, n_ctx, depth, share)
    slots = 2 * n_ctx if connect == "joint" else n_ctx  # bitp_length (trainers/bitp.py L35-40)
    prefix = CTX_INIT if connect != "joint" or 2 * n_ctx <= 4 else " ".join(["X"] * 2 * n_ctx)
    tokens = openai_clip().tokenize([f"{prefix} {name.replace('_', ' ')}." for name in CLASSNAMES])  # [n_cls, 77]
    with torch.no_grad():
        embedding = clip_model.token_embedding(tokens)  # [n_cls, 77, D_t]
    ctx = state["prompt_learner.ctx_t"].expand(len(CLASSNAMES), -1, -1)
    x = torch.cat([embedding[:, :1], ctx, embedding[:, 1 + n_ctx:]], dim=1) + clip_model.positional_embedding
    x = x.permute(1, 0, 2)  # [77, n_cls, D_t]
    counter = 0
    for i, block in enumerate(clip_model.transformer.resblocks):
        if i > 0 and text_list and not counter > len(text_list) - 2:
            deep = text_list[counter].expand(x.shape[1], -1, -1).permute(1, 0, 2)
            x = torch.cat([x[:1], deep, x[1 + slots:]], dim=0)
            counter += 1
        x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2))
    text = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip_model.text_projection  # [n_cls, E]

    v = clip_model.visual
    x = v.conv1(image).flatten(2).transpose(1, 2)  # [B, g*g, D_v]
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + v.positional_embedding
    x = v.ln_pre(torch.cat([x, shallow.expand(x.shape[0], -1, -1)], dim=1)).permute(1, 0, 2)  # [N, B, D_v]
    counter = 0
    for i, block in enumerate(v.transformer.resblocks):
        if i > 0 and vision_list and not counter > len(vision_list) - 1:
            deep = vision_list[counter].expand(x.shape[1], -1, -1).permute(1, 0, 2)
            x = torch.cat([x[: x.shape[0] - slots], deep], dim=0)
            counter += 1
        x = block(x)
    image_features = v.ln_post(x[0]) @ v.proj  # [B, E]
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return clip_model.logit_scale.exp() * image_features @ text.t()


def learner_from(backbone, state, connect, n_ctx, depth, share):
    torch.manual_seed(1)
    learner = BITPPromptLearner(backbone, CLASSNAMES, n_ctx, CTX_INIT, depth, connect, share, share)
    converted = LAYOUT.to_learner({k: v.detach() for k, v in state.items()}, learner.state_dict())
    learner.load_state_dict({k: v for k, v in converted.items() if k != "token_prefix"}, strict=True)
    return learner


CASES = [(connect, n_ctx, share) for connect in CONNECT_METHODS for n_ctx, share in [(1, True), (2, False)]]


@pytest.mark.parametrize("connect, n_ctx, share", CASES)
def test_released_checkpoint_gives_the_released_logits_and_gradients(tiny, connect, n_ctx, share):
    depth = 9
    state = released_state(tiny.model, n_ctx, depth, share)
    learner = learner_from(tiny, state, connect, n_ctx, depth, share)
    model = PromptedCLIP(tiny, learner)
    torch.manual_seed(0)
    image, label = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    expected = released_logits(tiny.model, state, connect, n_ctx, depth, share, image)
    logits = model(image)
    assert (logits - expected).abs().max() <= 1e-4 * expected.abs().max()
    F.cross_entropy(expected, label).backward()
    F.cross_entropy(logits, label).backward()
    for name, p in learner.named_parameters():
        released_grad = state[LAYOUT.release_key(name)].grad
        if name == "ctx_v":  # only the first b rows of the released ctx_v are read
            assert not released_grad[n_ctx:].any()
            released_grad = released_grad[:n_ctx]
        assert (p.grad - released_grad).norm() <= 1e-3 * released_grad.norm(), name
    # every released tensor that got a gradient has its place in the learner; the rest never reach the loss
    live = {LAYOUT.release_key(name) for name, _ in learner.named_parameters()}
    for key, value in state.items():
        if value.requires_grad and key not in live:
            assert value.grad is None or not value.grad.any(), key


def test_published_joint_recipe_registers_only_live_tensors_on_vit_b16():
    backbone = load_backbone("random-ViT-B/16")
    torch.manual_seed(0)
    learner = BITPPromptLearner(backbone, ["cat"], 1, CTX_INIT, 9, "joint", True, True)
    groups = {"ctx_t": 512, "proj_t": 393_984, "ctx_v": 768, "compound_prompts_text": 8 * 512,
              "compound_prompts_visual": 8 * 768, "single_layer_t": 393_984, "single_layer_v": 393_728}
    counts = {g: sum(p.numel() for n, p in learner.named_parameters() if n.split(".")[0] == g) for g in groups}
    assert counts == groups and sum(groups.values()) == 1_193_216
    # the release also trains proj_v (393,728), exchange_layer_t/v (524,800 + 1,180,416) and 76 unread ctx_v rows
    # (58,368): 2,157,312 scalars that never reach the loss


@pytest.mark.parametrize("connect, depth, text_layers, vision_layers", [
    ("add", 9, 11, 11), ("add", 3, 4, 4), ("add", 12, 11, 11), ("atten", 9, 7, 8), ("joint", 2, 0, 1),
    ("exchange", 3, 1, 2), ("add", 1, 0, 0)])
def test_deep_prompts_enter_the_released_layers(tiny, connect, depth, text_layers, vision_layers):
    learner = BITPPromptLearner(tiny, CLASSNAMES, 2, CTX_INIT, depth, connect, True, True)
    _, _, text_deep = learner.text_inputs()
    _, vision_deep = learner.vision_inputs()
    assert [layer for layer in range(1, 12) if text_deep.replace(layer, None) is not None] == \
        list(range(1, text_layers + 1))
    assert [layer for layer in range(1, 12) if vision_deep.replace(layer, None) is not None] == \
        list(range(1, vision_layers + 1))


def test_add_at_full_depth_and_shallow_register_no_heads(tiny):
    for depth in (1, 12):  # add at depth 12 fills every layer with the prompts themselves
        learner = BITPPromptLearner(tiny, CLASSNAMES, 2, CTX_INIT, depth, "add", True, True)
        assert learner.single_layer_t is None and learner.single_layer_v is None
        assert {n.split(".")[0] for n, _ in learner.named_parameters()} <= {
            "ctx_t", "proj_t", "ctx_v", "compound_prompts_text", "compound_prompts_visual"}


def test_exchange_pairs_rows_as_the_release_lays_them_out():
    a, b = torch.arange(4.0).view(2, 2), 10 + torch.arange(4.0).view(2, 2)  # two tokens each
    assert torch.equal(stacked(a, b, 2), torch.tensor([[0.0, 1, 2, 3], [10, 11, 12, 13]]))  # row 0 is a's 2 tokens
    assert torch.equal(stacked(a, b, 4), torch.cat([a, b]))  # joint: a's tokens, then b's


def test_joint_keeps_the_second_ctx_init_word_at_layer_0(tiny):
    learner = BITPPromptLearner(tiny, CLASSNAMES, 1, CTX_INIT, 9, "joint", True, True)
    embeddings, tokens, deep = learner.text_inputs()
    expected = tiny.model.token_embedding(openai_clip().tokenize([f"{CTX_INIT} cat."]))[0]
    torch.testing.assert_close(embeddings[0, 2:6], expected[2:6])  # "photo of a cat"
    assert deep.slots == slice(1, 3) and learner.ctx_t.shape == (1, 64)


def test_shared_deep_visual_prompts_start_from_ctx_v(tiny):
    learner = BITPPromptLearner(tiny, CLASSNAMES, 2, CTX_INIT, 9, "add", True, True)
    for q in learner.compound_prompts_visual:
        assert torch.equal(q, learner.ctx_v) and q.data_ptr() != learner.ctx_v.data_ptr()


@pytest.mark.parametrize("connect", CONNECT_METHODS)
def test_export_writes_the_released_shapes_and_loads_back(tiny, connect):
    share, n_ctx, depth = False, 2, 3
    released = released_state(tiny.model, n_ctx, depth, share)
    learner = learner_from(tiny, released, connect, n_ctx, depth, share)
    exported = LAYOUT.to_release(learner.state_dict())
    for key, value in exported.items():
        assert value.shape == released[key].shape, key  # a strict=False load in the release needs equal shapes
    if connect != "exchange":
        ctx_v = exported["prompt_learner.ctx_v"]
        assert torch.equal(ctx_v[:n_ctx], learner.ctx_v) and not ctx_v[n_ctx:].any()
    back = LAYOUT.to_learner(exported, learner.state_dict())
    assert back.keys() == learner.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in learner.state_dict().items())


def test_checkpoint_of_another_connect_method_is_rejected(tiny):
    released = LAYOUT.to_release(BITPPromptLearner(tiny, CLASSNAMES, 2, CTX_INIT, 3, "exchange", True, True)
                                 .state_dict())
    add = BITPPromptLearner(tiny, CLASSNAMES, 2, CTX_INIT, 3, "add", True, True)
    converted = LAYOUT.to_learner(released, add.state_dict())
    with pytest.raises(RuntimeError, match="Missing key.*ctx_v"):
        add.load_state_dict(converted)


def test_unknown_connect_method_is_refused(tiny):
    with pytest.raises(ValueError, match=r"CONNECT_METHOD must be one of \('add', 'atten', 'joint', 'exchange'\)"):
        BITPPromptLearner(tiny, CLASSNAMES, 2, CTX_INIT, 9, "concat", True, True)
