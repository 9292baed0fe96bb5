"""UPT (unified prompt tuning, Zang et al. 2022) as the released BMIP code runs it: one small transformer per deep
layer produces that layer's text and vision prompts together.

Layer 0: text context ``ctx_t`` at positions 1..b, vision prompt ``ctx_v`` appended after the patches (independent,
as in IVLP). Deep prompt set k = 0..J-2 (before block l = k + 1): ``compound_prompts[k]`` [b, D_t + D_v] goes through
its own ``nn.TransformerEncoderLayer`` (8 heads, feed-forward 2048, dropout 0.1 active in training), and the output
is split into the text prompt (its first D_t columns) and the vision prompt (the other D_v). As in the release, text
takes the deep prompts of blocks 1..J-2 only and vision those of blocks 1..J-1 (docs/BMIP.md, "UPT").

Within one forward pass the text and vision sides share one computation of the deep prompts (one dropout draw), as
the release's single ``prompt_learner()`` call does; dropout draws from the global RNG, which the engine seeds per
epoch (docs/ENGINE.md, "Randomness"). Parameter names match the release, whose whole-model checkpoints keep them
under ``prompt_learner.`` (``ctx_v`` there has 77 rows, of which the release reads the first b).
"""
import contextlib
import copy

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from clip_patch import PRECISIONS, DeepPrompts
from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer, PromptedCLIP
from .prompting import (ClassPrompts, check_coupled_depth, deep_prompt_list, init_context, text_prompt_slots,
                        vision_prompt_slots)
from .release_formats import CONTEXT_ROWS, ReleaseLayout, prompt_learner_groups

HEADS, FEEDFORWARD = 8, 2048  # the release's nn.TransformerEncoderLayer(d_model=1280, nhead=8) and its defaults


@register_config
def add_upt_config(cfg):
    cfg.TRAINER.UPT = CN()
    cfg.TRAINER.UPT.N_CTX = 2  # prompt tokens per layer per modality (b)
    cfg.TRAINER.UPT.CTX_INIT = "a photo of a"  # prompt words; the first N_CTX (≤ 4) start the text context
    cfg.TRAINER.UPT.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.UPT.PROMPT_DEPTH = 9  # layers with prompts, J (1 = shallow only)
    cfg.TRAINER.UPT.SETTINGS_FROM_BITP = False  # True: read the four keys above from TRAINER.BITP, as the release does


def settings_node(cfg):
    """The config node UPT's N_CTX, CTX_INIT, PREC and PROMPT_DEPTH are read from, and its name."""
    name = "BITP" if cfg.TRAINER.UPT.SETTINGS_FROM_BITP else "UPT"
    return cfg.TRAINER[name], name


