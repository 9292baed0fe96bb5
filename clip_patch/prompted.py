"""One prompt-capable forward pass for CLIP's frozen text and vision transformers.

Every prompt method configures the same mechanism; nothing here knows which method is running.

* Shallow prompts are part of the input sequence: text prompts are already inside the token embeddings the method
  builds (positions ``1..1+b``); vision prompts are appended after ``[CLS, patches] + positional embedding``.
* Deep prompts: before layer ``l >= 1`` runs, the method's ``DeepPrompts.replace(l, probe)`` may return new values for
  the prompt slots (``[b, D]`` shared by the batch or ``[B, b, D]`` per sequence), or None to leave them as the
  previous layer produced them. ``probe`` gives the head-averaged attention probabilities that chosen queries of
  layer ``l`` pay to the slot keys, computed on the layer's incoming tokens — what BMIP's gates read — and the
  slots' incoming tokens themselves (``probe.incoming()``, e.g. to mix new values with the previous layer's outputs).
* Inserted tokens (``DeepPrompts.insert_at``): the slots may be absent from the sequence before a layer ``l``; before
  layer ``l`` runs, ``replace(l, None)`` gives their first values, inserted at ``slots.start`` (the sequence grows by
  ``b``; the pooled rows behind the slots move with them; a text tower's causal mask covers the longer sequence), and
  later layers replace them as above. The shared-prefix shortcut below does not apply to such sequences.

Two implementations of a layer, equal up to float rounding (tests compare them):

* fast (default): one LayerNorm + Q/K/V projection of the incoming tokens; if the slots are replaced, only the ``b``
  slot tokens are projected again; attention runs in ``F.scaled_dot_product_attention``. The probe computes only the
  softmax rows it is asked for, from the Q/K already at hand, and nothing when it is not asked. The last layer
  computes only the row that becomes the feature (CLS / EOT); its keys and values still come from every token.
  In the text encoder, a prefix that is identical in every class prompt (e.g. "<SOS> a photo of a", with deep prompts
  that are the same for every class: ``DeepPrompts.shared``) is encoded once; the class suffixes attend to its
  keys/values (under the causal mask the prefix never sees the suffixes, so this is exact). There ``replace`` gets
  ``probe=None``: prefix queries attend to prefix keys only, and a shared method reads no per-class row.
* Block branches (adapters): a method's ``BlockBranch`` ``branch(layer, block, x)`` may return a tensor the shape of
  ``x`` (the block's incoming tokens, after any slot replacement) that is added to the block's output: a residual
  branch parallel to the whole block. It must act on each token on its own (a token-wise function): then every
  shortcut below stays exact, since the fast path hands it only the tokens it computes (the CLS / EOT rows in the last
  layer, the shared prefix once and the suffixes apart, the tokens up to the last EOT).
* straightforward: the released code's computation — ``nn.MultiheadAttention`` with ``need_weights=True`` on the
  incoming tokens to read the gate, then CLIP's own block on the replaced tokens (attention computed twice).
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class BlockView(nn.Module):
    """One pre-LayerNorm transformer block as the prompted forward runs it, whatever family it comes from:

        x = x + ls_1(attn(ln_1(x)))        x = x + ls_2(mlp(ln_2(x)))

    ``attn`` is an ``nn.MultiheadAttention`` with one packed Q/K/V projection (``in_proj_weight``); ``ls_1``/``ls_2``
    are layer scales (identity for OpenAI CLIP); ``attn_mask`` is the additive causal mask [L, L] of a text tower (a
    non-persistent buffer, so it moves with the model and is never saved) or None; ``batch_first`` says which layout
    ``attn`` takes on the straightforward path. The view holds the family's own modules: no weight is copied.
    """

    def __init__(self, ln_1, attn, ln_2, mlp, attn_mask=None, ls_1=None, ls_2=None, batch_first=False):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = ln_1, attn, ln_2, mlp
        self.ls_1 = ls_1 if ls_1 is not None else nn.Identity()
        self.ls_2 = ls_2 if ls_2 is not None else nn.Identity()
        self.register_buffer("attn_mask", attn_mask, persistent=False)
        self.batch_first = batch_first


@dataclass
class TextTower:
    """What the prompted text forward needs of a family's text transformer (its own modules, not copies)."""

    token_embedding: nn.Embedding  # token ids -> [n, L, D]
    positional_embedding: torch.Tensor  # [L, D]
    blocks: list  # [BlockView], causal masks set
    ln_final: nn.Module
    text_projection: Optional[torch.Tensor]  # [D, E]; None: features are the D-wide pooled tokens
    pool_rows: Callable[[torch.Tensor], torch.Tensor]  # tokens [n, L] -> the row read as each feature, LongTensor [n]


