"""BITP (the BMIP authors' predecessor of BMIP, released with it): bi-directional deep prompts joined by a fixed rule.

Both modalities own deep prompts, text P_k = ``compound_prompts_text[k]`` and vision
Q_k = ``compound_prompts_visual[k]`` (k = 0..J-2), and a linear head maps each into the other's width: G_tv
(text -> vision, ``single_layer_t``) and G_vt (vision -> text, ``single_layer_v``), or one head per layer when SHARE.*
is False. Where BMIP blends the two with
attention gates, BITP joins them by ``TRAINER.BITP.CONNECT_METHOD`` (b = N_CTX, J = PROMPT_DEPTH):

* ``add`` — the release concatenates the two prompt lists instead of adding them: deep layer l = k + 1 takes P_k
  (text) / Q_k (vision) for k < J-1, then G_vt(Q_{k-J+1}) / G_tv(P_{k-J+1}) up to the last layer. Layer 0 is the only
  sum: vision prompt ``proj_t(ctx_t) + ctx_v``.
* ``atten`` — slots <- A(G(other_k), own_k) + own_k with A(o, w) = softmax(o w^T, dim=1) o ([b, b] weights); layer 0
  vision: A(proj_t(ctx_t), ctx_v) + ctx_v.
* ``joint`` — 2b slots holding both: text [G_vt(Q_k); P_k], vision [Q_k; G_tv(P_k)]; layer 0 vision
  [proj_t(ctx_t); ctx_v]. Layer 0 text has b learnable tokens, so from layer 1 on the pair also covers the next
  word of CTX_INIT.
* ``exchange`` — a linear layer E (``exchange_layer_t/v``, per layer when SHARE.* is False) maps the pair, laid out as
  the release lays it, back to b tokens: text E_t(S(G_vt(Q_k), P_k)), vision E_v(S(Q_k, G_tv(P_k))); layer 0 vision
  is ``proj_t(ctx_t)`` alone.

S(x, y) is the release's ``torch.stack([x, y]).view(rows, -1)``; for exchange (rows = b) row i concatenates stacked
rows 2i and 2i+1, so with b > 1 a row joins two tokens of the same modality, not token i of each (as released).
Outside ``add``, the text side takes deep prompts at layers 1..J-2 and the vision side at 1..J-1, as the release
does. Only tensors that reach the loss are registered (docs/BMIP.md, "BITP": what differs from the release).
"""
import copy
import math

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from clip_patch import DeepPrompts
from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer
from .prompting import (ClassPrompts, check_coupled_depth, deep_prompt_list, init_context, text_prompt_slots,
                        vision_prompt_slots)
from .release_formats import CONTEXT_ROWS, ReleaseLayout, prompt_learner_groups

CONNECT_METHODS = ("add", "atten", "joint", "exchange")
# The release's names of each linear head: (one shared by all deep layers, one per deep layer).
TEXT_TO_VISION = ("single_layer_t", "compound_prompt_projections_t")  # G_tv
VISION_TO_TEXT = ("single_layer_v", "compound_prompt_projections_v")  # G_vt
EXCHANGE_TEXT = ("exchange_layer_t", "compound_exchange_t")  # E_t
EXCHANGE_VISION = ("exchange_layer_v", "compound_exchange_v")  # E_v


@register_config
def add_bitp_config(cfg):
    cfg.TRAINER.BITP = CN()  # the released defaults (BMIP release train.py L162-167)
    cfg.TRAINER.BITP.N_CTX = 2  # prompt tokens per layer per modality (b)
    cfg.TRAINER.BITP.CTX_INIT = "a photo of a"  # prompt words; N_CTX (≤ 4; joint: 2·N_CTX ≤ 4) start ctx_t
    cfg.TRAINER.BITP.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.BITP.PROMPT_DEPTH = 9  # J: deep prompt sets k = 0..J-2 (1 = shallow only)
    cfg.TRAINER.BITP.CONNECT_METHOD = "add"  # add | atten | joint | exchange (module docstring)


def attend(output, weight):
    """The release's ``Atten``: softmax(output @ weight^T, dim=1) @ output; [b, D] x [b, D] -> [b, D]."""
    return torch.softmax(output @ weight.t(), dim=1) @ output


def stacked(first, second, rows):
    """The release's ``torch.stack([first, second]).view(rows, -1)``: 2 x [b, D] -> [rows, 2bD / rows]."""
    return torch.stack([first, second]).reshape(rows, -1)


def _heads(shared, count, d_in, d_out):
    """One Linear (None when no layer uses it), or ``count`` deep copies of one Linear (the release's _get_clones)."""
    if shared:
        return nn.Linear(d_in, d_out) if count else None
    first = nn.Linear(d_in, d_out)
    return nn.ModuleList([copy.deepcopy(first) for _ in range(count)])