class UPTPromptLearner(nn.Module):
    """Every trainable tensor of UPT."""

    def __init__(self, backbone, classnames, n_ctx, ctx_init, depth, depth_key="TRAINER.UPT.PROMPT_DEPTH"):
        super().__init__()
        backbone.require_vit("UPT")
        text_encoder, image_encoder = backbone.require_text_encoder("UPT"), backbone.image_encoder
        check_coupled_depth(depth, text_encoder.num_layers, image_encoder.num_layers, depth_key)
        d_t, d_v = text_encoder.width, image_encoder.width
        if (d_t + d_v) % HEADS:
            raise ValueError(f"UPT's prompt transformer has {HEADS} heads, which must divide the text + vision width "
                             f"{d_t} + {d_v} = {d_t + d_v} of this backbone; use a backbone whose widths sum to a "
                             f"multiple of {HEADS} (e.g. ViT-B/16).")
        n_ctx, prefix, vectors = init_context(backbone, n_ctx, ctx_init, False)
        self.text_width = d_t
        self.ctx_t = nn.Parameter(vectors)  # [b, D_t]
        self.ctx_v = nn.Parameter(torch.randn(n_ctx, d_v) * 0.02)  # [b, D_v]
        self.compound_prompts = deep_prompt_list(depth - 1, n_ctx, d_t + d_v)  # J-1 x [b, D_t + D_v]
        layer = nn.TransformerEncoderLayer(d_model=d_t + d_v, nhead=HEADS, dim_feedforward=FEEDFORWARD)
        # the release deep-copies one layer, so all J-1 start identical
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(layer) for _ in range(depth - 1)])
        self.prompts = ClassPrompts(backbone, classnames, prefix, n_ctx)
        self.text_slots, self.vision_slots = text_prompt_slots(n_ctx), vision_prompt_slots(image_encoder, n_ctx)
        self._sharing, self._drawn = False, None  # inside shared_draw(): its one computation of the deep prompts

    def unified_prompts(self):
        """Each deep prompt set through its own transformer layer: J-1 x [b, D_t + D_v] (a fresh dropout draw)."""
        return [layer(prompts) for layer, prompts in zip(self.compound_prompt_projections, self.compound_prompts)]

    @contextlib.contextmanager
    def shared_draw(self):
        """Within: every text_inputs() / vision_inputs() call uses one computation of the deep prompts."""
        self._sharing, self._drawn = True, None
        try:
            yield
        finally:
            self._sharing, self._drawn = False, None

    def deep_prompts(self):
        if not self._sharing:
            return self.unified_prompts()
        if self._drawn is None:
            self._drawn = self.unified_prompts()
        return self._drawn

    def text_inputs(self):
        deep = self.deep_prompts()

        def replace(layer, probe):  # the release stops one set early on the text side: blocks 1..J-2
            return deep[layer - 1][:, :self.text_width] if layer < len(deep) else None  # [b, D_t]
        return self.prompts.assemble(self.ctx_t), self.prompts.tokens, DeepPrompts(self.text_slots, replace, True)

    def vision_inputs(self):
        deep = self.deep_prompts()

        def replace(layer, probe):
            return deep[layer - 1][:, self.text_width:] if layer <= len(deep) else None  # [b, D_v]
        return self.ctx_v, DeepPrompts(self.vision_slots, replace)


class UnifiedPromptCLIP(PromptedCLIP):
    """PromptedCLIP whose forward pass computes UPT's deep prompts once for both encoders."""

    def forward(self, image):
        with self.prompt_learner.shared_draw():
            return super().forward(image)


@TRAINER_REGISTRY.register()
class UPT(CLIPPromptTrainer):
    DISPLAY_RANK = 72  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "UPT"
    CHECKPOINT_NAME = "MultiModalPromptLearner"
    # Every trainable tensor sits in the released prompt_learner under our name; its ctx_v has CONTEXT_ROWS rows.
    RELEASE_LAYOUT = ReleaseLayout(
        groups=prompt_learner_groups("ctx_t", "ctx_v", "compound_prompts", "compound_prompt_projections"),
        trained=("prompt_learner",),
        padded_rows={"ctx_v": CONTEXT_ROWS},
    )

    @property
    def method_cfg(self):
        return settings_node(self.cfg)[0]

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node, name = settings_node(cfg)
        if node.PREC not in PRECISIONS:  # (the base class checked TRAINER.UPT.PREC)
            raise ValueError(f"TRAINER.{name}.PREC must be one of {PRECISIONS}, got '{node.PREC}'")
        check_range(f"TRAINER.{name}.N_CTX", node.N_CTX, 1, meaning="prompt tokens per layer per modality")
        check_range(f"TRAINER.{name}.PROMPT_DEPTH", node.PROMPT_DEPTH, 1,
                    meaning="layers with prompts; 1 = shallow only")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        node, name = settings_node(cfg)
        check_coupled_depth(node.PROMPT_DEPTH, text_layers, vision_layers, f"TRAINER.{name}.PROMPT_DEPTH")

    def build_clip_model(self, backbone, learner):
        return UnifiedPromptCLIP(backbone, learner, **self.model_options())

    def build_prompt_learner(self, cfg, classnames, backbone):
        m, name = settings_node(cfg)
        return UPTPromptLearner(backbone, classnames, m.N_CTX, m.CTX_INIT, m.PROMPT_DEPTH,
                                f"TRAINER.{name}.PROMPT_DEPTH")
