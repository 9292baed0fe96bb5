"""The vocabulary tokens nearest to each learned text context vector (CoOp's ``interpret_prompt.py``, generalised).

For every learnable text context of a trained model — the shallow context (``ctx`` of CoOp / CoCoOp / IVLP /
MaPLe / PromptSRC, ``ctx_t`` of BMIP / PromptSRC_BMIP; one set per class with CoOp's CSC, one per prompt with ProDA)
and the deep text prompts (``compound_prompts_text`` of MaPLe / BMIP / PromptSRC_BMIP, ``deep_text`` of IVLP /
PromptSRC), layer by layer — it lists the k tokens of the model's own token-embedding table [V, D] at the smallest
Euclidean distance, with the distances, as CoOp's script does (``torch.cdist`` against every row, special tokens
included; computed from the differences, so a vector equal to a token embedding is at distance 0 exactly). Offline:
only the loaded model is used.

The shallow context replaces token embeddings, so its neighbours are directly comparable. A deep prompt is written
into the residual stream before layer l; it has the token embeddings' width but lives in that layer's space, so its
neighbours are only indicative. BMIP inserts a gated blend of its deep prompt with the projected vision prompt
(``analysis.gates`` shows the gate); CoCoOp adds a per-image shift to its context.

    python -m analysis.interpret_prompt --config-file configs/trainers/CoOp/vit_b16.yaml \\
        --dataset-config-file configs/datasets/dtd.yaml --root $DATA --model-dir output/.../seed1 [--topk 5]
"""
from __future__ import annotations  # (the torch.Tensor annotations below stay unevaluated)

import sys
from dataclasses import dataclass

from analysis.cli import build_parser, fail, load_trained

# torch and CLIP are imported where they are used: `python -m analysis.interpret_prompt --help` answers at once.

SHALLOW_CONTEXT = ("ctx", "ctx_t")  # learner attributes holding the shallow text context [b, D] | [n, b, D]
DEEP_TEXT_PROMPTS = ("compound_prompts_text", "deep_text")  # learner attributes: lists of [b, D], used at l = k + 1


@dataclass
class ContextSet:
    """One set of context vectors and their nearest tokens."""

    title: str
    vectors: torch.Tensor  # [b, D]
    indices: torch.Tensor = None  # [b, k] token ids, nearest first
    distances: torch.Tensor = None  # [b, k]


def context_sets(learner, classnames=None):
    """Every learnable text context of ``learner`` as ContextSets (shallow first, then deep by layer)."""
    sets = []
    for name in SHALLOW_CONTEXT:
        ctx = getattr(learner, name, None)
        if ctx is None:
            continue
        if ctx.dim() == 2:
            sets.append(ContextSet(f"shallow text context `{name}` (layer 0)", ctx))
        else:  # several contexts [n, b, D]: one per class (CoOp's CSC) or one per prompt (ProDA)
            sets += [ContextSet(f"shallow text context `{name}` of {label} (layer 0)", ctx[i])
                     for i, label in enumerate(context_set_labels(learner, ctx.shape[0], classnames))]
    for name in DEEP_TEXT_PROMPTS:
        for k, prompt in enumerate(getattr(learner, name, None) or []):
            sets.append(ContextSet(f"deep text prompt `{name}.{k}` (layer {k + 1})", prompt))
    if not sets:
        raise ValueError(f"{type(learner).__name__} has no learnable text context to interpret; this tool applies to "
                         f"learners with a learned text context (`ctx` or `ctx_t`) or deep text prompts, e.g. CoOp, "
                         f"CoCoOp, KgCoOp, TCP, ProDA, IVLP (with text prompts), MaPLe, BMIP, BITP, UPT, PromptSRC")
    return sets


def context_set_labels(learner, count, classnames=None):
    """What each of a learner's ``count`` contexts [count, b, D] belongs to, from its ``CONTEXT_SETS``
    ("class": one per class, named when ``classnames`` are given; "prompt": one per learned prompt)."""
    kind = getattr(learner, "CONTEXT_SETS", None)
    if kind == "class":
        return [f"class '{c}'" for c in (classnames or [str(i) for i in range(count)])]
    if kind == "prompt":
        return [f"prompt {i}" for i in range(count)]
    raise ValueError(f"{type(learner).__name__} holds {count} text contexts but does not say what they belong to: "
                     f"set its CONTEXT_SETS to 'class' or 'prompt'")


def nearest_tokens(vectors, token_embedding, k):
    """(distances [n, k], token ids [n, k]) of the k rows of token_embedding [V, D] nearest to vectors [n, D]."""
    import torch

    distance = torch.cdist(vectors.detach().float(), token_embedding.detach().float(),
                           compute_mode="donot_use_mm_for_euclid_dist")  # [n, V], exact (no |x|^2+|y|^2-2xy)
    distances, indices = distance.topk(k, dim=1, largest=False)  # ascending
    return distances, indices


def interpret(learner, token_embedding, k=5, classnames=None):
    """The ContextSets of ``learner`` with their k nearest tokens filled in."""
    sets = context_sets(learner, classnames)
    for s in sets:
        s.distances, s.indices = nearest_tokens(s.vectors, token_embedding, k)
    return sets


def token_text(decoder, index):
    """A token id as the BPE tokenizer spells it (``</w>`` ends a word), or ``#id`` outside its vocabulary."""
    return decoder.get(index, f"#{index}")


def format_report(sets, decoder, vocabulary_shape):
    lines = [f"Nearest tokens by Euclidean distance in the token-embedding space "
             f"[{vocabulary_shape[0]} x {vocabulary_shape[1]}] ('</w>' ends a word):"]
    for s in sets:
        lines.append(f"\n{s.title}: {s.vectors.shape[0]} vectors, norms "
                     + ", ".join(f"{v:.3f}" for v in s.vectors.detach().float().norm(dim=1).tolist()))
        for row, (ids, dists) in enumerate(zip(s.indices.tolist(), s.distances.tolist())):
            words = "  ".join(f"{token_text(decoder, i)} ({d:.4f})" for i, d in zip(ids, dists))
            lines.append(f"  {row + 1}: {words}")
    return "\n".join(lines)


def main(argv=None):
    parser = build_parser("python -m analysis.interpret_prompt", __doc__.split("\n")[0])
    parser.add_argument("--topk", type=int, default=5, help="nearest tokens per context vector (default 5)")
    args = parser.parse_args(argv)
    if args.topk < 1:
        fail(f"--topk must be >= 1, got {args.topk}")
    trainer = load_trained(args)
    learner = getattr(trainer.model, "prompt_learner", None)
    if learner is None:
        fail(f"--trainer {trainer.cfg.TRAINER.NAME} has no prompt learner to interpret: pass the --trainer, "
             "--config-file and --model-dir of a prompt-learning run")
    token_embedding = trainer.model.text_encoder.token_embedding.weight  # [V, D]
    try:
        sets = interpret(learner, token_embedding, args.topk, trainer.dm.dataset.classnames)
    except ValueError as err:
        fail(str(err))
    print(format_report(sets, trainer.backbone.decoder, tuple(token_embedding.shape)))
    return sets


if __name__ == "__main__":
    main(sys.argv[1:])