@dataclass
class VisionTower:
    """What the prompted vision forward needs of a family's ViT: class token first, features read from it."""

    conv1: nn.Module  # patch embedding: [B, 3, H, W] -> [B, D, g, g]
    class_embedding: torch.Tensor  # [D]
    positional_embedding: torch.Tensor  # [1 + g*g, D]
    ln_pre: nn.Module
    blocks: list  # [BlockView]
    ln_post: nn.Module
    proj: Optional[torch.Tensor]  # [D, E]; None: features are the D-wide class token


@dataclass
class DeepPrompts:
    """Where a sequence's prompt slots are, and what a method puts into them at each deep layer."""

    slots: slice  # positions of the b prompt tokens in the sequence
    replace: Callable[[int, "AttentionProbe"], Optional[torch.Tensor]]  # (layer, probe) -> [b, D] | [B, b, D] | None
    shared: bool = False  # replace() gives one [b, D] for all sequences and accepts probe=None (module docstring)
    restrict: Optional[Callable[[slice], "DeepPrompts"]] = None  # classes -> these prompts for those classes only
    insert_at: Optional[int] = None  # layer before which the slots are inserted (absent before it); None: always there

    def for_classes(self, classes):
        """These deep prompts for the class prompts ``classes`` (a slice of the class axis) only: what each chunk of a
        class-chunked text encoding gets (clip_patch/chunked.py). A method whose ``replace`` reads per-class data
        (e.g. one query row per class) gives ``restrict``; shared prompts are the same for every class; other
        per-sequence prompts cannot be told which classes they serve, so they refuse."""
        if self.restrict is not None:
            return self.restrict(classes)
        if self.shared:
            return self
        raise ValueError("These per-class deep text prompts give no DeepPrompts.restrict, so they cannot be encoded "
                         "in class chunks: give restrict, or set MODEL.TEXT_CHUNK_CLASSES 0.")


# (layer, block, x [B, N, D] the block's incoming tokens) -> [B, N, D] added to the block's output, or None (module
# docstring: token-wise only).
BlockBranch = Callable[[int, BlockView, torch.Tensor], Optional[torch.Tensor]]


def _with_branch(out, branch, layer, block, x):
    """The block output ``out`` plus the branch's value on the block's incoming tokens ``x`` (same rows)."""
    if branch is None:
        return out
    extra = branch(layer, block, x)
    return out if extra is None else out + extra.to(out.dtype)


class AttentionProbe:
    """Attention that queries of one layer pay to the prompt-slot keys, on the layer's incoming tokens x [B, N, D]."""

    def __init__(self, slots, x):
        self.slots, self.x = slots, x

    def incoming(self):
        """The slots' incoming tokens [B, b, D]: what the previous layer made of them."""
        return self.x[:, self.slots]

    def to_slots(self, rows):
        """Head-averaged softmax probabilities at the slot columns, averaged over query ``rows``.

        ``rows``: a slice (the same query rows for every sequence) or a LongTensor [B] (one query row per sequence).
        Returns [B, b]. The caller decides whether to detach.
        """
        raise NotImplementedError


class _FastProbe(AttentionProbe):
    """Reads the probabilities from the layer's own Q/K, projected once on first use and kept for the layer."""

    def __init__(self, slots, block, x, attn_mask):
        super().__init__(slots, x)
        self.block, self.attn_mask = block, attn_mask  # mask: [N, N] | None
        self.qkv = None  # 3 x [B, H, N, hd], filled on first use

    def to_slots(self, rows):
        if self.qkv is None:
            self.qkv = _qkv(self.block, self.block.ln_1(self.x))
        q, k, _ = self.qkv
        if isinstance(rows, slice):
            q = q[:, :, rows]  # [B, H, R, hd]
            mask = None if self.attn_mask is None else self.attn_mask[rows]  # [R, N]
        else:
            batch = torch.arange(q.shape[0], device=q.device)
            q = q[batch, :, rows].unsqueeze(2)  # [B, H, 1, hd]
            mask = None if self.attn_mask is None else self.attn_mask[rows].unsqueeze(1).unsqueeze(1)  # [B,1,1,N]
        logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5  # [B, H, R, N]
        if mask is not None:
            logits = logits + mask
        probs = logits.float().softmax(dim=-1)[..., self.slots]  # [B, H, R, b]
        return probs.mean(dim=(1, 2))  # [B, b]


