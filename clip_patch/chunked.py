"""Class-chunked text encoding: memory flat in the number of classes, features and gradients those of one pass.

Every text-prompt method encodes all n_cls class prompts at each step, and the activations its backward pass needs
grow linearly with n_cls (ImageNet: 1000 prompts). :func:`encode_text` encodes the classes in chunks of C:

* with gradients, each chunk runs under ``torch.utils.checkpoint`` (non-reentrant, RNG state preserved): only its
  inputs and its features [C, E] are kept, and its activations are recomputed when the backward pass reaches it, so
  the peak holds one chunk's activations. The recomputation repeats the chunk's forward exactly (same inputs, same
  operations, same autocast state, same RNG state), so the backward pass sees the activations the forward made.
* on the fast path the embeddings are first cut to the positions up to the last EOT token (what the encoder reads
  anyway; the EOT rows are the backbone family's pooled rows, ``text_encoder.pool_rows``), so what stays linear in
  n_cls, the chunk inputs kept for the recomputation and their gradients, is [n_cls, l, D] with l the longest
  prompt, not [n_cls, 77, D].
* without gradients (evaluation), or when nothing on the text side is trained (VPT, zero-shot), the chunks run one
  after the other; nothing is recomputed. The text side is trained through the prompt embeddings, deep prompts or a
  per-block branch (adapters).

Exactness: the features and gradients are the one-pass encoding's up to fp32 rounding, not bit for bit: a chunk's
matrix products run on C rows instead of n (kernels may block and sum differently), and a tensor shared by all
classes (a shared context, a deep prompt) sums its per-class gradient contributions chunk by chunk.

The class prompts are built once (the learner's ``text_inputs()``), outside the chunks; a chunk gets rows
``classes`` of the embeddings and tokens and the deep prompts restricted to its classes
(``DeepPrompts.for_classes``). A deep prompt's ``replace`` runs once per chunk and again in its recomputation, so it
must be a pure function of the parameters and the probe (no random draw, no state update): every method here is.

Setting (``MODEL.TEXT_CHUNK_CLASSES``): ``AUTO`` (-1) chunks by ``AUTO_CHUNK_CLASSES`` classes, 0 never chunks, C > 0
chunks by C. A class count that fits one chunk is encoded in one pass.
"""
import torch
from torch.utils.checkpoint import checkpoint

AUTO = -1
AUTO_CHUNK_CLASSES = 100  # auto: chunks of 100 classes, i.e. on above 100 classes (ImageNet, SUN397, Food101, ...)


def check_chunk_setting(setting, key="MODEL.TEXT_CHUNK_CLASSES"):
    """Raise a clear error unless ``setting`` is -1 (auto), 0 (never) or a positive class count."""
    if not isinstance(setting, int) or setting < AUTO:
        raise ValueError(f"{key} = {setting!r}; use -1 (auto: chunks of {AUTO_CHUNK_CLASSES} classes), "
                         f"0 (never chunk) or a positive number of classes per chunk.")


def chunk_size(setting, n_cls):
    """Classes per chunk for ``setting`` (see the module docstring) and ``n_cls`` classes; 0: one pass."""
    check_chunk_setting(setting)
    size = AUTO_CHUNK_CLASSES if setting == AUTO else setting
    return 0 if size == 0 or n_cls <= size else size


def class_chunks(n_cls, size):
    """Slices of the class axis, ``size`` classes each (the last one may be shorter)."""
    return [slice(start, min(start + size, n_cls)) for start in range(0, n_cls, size)]


def eot_cut(embeddings, tokens, pooled_rows):
    """embeddings [n, L, D], tokens [n, L] -> their first max(pooled row)+1 positions (all the fast text path reads;
    ``pooled_rows`` [n]: each prompt's EOT row, as the backbone family pools it), the embeddings copied: the chunks
    keep and backpropagate into [n, l, D], not the assembled [n, L, D] (l: 14-26 of L = 77 for the published
    contexts). Every family's pooled row is its first EOT token, so the cut sequences pool the same rows."""
    length = int(pooled_rows.max()) + 1
    return embeddings[:, :length].contiguous(), tokens[:, :length]  # [n, l, D], [n, l]


def encode_text(text_encoder, embeddings, tokens, deep=None, straightforward=False, chunk_classes=AUTO, branch=None):
    """``text_encoder(embeddings [n, L, D], tokens [n, L], deep, straightforward, branch)`` -> features [n, E], in
    chunks of classes when ``chunk_classes`` says so (module docstring): the same features, a peak of one chunk.
    ``embeddings`` None: a text tower that takes token ids only (``OpaqueTextEncoder``), whose chunks get their token
    rows. ``branch`` (a learner's per-block residual branch, e.g. adapters) is token-wise, the same for every chunk."""
    size = chunk_size(chunk_classes, tokens.shape[0])
    if not size:
        return text_encoder(embeddings, tokens, deep, straightforward, branch)
    trained = (embeddings is not None and embeddings.requires_grad) or deep is not None or branch is not None
    recompute = torch.is_grad_enabled() and trained  # else there is no graph to keep
    if embeddings is not None and not straightforward:  # (rebinding frees the assembled [n, L, D] unless the
        embeddings, tokens = eot_cut(embeddings, tokens, text_encoder.pool_rows(tokens))  # caller holds it)
    features = []
    for classes in class_chunks(tokens.shape[0], size):
        chunk = (None if embeddings is None else embeddings[classes], tokens[classes],
                 None if deep is None else deep.for_classes(classes), straightforward, branch)
        if recompute:
            features.append(checkpoint(text_encoder, *chunk, use_reentrant=False, preserve_rng_state=True))
        else:
            features.append(text_encoder(*chunk))  # [C, E]
    return torch.cat(features)  # [n, E]