def _context(backbone, n_ctx, ctx_init, joint):
    """(prefix text, ctx_t start [b, D_t]); joint prompts leave room for 2b words but learn the first b."""
    words = 2 * n_ctx if joint else n_ctx
    if ctx_init and words <= 4:
        _, prefix, vectors = init_context(backbone, n_ctx, ctx_init, False)
        return prefix, vectors
    _, _, vectors = init_context(backbone, n_ctx, "", False)  # N(0, 0.02)
    return " ".join(["X"] * words), vectors


class BITPPromptLearner(nn.Module):
    """Every trainable tensor of BITP for one connect method (and nothing that does not reach the loss)."""

    def __init__(self, backbone, classnames, n_ctx, ctx_init, depth, connect, share_text, share_visual):
        super().__init__()
        if connect not in CONNECT_METHODS:
            raise ValueError(f"TRAINER.BITP.CONNECT_METHOD must be one of {CONNECT_METHODS}, got '{connect}'")
        backbone.require_vit("BITP")
        text_encoder, image_encoder = backbone.require_text_encoder("BITP"), backbone.image_encoder
        check_coupled_depth(depth, text_encoder.num_layers, image_encoder.num_layers, "TRAINER.BITP.PROMPT_DEPTH")
        self.connect, self.share_text, self.share_visual = connect, share_text, share_visual
        d_t, d_v = text_encoder.width, image_encoder.width
        n_deep = depth - 1
        self.n_slots = 2 * n_ctx if connect == "joint" else n_ctx
        # Deep layers that take prompts (the release's counters, BMIP release clip/model.py L377, L393).
        if connect == "add":  # text list P + G_vt(Q) + [ctx_t], vision list Q + G_tv(P)
            self.text_layers = min(text_encoder.num_layers - 1, 2 * n_deep)
            self.vision_layers = min(image_encoder.num_layers - 1, 2 * n_deep)
            n_head_t, n_head_v = max(self.vision_layers - n_deep, 0), max(self.text_layers - n_deep, 0)
        else:
            self.text_layers, self.vision_layers = max(n_deep - 1, 0), n_deep
            n_head_t, n_head_v = self.vision_layers, self.text_layers

        prefix, vectors = _context(backbone, n_ctx, ctx_init, connect == "joint")
        self.ctx_t = nn.Parameter(vectors)  # [b, D_t]
        self.proj_t = nn.Linear(d_t, d_v)  # shallow text context -> shallow vision prompt
        ctx_v = torch.randn(n_ctx, d_v) * 0.02  # first b rows of the release's ctx_v; the start of every Q_k (shared)
        if connect != "exchange":  # exchange's layer-0 vision prompt is proj_t(ctx_t) alone
            self.ctx_v = nn.Parameter(ctx_v.clone())  # [b, D_v]
        self.compound_prompts_text = deep_prompt_list(n_deep, n_ctx, d_t)  # P_k [b, D_t]
        if share_visual:  # the release's Q_k alias ctx_v[:b] (BMIP release trainers/bitp.py L191, L197)
            visual = [nn.Parameter(ctx_v.clone()) for _ in range(n_deep)]
        else:  # BMIP release trainers/bitp.py L123, L210
            bound = math.sqrt(6.0 / (3 * 16 + d_v))
            visual = [nn.Parameter(torch.empty(n_ctx, d_v).uniform_(-bound, bound)) for _ in range(n_deep)]
        self.compound_prompts_visual = nn.ParameterList(visual)  # Q_k [b, D_v]
        self._add_heads(TEXT_TO_VISION, share_text, n_head_t, d_t, d_v)
        self._add_heads(VISION_TO_TEXT, share_visual, n_head_v, d_v, d_t)
        if connect == "exchange":
            self._add_heads(EXCHANGE_TEXT, share_text, self.text_layers, 2 * d_t, d_t)
            self._add_heads(EXCHANGE_VISION, share_visual, self.vision_layers, 2 * d_v, d_v)

        self.prompts = ClassPrompts(backbone, classnames, prefix, n_ctx)
        self.text_slots = text_prompt_slots(self.n_slots)
        self.vision_slots = vision_prompt_slots(image_encoder, self.n_slots)

    # -- the linear heads: one shared, or one per deep layer -----------------------------------------------------
    def _add_heads(self, names, shared, count, d_in, d_out):
        setattr(self, names[0] if shared else names[1], _heads(shared, count, d_in, d_out))

    def _head(self, names, shared, k):
        return getattr(self, names[0]) if shared else getattr(self, names[1])[k]

    def text_to_vision(self, k):
        """G_tv(P_k) [b, D_v]."""
        return self._head(TEXT_TO_VISION, self.share_text, k)(self.compound_prompts_text[k])

    def vision_to_text(self, k):
        """G_vt(Q_k) [b, D_t]."""
        return self._head(VISION_TO_TEXT, self.share_visual, k)(self.compound_prompts_visual[k])

    # -- what each layer receives ---------------------------------------------------------------------------------
    def text_prompt(self, k):
        """The text slots before deep layer k + 1: [n_slots, D_t]."""
        n_deep = len(self.compound_prompts_text)
        if self.connect == "add":
            return self.compound_prompts_text[k] if k < n_deep else self.vision_to_text(k - n_deep)
        own, other = self.compound_prompts_text[k], self.vision_to_text(k)
        if self.connect == "atten":
            return attend(other, own) + own
        if self.connect == "joint":
            return stacked(other, own, self.n_slots)
        return self._head(EXCHANGE_TEXT, self.share_text, k)(stacked(other, own, self.n_slots))  # E_t

    def vision_prompt(self, k):
        """The vision slots before deep layer k + 1: [n_slots, D_v]."""
        n_deep = len(self.compound_prompts_visual)
        if self.connect == "add":
            return self.compound_prompts_visual[k] if k < n_deep else self.text_to_vision(k - n_deep)
        own, other = self.compound_prompts_visual[k], self.text_to_vision(k)
        if self.connect == "atten":
            return attend(other, own) + own
        if self.connect == "joint":
            return stacked(own, other, self.n_slots)
        return self._head(EXCHANGE_VISION, self.share_visual, k)(stacked(own, other, self.n_slots))  # E_v

    def shallow_vision_prompt(self):
        """The vision prompt appended after the patches at layer 0: [n_slots, D_v]."""
        projected = self.proj_t(self.ctx_t)  # [b, D_v]
        if self.connect == "add":
            return projected + self.ctx_v
        if self.connect == "atten":
            return attend(projected, self.ctx_v) + self.ctx_v
        if self.connect == "joint":
            return stacked(projected, self.ctx_v, self.n_slots)
        return projected

    def text_inputs(self):
        def replace(layer, probe):
            return self.text_prompt(layer - 1) if layer <= self.text_layers else None
        deep = DeepPrompts(self.text_slots, replace, shared=True)  # the same prompts for every class
        return self.prompts.assemble(self.ctx_t), self.prompts.tokens, deep

    def vision_inputs(self):
        def replace(layer, probe):
            return self.vision_prompt(layer - 1) if layer <= self.vision_layers else None
        return self.shallow_vision_prompt(), DeepPrompts(self.vision_slots, replace)