class _NaiveProbe(AttentionProbe):
    def __init__(self, slots, block, x):
        super().__init__(slots, x)
        self.block = block

    def to_slots(self, rows):
        h = _attn_layout(self.block, self.block.ln_1(self.x))  # [N, B, D] (or [B, N, D] for batch-first attention)
        mask = _block_mask(self.block, self.x.shape[1], h)
        _, weights = self.block.attn(h, h, h, need_weights=True, average_attn_weights=True, attn_mask=mask)
        weights = weights.float()  # [B, N, N], averaged over heads
        if isinstance(rows, slice):
            return weights[:, rows, self.slots].mean(dim=1)  # [B, b]
        batch = torch.arange(weights.shape[0], device=weights.device)
        return weights[batch, rows][:, self.slots]  # [B, b]


def _attn_layout(block, x):
    """x [B, N, D] in the layout the block's ``nn.MultiheadAttention`` takes: [N, B, D] unless it is batch-first."""
    return x if block.batch_first else x.transpose(0, 1)


def _block_mask(block, n_tokens, like):
    """The block's additive causal mask cropped to the (possibly truncated) sequence, or None (vision); a sequence
    longer than the mask (inserted tokens) gets the causal mask of its own length."""
    if block.attn_mask is None:
        return None
    if n_tokens > block.attn_mask.shape[0]:
        return torch.full((n_tokens, n_tokens), float("-inf"), dtype=like.dtype, device=like.device).triu(1)
    return block.attn_mask[:n_tokens, :n_tokens].to(dtype=like.dtype, device=like.device)


def _qkv(block, h):
    """[B, N, D] -> q, k, v each [B, H, N, D/H] with the block's own projection."""
    B, N, D = h.shape
    H = block.attn.num_heads
    qkv = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias)  # [B, N, 3D]
    return qkv.view(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)


def _with_slots(x, slots, values):
    """x [B, N, D] with positions ``slots`` set to values ([b, D] or [B, b, D]); out of place (autograd-safe)."""
    values = values.to(x.dtype).expand(x.shape[0], -1, -1)  # [B, b, D]
    return torch.cat([x[:, : slots.start], values, x[:, slots.stop:]], dim=1)


def fast_block(block, x, deep, layer, out_rows=None, branch=None):
    """One block (a :class:`BlockView`) on x [B, N, D], replacing prompt slots first if ``deep`` says so, plus the
    ``branch`` (a :data:`BlockBranch`) on its incoming tokens.

    ``out_rows`` (LongTensor [B], one row per sequence) computes only those rows' outputs -> [B, 1, D]: in the last
    layer only the CLS / EOT token reaches the features, and keys/values still come from every token.
    """
    mask = _block_mask(block, x.shape[1], x)
    qkv = None
    if deep is not None:
        probe = _FastProbe(deep.slots, block, x, mask)
        values = deep.replace(layer, probe)
        if values is not None:
            x = _with_slots(x, deep.slots, values)
            if probe.qkv is not None:  # reuse the projections of every token that did not change
                s = deep.slots
                fresh = _qkv(block, block.ln_1(x[:, s]))  # 3 x [B, H, b, hd]
                qkv = [torch.cat([old[:, :, : s.start], new, old[:, :, s.stop:]], dim=2)
                       for old, new in zip(probe.qkv, fresh)]
        else:
            qkv = probe.qkv
    if qkv is None:
        qkv = _qkv(block, block.ln_1(x))
    q, k, v = qkv  # [B, H, N, hd]
    if out_rows is not None:
        batch = torch.arange(x.shape[0], device=x.device)
        x = x[batch, out_rows].unsqueeze(1)  # [B, 1, D]
        q = q[batch, :, out_rows].unsqueeze(2)  # [B, H, 1, hd]
        mask = None if mask is None else mask[out_rows].unsqueeze(1).unsqueeze(1)  # [B, 1, 1, N]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, N or 1, hd]
    out = out.transpose(1, 2).flatten(2)  # [B, N or 1, D]
    h = x + block.ls_1(block.attn.out_proj(out))
    return _with_branch(h + block.ls_2(block.mlp(block.ln_2(h))), branch, layer, block, x)


