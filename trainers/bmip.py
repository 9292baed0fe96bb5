"""BMIP (Lv et al., IJCAI 2025): MaPLe made bi-directional, with attention-gated blending at every deep layer.

Layer 0 is MaPLe's: text context ``ctx_t`` at positions 1..b, vision prompt ``proj_t(ctx_t)`` appended after the
patches. Before deep layer l (prompt set k = l-1), each modality's slots become

    w * own_k + (1 - w) * G(other_k),   w = sigmoid(alpha_l * a_l + beta_l)   (one Linear(1,1) gate per layer)

with ``own/other`` = deep text prompts P_k (``compound_prompts_text``) and deep vision prompts Q_k
(``compound_prompts_visual``), G = ``single_layer_t`` (text -> vision) or ``single_layer_v`` (vision -> text), or
per-layer heads when SHARE.* is False, and ``a_l`` the detached attention that layer l pays to the prompt keys.

TRAINER.BMIP.MODE selects how ``a_l`` is read (docs/BMIP.md):

* ``reference`` (default) reproduces the released code: vision gate from the attention of all CLS+patch queries
  averaged over the BATCH (one blended prompt for all images, so predictions depend on batch-mates); text gates at
  layers 1..J-2 only, read from the SOS row, which under the causal mask is exactly 0 -> w = sigmoid(beta), computed
  without any attention call.
* ``per_sample``: the vision gate per image, text gates at layers 1..J-1 read from each class's EOT row.
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
from .release_formats import BMIP_DEAD, BMIP_GROUPS, ReleaseLayout, bmip_export_refusal, is_whole_model

MODES = ("reference", "per_sample")


@register_config
def add_bmip_config(cfg):
    cfg.TRAINER.BMIP = CN()
    cfg.TRAINER.BMIP.N_CTX = 2  # prompt tokens per layer per modality (b)
    cfg.TRAINER.BMIP.CTX_INIT = "a photo of a"  # prompt words; the first N_CTX (≤ 4) start the text context
    cfg.TRAINER.BMIP.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.BMIP.PROMPT_DEPTH = 9  # layers with prompts, J (1 = shallow only: no deep prompts, no blending)
    cfg.TRAINER.BMIP.MODE = "reference"  # reference (released code's gates) | per_sample (corrected variant)
    cfg.TRAINER.BMIP.ALLOW_REFERENCE_CHECKPOINT = False  # per_sample: True also loads released (reference) checkpoints
    cfg.TRAINER.BMIP.CONNECT_METHOD = "None"  # inert, kept for compatibility with the released configs
    cfg.TRAINER.BMIP.WEIGHT_THRESHOLD = 0.0025  # inert, kept for compatibility with the released configs
    cfg.SHARE = CN()
    cfg.SHARE.SHARE_PARAMETER_VISUAL = True  # one vision->text head for all layers (False: one per layer)
    cfg.SHARE.SHARE_PARAMETER_TEXT = True  # one text->vision head for all layers (False: one per layer)


def _gate():
    return nn.Linear(1, 1)  # PyTorch default init: weight and bias ~ U(-1, 1)


def _heads(shared, count, d_in, d_out, identical):
    """One shared Linear, or ``count`` per-layer Linears (identical copies of one init, or independent)."""
    if shared:
        return nn.Linear(d_in, d_out)
    first = nn.Linear(d_in, d_out)
    return nn.ModuleList([copy.deepcopy(first) if identical else nn.Linear(d_in, d_out) for _ in range(count)])


class BMIPPromptLearner(nn.Module):
    """Every trainable tensor of BMIP (and nothing that does not reach the loss)."""

    def __init__(self, backbone, classnames, n_ctx, ctx_init, depth, mode, share_text, share_visual, method="BMIP",
                 depth_key="TRAINER.BMIP.PROMPT_DEPTH"):
        """``method`` and ``depth_key`` name the running method and its depth key in errors (PromptSRC_BMIP and
        CoPrompt_BMIP reuse it; their trainers check ``mode`` against their own key first)."""
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"TRAINER.BMIP.MODE must be one of {MODES}, got '{mode}'")
        backbone.require_vit(method)
        text_encoder, image_encoder = backbone.require_text_encoder(method), backbone.image_encoder
        check_coupled_depth(depth, text_encoder.num_layers, image_encoder.num_layers, depth_key)
        self.mode = mode
        reference = mode == "reference"
        d_t, d_v = text_encoder.width, image_encoder.width
        n_ctx, prefix, vectors = init_context(backbone, n_ctx, ctx_init, False)
        n_deep = depth - 1  # deep prompt sets k = 0..J-2, used at layer l = k+1
        self.n_text_blend = max(depth - 2, 0) if reference else n_deep  # text layers that blend

        self.ctx_t = nn.Parameter(vectors)  # [b, D_t]
        self.proj_t = nn.Linear(d_t, d_v)  # H: shallow text context -> shallow vision prompt
        self.compound_prompts_text = deep_prompt_list(n_deep, n_ctx, d_t)  # P_k [b, D_t]
        self.compound_prompts_visual = nn.ParameterList(self._visual_prompts(n_deep, n_ctx, d_v, reference,
                                                                             share_visual))  # Q_k [b, D_v]
        self.share_text, self.share_visual = share_text, share_visual
        if n_deep:
            heads_t = _heads(share_text, n_deep, d_t, d_v, reference)  # G_tv
            if share_text:
                self.single_layer_t = heads_t
            else:
                self.compound_prompt_projections_t = heads_t
        if self.n_text_blend:  # G_vt only feeds text blending (none in reference mode at depth 2)
            heads_v = _heads(share_visual, self.n_text_blend, d_v, d_t, reference)
            if share_visual:
                self.single_layer_v = heads_v
            else:
                self.compound_prompt_projections_v = heads_v
        if n_deep:
            self.vision_gates = nn.ModuleList([_gate() for _ in range(n_deep)])
            self.text_gates = nn.ModuleList([_gate() for _ in range(self.n_text_blend)])

        self.prompts = ClassPrompts(backbone, classnames, prefix, n_ctx)
        self.register_buffer("eot", text_encoder.pool_rows(self.prompts.tokens), persistent=False)  # [n_cls]
        self.num_patch_tokens = image_encoder.num_patch_tokens
        self.text_slots, self.vision_slots = text_prompt_slots(n_ctx), vision_prompt_slots(image_encoder, n_ctx)

    @staticmethod
    def _visual_prompts(count, n_ctx, d_v, reference, share_visual):
        if reference and share_visual:  # the release: one N(0, 0.02) draw is the start of every Q_k
            first = torch.randn(n_ctx, d_v) * 0.02
            return [nn.Parameter(first.clone()) for _ in range(count)]
        if reference:  # the release with per-layer heads: independent U(-v, v), v = sqrt(6 / (3 * 16 + d_v))
            bound = math.sqrt(6.0 / (3 * 16 + d_v))
            return [nn.Parameter(torch.empty(n_ctx, d_v).uniform_(-bound, bound)) for _ in range(count)]
        return [nn.Parameter(torch.randn(n_ctx, d_v) * 0.02) for _ in range(count)]

    def text_to_vision(self, k):
        """G_tv(P_k) [b, D_v]."""
        head = self.single_layer_t if self.share_text else self.compound_prompt_projections_t[k]
        return head(self.compound_prompts_text[k])

    def vision_to_text(self, k):
        """G_vt(Q_k) [b, D_t]."""
        head = self.single_layer_v if self.share_visual else self.compound_prompt_projections_v[k]
        return head(self.compound_prompts_visual[k])

    @staticmethod
    def _blend(gate, attention, own, other):
        """sigmoid(gate(a)) * own + (1 - w) * other; attention [..., b] -> [..., b, D]."""
        w = torch.sigmoid(gate(attention.unsqueeze(-1)))  # [..., b, 1]
        return w * own + (1 - w) * other

    def vision_gate_input(self, probe):
        """a [b] (reference: batch and query mean) or [B, b] (per_sample) from the CLS+patch query rows."""
        a = probe.to_slots(slice(0, self.num_patch_tokens)).detach()  # [B, b]
        return a.mean(dim=0) if self.mode == "reference" else a

    def text_gate_input(self, probe, eot):
        """a [b] (reference: the SOS query's attention, averaged over classes) or [n, b] (per_sample: the EOT rows
        ``eot`` [n] of the n class prompts being encoded).

        Under the causal mask the SOS query sees only itself, so the reference input is exactly 0. The fast text path
        encodes the prefix shared by all classes once and passes no probe there: a = 0 without reading anything. The
        straightforward path passes one and reads it, as the release does.
        """
        if self.mode == "per_sample":
            return probe.to_slots(eot).detach()  # [n, b]
        if probe is None:
            return self.ctx_t.new_zeros(self.ctx_t.shape[0])  # [b]
        return probe.to_slots(slice(0, 1)).detach().mean(dim=0)  # [b]

    def text_inputs(self):
        return self.prompts.assemble(self.ctx_t), self.prompts.tokens, self.deep_text_prompts(self.eot)

    def deep_text_prompts(self, eot):
        """The deep text prompts of the class prompts whose EOT positions are ``eot`` [n] (all classes, or a chunk)."""
        def replace(layer, probe):
            k = layer - 1
            if k >= self.n_text_blend:
                return None
            a = self.text_gate_input(probe, eot)
            return self._blend(self.text_gates[k], a, self.compound_prompts_text[k], self.vision_to_text(k))
        shared = self.mode == "reference"  # the same blend for every class
        return DeepPrompts(self.text_slots, replace, shared,
                           restrict=lambda classes: self.deep_text_prompts(eot[classes]))

    def vision_inputs(self):
        def replace(layer, probe):
            k = layer - 1
            if k >= len(self.compound_prompts_visual):
                return None
            a = self.vision_gate_input(probe)
            return self._blend(self.vision_gates[k], a, self.compound_prompts_visual[k], self.text_to_vision(k))
        return self.proj_t(self.ctx_t), DeepPrompts(self.vision_slots, replace)


@TRAINER_REGISTRY.register()
class BMIP(CLIPPromptTrainer):
    DISPLAY_RANK = 50  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "BMIP"
    CHECKPOINT_NAME = "MultiModalPromptLearner"
    # Release: trainers/bmip.py, clip/model.py.
    RELEASE_LAYOUT = ReleaseLayout(groups=BMIP_GROUPS, trained=("prompt_learner", "VPT", "learnable_linear"),
                                   dead=BMIP_DEAD, export_refusal=bmip_export_refusal)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.BMIP
        check_range("TRAINER.BMIP.N_CTX", m.N_CTX, 1, meaning="prompt tokens per layer per modality")
        check_range("TRAINER.BMIP.PROMPT_DEPTH", m.PROMPT_DEPTH, 1, meaning="layers with prompts; 1 = shallow only")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        check_coupled_depth(cfg.TRAINER.BMIP.PROMPT_DEPTH, text_layers, vision_layers, "TRAINER.BMIP.PROMPT_DEPTH")

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        return BMIPPromptLearner(backbone, classnames, m.N_CTX, m.CTX_INIT, m.PROMPT_DEPTH, m.MODE,
                                 cfg.SHARE.SHARE_PARAMETER_TEXT, cfg.SHARE.SHARE_PARAMETER_VISUAL)

    def convert_checkpoint(self, state_dict):
        check_released_gates(state_dict, self.method_cfg.MODE, "TRAINER.BMIP.MODE", self.cfg)
        return super().convert_checkpoint(state_dict)


def check_released_gates(state_dict, mode, mode_key, cfg):
    """A released checkpoint was trained with the reference gates: a per_sample model loads it only when asked to."""
    if mode == "per_sample" and is_whole_model(state_dict) and not cfg.TRAINER.BMIP.ALLOW_REFERENCE_CHECKPOINT:
        raise ValueError(
            f"{mode_key} is per_sample but this is a released BMIP checkpoint, trained with the reference gates (its "
            "last text gate never trained); set TRAINER.BMIP.ALLOW_REFERENCE_CHECKPOINT True to load it."
        )