BITP_GROUPS = prompt_learner_groups("ctx_t", "proj_t", "ctx_v", "compound_prompts_text", "compound_prompts_visual",
                                    *TEXT_TO_VISION, *VISION_TO_TEXT, *EXCHANGE_TEXT, *EXCHANGE_VISION)
# Registered and trained by the released BITP but never reaching the loss for some connect method (ignored on import
# when the learner has no place for them): proj_v always; ctx_v for exchange; the exchange layers outside exchange;
# the heads of layers that take no prompt.
BITP_DEAD = ("proj_v.", "ctx_v", "exchange_layer_", "compound_exchange_", "single_layer_",
             "compound_prompt_projections_")


@TRAINER_REGISTRY.register()
class BITP(CLIPPromptTrainer):
    DISPLAY_RANK = 45  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "BITP"
    CHECKPOINT_NAME = "MultiModalPromptLearner"
    # Release: trainers/bitp.py (trainable by name: prompt_learner, VPT, L466-472).
    # Its ctx_v has one row per token position (CONTEXT_ROWS), of which it reads the first b.
    RELEASE_LAYOUT = ReleaseLayout(groups=BITP_GROUPS, trained=("prompt_learner", "VPT"), dead=BITP_DEAD,
                                   padded_rows={"ctx_v": CONTEXT_ROWS})

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.BITP
        check_range("TRAINER.BITP.N_CTX", m.N_CTX, 1, meaning="prompt tokens per layer per modality")
        check_range("TRAINER.BITP.PROMPT_DEPTH", m.PROMPT_DEPTH, 1, meaning="layers with prompts; 1 = shallow only")
        if m.CONNECT_METHOD not in CONNECT_METHODS:
            raise ValueError(f"TRAINER.BITP.CONNECT_METHOD is '{m.CONNECT_METHOD}'; use one of "
                             f"{', '.join(CONNECT_METHODS)}.")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        check_coupled_depth(cfg.TRAINER.BITP.PROMPT_DEPTH, text_layers, vision_layers, "TRAINER.BITP.PROMPT_DEPTH")

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        return BITPPromptLearner(backbone, classnames, m.N_CTX, m.CTX_INIT, m.PROMPT_DEPTH, m.CONNECT_METHOD,
                                 cfg.SHARE.SHARE_PARAMETER_TEXT, cfg.SHARE.SHARE_PARAMETER_VISUAL)