def naive_block(block, x, deep, layer, branch=None):
    """The straightforward computation: attention weights read on the incoming tokens, then the block as the family
    runs it (its ``nn.MultiheadAttention`` in its own layout, with ``need_weights=True`` as the released code has it)."""
    if deep is not None:
        values = deep.replace(layer, _NaiveProbe(deep.slots, block, x))
        if values is not None:
            x = _with_slots(x, deep.slots, values)
    h = _attn_layout(block, x)  # [N, B, D] (or [B, N, D])
    mask = _block_mask(block, x.shape[1], h)
    h = h + block.ls_1(block.attn(block.ln_1(h), block.ln_1(h), block.ln_1(h), need_weights=True, attn_mask=mask)[0])
    h = h + block.ls_2(block.mlp(block.ln_2(h)))
    return _with_branch(_attn_layout(block, h), branch, layer, block, x)


def shared_prefix_length(x, eot, deep):
    """How many leading positions of x [n, L, D] are identical in every sequence, before any EOT.

    Under the causal mask those positions never see the rest, so they stay identical at every layer as long as the
    deep prompts put the same values into every sequence (``DeepPrompts.shared``) and their slots lie in the prefix
    (and are there from the start: 0 for inserted slots).
    """
    if x.shape[0] < 2 or (deep is not None and (not deep.shared or deep.insert_at is not None)):
        return 0
    same = (x == x[:1]).all(dim=2).all(dim=0)  # [L]
    length = min(int(same.int().cumprod(0).sum()), int(eot.min()))
    if deep is not None and length < deep.slots.stop:
        return 0
    return length


def _prefix_suffix_block(block, prefix, suffix, out_rows=None, branch=None, layer=0):
    """One block on sequences split into a prefix [1, P, D] shared by all n and their suffixes [n, S, D].

    The prefix is computed once; the suffixes attend to its keys/values. With ``out_rows`` (LongTensor [n], rows of
    the full sequence, all in the suffix) only those rows are computed and returned as the suffix [n, 1, D].
    ``branch`` (a token-wise :data:`BlockBranch`) is added to both parts.
    """
    n, P = suffix.shape[0], prefix.shape[1]
    mask = _block_mask(block, P + suffix.shape[1], suffix)  # [N, N], causal
    qp, kp, vp = _qkv(block, block.ln_1(prefix))  # [1, H, P, hd]
    qs, ks, vs = _qkv(block, block.ln_1(suffix))  # [n, H, S, hd]
    k = torch.cat([kp.expand(n, -1, -1, -1), ks], dim=2)  # [n, H, N, hd]
    v = torch.cat([vp.expand(n, -1, -1, -1), vs], dim=2)  # [n, H, N, hd]
    if out_rows is None:
        out_p = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask[:P, :P])  # [1, H, P, hd]
        h = prefix + block.ls_1(block.attn.out_proj(out_p.transpose(1, 2).flatten(2)))
        prefix = _with_branch(h + block.ls_2(block.mlp(block.ln_2(h))), branch, layer, block, prefix)
        suffix_mask = mask[P:]  # [S, N]
    else:
        batch = torch.arange(n, device=suffix.device)
        suffix = suffix[batch, out_rows - P].unsqueeze(1)  # [n, 1, D]
        qs = qs[batch, :, out_rows - P].unsqueeze(2)  # [n, H, 1, hd]
        suffix_mask = mask[out_rows].unsqueeze(1).unsqueeze(1)  # [n, 1, 1, N]
    out_s = F.scaled_dot_product_attention(qs, k, v, attn_mask=suffix_mask)  # [n, H, S or 1, hd]
    h = suffix + block.ls_1(block.attn.out_proj(out_s.transpose(1, 2).flatten(2)))
    return prefix, _with_branch(h + block.ls_2(block.mlp(block.ln_2(h))), branch, layer, block, suffix)


def run_blocks_shared_prefix(blocks, x, prefix_length, deep=None, out_rows=None, branch=None):
    """The fast path of :func:`run_blocks` for x [n, N, D] whose first ``prefix_length`` positions are the same in every
    sequence (see :func:`shared_prefix_length`): that prefix is computed once. Returns the ``out_rows`` [n, D]."""
    prefix, suffix = x[:1, :prefix_length], x[:, prefix_length:]  # [1, P, D], [n, S, D]
    last = len(blocks) - 1
    for layer, block in enumerate(blocks):
        if deep is not None and layer > 0:
            values = deep.replace(layer, None)  # shared: the same [b, D] for every sequence, no probe
            if values is not None:
                prefix = _with_slots(prefix, deep.slots, values)
        prefix, suffix = _prefix_suffix_block(block, prefix, suffix, out_rows if layer == last else None, branch,
                                              layer)
    return suffix[:, 0]  # [n, D]


