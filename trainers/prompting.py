"""Class prompts with learnable context slots, shared by every text-prompt method.

Each class prompt is ``"<prefix> <classname>."`` tokenized to 77 tokens; the b learnable context vectors replace the
token embeddings at positions ``1..b`` (right after SOS). Two initialisation conventions exist in the ecosystem:

* CoOp/CoCoOp (``ctx_words_set_length=True``): with CTX_INIT, b = number of words in CTX_INIT and the context starts
  from their embeddings; the prompt is ``"<CTX_INIT> <classname>."``.
* MaPLe/IVLP/BMIP (``ctx_words_set_length=False``): b = N_CTX; with CTX_INIT and b ≤ 4 the context starts from the
  embeddings of tokens 1..b of CTX_INIT and the prompt is ``"<CTX_INIT> <classname>."`` — so with "a photo of a" and
  b = 2 the learnable tokens replace "a photo" while "of a" stays fixed.

Without CTX_INIT the context is drawn from N(0, 0.02) and the prompt text is ``"X X … X <classname>."``.

Fixed class texts (``fill_template``) and the frozen CLIP's features of such texts (``frozen_text_features``: the
targets of KgCoOp, TCP and MMRL, CoPrompt's descriptions) live here too.
"""

import torch
import torch.nn as nn

from clip_patch.chunked import encode_text


def init_context(backbone, n_ctx, ctx_init, ctx_words_set_length):
    """Return ``(n_ctx, prefix_text, vectors [n_ctx, D] fp32)`` for the shallow text context."""
    text_encoder = backbone.text_encoder
    ctx_init = (ctx_init or "").replace("_", " ").strip()
    if ctx_init and ctx_words_set_length:
        n_ctx = len(ctx_init.split(" "))
    if ctx_init and (ctx_words_set_length or n_ctx <= 4):
        with torch.no_grad():
            embedding = text_encoder.embed(backbone.tokenize([ctx_init]).to(text_encoder.device))  # [1, L, D]
        return n_ctx, ctx_init, embedding[0, 1: 1 + n_ctx].float().clone()
    vectors = torch.empty(n_ctx, text_encoder.width)
    nn.init.normal_(vectors, std=0.02)
    return n_ctx, " ".join(["X"] * n_ctx), vectors


def check_prompt_depth(depth, num_layers, key, minimum=1):
    """Raise a clear error unless ``minimum <= depth <= num_layers`` (``key`` names the config key). ``num_layers``
    None: the encoder's depth is not known before it is loaded, so only the built encoder's check can refuse."""
    if num_layers is not None and not minimum <= depth <= num_layers:
        raise ValueError(f"{key} = {depth}; use {minimum}..{num_layers} for this backbone.")


def shared_layers(text_layers, vision_layers):
    """The layers both encoders have (how deep a method that works on both, layer by layer, can reach); None when
    either count is unknown."""
    if text_layers is None or vision_layers is None:
        return None
    return min(text_layers, vision_layers)


def check_coupled_depth(depth, text_layers, vision_layers, key):
    """:func:`check_prompt_depth` for prompts put into both encoders at every layer up to ``depth`` (MaPLe, BMIP,
    BITP, UPT and the methods built on their learners)."""
    check_prompt_depth(depth, shared_layers(text_layers, vision_layers), key)


def deep_prompt_list(count, n_ctx, width):
    """``count`` independent deep prompt sets [n_ctx, width], each drawn from N(0, 0.02)."""
    return nn.ParameterList([nn.Parameter(torch.randn(n_ctx, width) * 0.02) for _ in range(count)])


def replace_from_list(prompt_list):
    """A ``DeepPrompts.replace`` that puts ``prompt_list[l - 1]`` into the slots before layer l (None past its end)."""
    def replace(layer, probe):
        return prompt_list[layer - 1] if layer - 1 < len(prompt_list) else None
    return replace


def text_prompt_slots(n_ctx):
    """Positions of the b text prompt tokens: right after SOS."""
    return slice(1, 1 + n_ctx)


def vision_prompt_slots(image_encoder, n_ctx):
    """Positions of the b vision prompt tokens: appended after [CLS, patches]."""
    start = image_encoder.num_patch_tokens
    return slice(start, start + n_ctx)


def class_prompt_texts(prefix, classnames):
    return [f"{prefix} {name.replace('_', ' ')}." for name in classnames]


def fill_template(template, classnames):
    """One text per class: ``template`` with the class name ("_" read as " ") in its "{}"."""
    return [template.format(name.replace("_", " ")) for name in classnames]


def frozen_text_features(text_encoder, tokens):
    """The frozen ``text_encoder``'s L2-normalised features [n, E], fp32, of the token ids ``tokens`` [n, L] (no
    prompt): without gradient or autocast, encoded (in class chunks) and normalised in the encoder's own dtype."""
    with torch.no_grad(), torch.autocast(tokens.device.type, enabled=False):
        features = encode_text(text_encoder, text_encoder.embed(tokens), tokens)  # [n, E]
        return (features / features.norm(dim=-1, keepdim=True)).float()


class ClassPrompts(nn.Module):
    """Frozen parts of the class prompts; ``assemble(ctx)`` puts the context at positions 1..b.

    The buffers depend on the class names, so they are not saved in checkpoints (``persistent=False``): a trained
    context can be evaluated on any class set.
    """

    def __init__(self, backbone, classnames, prefix, n_ctx, texts=None):
        """``texts``: the class prompts, when they are not ``"<prefix> <classname>."`` (their words 1..b are the
        context slots)."""
        super().__init__()
        text_encoder = backbone.text_encoder
        texts = texts or class_prompt_texts(prefix, classnames)
        tokens = backbone.tokenize(texts).to(text_encoder.device)  # [n, L]
        with torch.no_grad():
            embedding = text_encoder.embed(tokens)  # [n, L, D]
        self.n_ctx = n_ctx
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("token_prefix", embedding[:, :1].clone(), persistent=False)  # SOS [n, 1, D]
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:].clone(), persistent=False)  # [n, L-1-b, D]

    @property
    def num_classes(self):
        return self.tokens.shape[0]

    def assemble(self, ctx):
        """ctx [b, D] (shared), [n, b, D] (per class) or None (b = 0) -> prompt embeddings [n, L, D]."""
        if ctx is None:
            return torch.cat([self.token_prefix, self.token_suffix], dim=1)
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.num_classes, -1, -1)
        ctx = ctx.to(self.token_prefix.dtype)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)