def insert_slots(x, deep, layer, out_rows=None):
    """x [B, N, D] with the slots' first values (``deep.replace(layer, None)``) inserted at ``deep.slots.start`` ->
    [B, N + b, D], and ``out_rows`` (LongTensor [B] | None) moved past the inserted slots where they lie behind them."""
    values = deep.replace(layer, None).to(x.dtype).expand(x.shape[0], -1, -1)  # [B, b, D]
    start = deep.slots.start
    x = torch.cat([x[:, :start], values, x[:, start:]], dim=1)
    if out_rows is not None:
        out_rows = torch.where(out_rows >= start, out_rows + values.shape[1], out_rows)
    return x, out_rows


def _layer_deep(deep, layer):
    """The deep prompts that replace slots before ``layer``: none before layer 1, nor where the slots are absent or
    are inserted (:func:`insert_slots`)."""
    if deep is None or layer == 0 or (deep.insert_at is not None and layer <= deep.insert_at):
        return None
    return deep


def run_blocks(blocks, x, deep=None, straightforward=False, out_rows=None, branch=None):
    """Run blocks (:class:`BlockView`) on x [B, N, D]; deep prompts may replace slots before every layer l >= 1 (or
    be inserted before a layer: ``DeepPrompts.insert_at``), and a :data:`BlockBranch` may add to every block's output.

    Returns [B, N, D] (N grown by inserted slots), or with ``out_rows`` (LongTensor [B]) the rows the caller reads,
    [B, D]: the fast path then computes only those rows in the last layer.
    """
    last = len(blocks) - 1
    for layer, block in enumerate(blocks):
        if deep is not None and layer == deep.insert_at:
            x, out_rows = insert_slots(x, deep, layer, out_rows)
        layer_deep = _layer_deep(deep, layer)
        if straightforward:
            x = naive_block(block, x, layer_deep, layer, branch)
        else:
            x = fast_block(block, x, layer_deep, layer, out_rows if layer == last else None, branch)
    if out_rows is None:
        return x
    if straightforward:
        return x[torch.arange(x.shape[0], device=x.device), out_rows]  # [B, D]
    return x[:, 0]  # [B, D]


class PromptedTextEncoder(nn.Module):
    """A CLIP text transformer (a :class:`TextTower`) on prompt embeddings; returns text features [n, E].

    The fast path runs only the first max(pooled row)+1 positions: under the causal mask the later tokens never reach
    the pooled (EOT) output, so the features are identical.
    """

    def __init__(self, tower):
        super().__init__()
        self.token_embedding = tower.token_embedding
        self.positional_embedding = tower.positional_embedding
        self.blocks = nn.ModuleList(tower.blocks)
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.pool_rows = tower.pool_rows
        self.width = self.positional_embedding.shape[1]
        self.num_layers = len(self.blocks)

    @property
    def dtype(self):
        """The dtype the frozen weights compute in (fp16 after PREC fp16's cast)."""
        return self.blocks[0].attn.in_proj_weight.dtype

    @property
    def device(self):
        return self.positional_embedding.device

    def embed(self, tokens):
        """Token embeddings [n, L, D] of tokenized text [n, L] (no positional embedding)."""
        return self.token_embedding(tokens).to(self.dtype)

    def project(self, pooled):
        """Pooled rows [n, D] -> features [n, E]."""
        pooled = self.ln_final(pooled)
        return pooled if self.text_projection is None else pooled @ self.text_projection

    def forward(self, embeddings, tokens, deep=None, straightforward=False, branch=None):
        """embeddings [n, L, D] (prompt tokens in place), tokens [n, L] (to find EOT) -> features [n, E]; L is the
        context length or less (a sequence already cut after its last pooled row); ``branch``: a
        :data:`BlockBranch` or None."""
        eot = self.pool_rows(tokens)  # [n]
        x = embeddings.to(self.dtype) + self.positional_embedding[: embeddings.shape[1]].to(self.dtype)  # [n, L, D]
        if straightforward:
            x = run_blocks(self.blocks, x, deep, straightforward=True, out_rows=eot, branch=branch)  # [n, D] (EOT)
        else:
            x = x[:, : int(eot.max()) + 1]
            prefix_length = shared_prefix_length(x, eot, deep)
            if prefix_length > 1:
                x = run_blocks_shared_prefix(self.blocks, x, prefix_length, deep, eot, branch)  # [n, D]
            else:
                x = run_blocks(self.blocks, x, deep, out_rows=eot, branch=branch)  # [n, D] (EOT tokens)
        return self.project(x)  # [n, E]


class PromptedImageEncoder(nn.Module):
    """A CLIP vision transformer (a :class:`VisionTower`) with optional shallow prompts appended after the patches and
    deep prompts."""

    def __init__(self, tower):
        super().__init__()
        self.conv1 = tower.conv1
        self.class_embedding = tower.class_embedding
        self.positional_embedding = tower.positional_embedding
        self.ln_pre = tower.ln_pre
        self.blocks = nn.ModuleList(tower.blocks)
        self.ln_post = tower.ln_post
        self.proj = tower.proj
        self.width = self.positional_embedding.shape[1]
        self.num_layers = len(self.blocks)
        self.num_patch_tokens = self.positional_embedding.shape[0]  # CLS + patches

    @property
    def dtype(self):
        return self.conv1.weight.dtype

    def tokens(self, image, shallow=None):
        """image [B, 3, H, W] -> the first block's input [B, 1+g*g(+b), D]: [CLS, patches] + positional embedding,
        then the shallow prompts [b, D] | [B, b, D] (if any), after ln_pre."""
        x = self.conv1(image.to(self.dtype))  # [B, D, g, g]
        x = x.flatten(2).transpose(1, 2)  # [B, g*g, D]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [B, 1, D]
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # [B, 1+g*g, D]
        if shallow is not None:
            x = torch.cat([x, shallow.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)  # [B, 1+g*g+b, D]
        return self.ln_pre(x)

    def project(self, cls):
        """Class-token outputs [B, D] -> features [B, E]."""
        x = self.ln_post(cls)
        return x if self.proj is None else x @ self.proj  # [B, E]

    def forward(self, image, shallow=None, deep=None, straightforward=False, branch=None):
        """image [B, 3, H, W]; shallow [b, D] | [B, b, D] | None; ``branch``: a :data:`BlockBranch` or None ->
        features [B, E]."""
        x = self.tokens(image, shallow)
        cls_rows = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        x = run_blocks(self.blocks, x, deep, straightforward, out_rows=cls_rows, branch=branch)  # [B, D] (CLS)
        return self.project(x)  # [B, E]

    def with_slot_outputs(self, image, deep, straightforward=False, branch=None):
        """The features [B, E] and the last layer's outputs at the deep prompt slots after ln_post, [B, b, D] (what
        a method reads from its own tokens). Every row of the last layer is computed."""
        x = run_blocks(self.blocks, self.tokens(image), deep, straightforward, branch=branch)  # [B, N, D]
        return self.project(x[:, 0]), self.ln_post(x[:, deep.slots])  # [B, E], [B, b, D]


class OpaqueTextEncoder(nn.Module):
    """A text tower the prompted forward cannot enter (Hugging Face towers, bidirectional or differently pooled
    text), run as the family runs it on token ids; it takes no prompt embeddings. ``why`` says what it is."""

    def __init__(self, model, why):
        super().__init__()
        self.model = model  # the family's model: model.encode_text(tokens [n, L]) -> [n, E]
        self.why = why

    @property
    def device(self):
        return next(self.model.parameters()).device

    def forward(self, embeddings, tokens, deep=None, straightforward=False, branch=None):
        if embeddings is not None or deep is not None or branch is not None:
            raise ValueError(f"Text prompts and adapters need a text tower the prompted forward serves; this one is "
                             f"{self.why}.")
        return self.model.encode_text(tokens)  # [n, E]


class OpaqueImageEncoder(nn.Module):
    """An image tower the prompted forward cannot enter (OpenAI's ResNets, open_clip's timm towers, attention- or
    average-pooled ViTs), run as the family runs it; it takes no prompts. ``why`` says what it is, for errors."""

    def __init__(self, visual, why):
        super().__init__()
        self.visual = visual
        self.why = why

    @property
    def dtype(self):
        """The dtype images enter in: that of the tower's first convolution (its patch or stem embedding)."""
        first_conv = next((m for m in self.visual.modules() if isinstance(m, nn.Conv2d)), None)
        return first_conv.weight.dtype if first_conv is not None else next(self.visual.parameters()).dtype

    def forward(self, image, shallow=None, deep=None, straightforward=False, branch=None):
        if shallow is not None or deep is not None or branch is not None:
            raise ValueError(f"Visual prompts and adapters need a ViT backbone the prompted forward serves; this image "
                             f"encoder is {self.why}.")
        return self.visual(image.to(self.dtype))  # [B, E]
