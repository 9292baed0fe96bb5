"""Independent vision-language prompting (IVLP) and visual prompt tuning (VPT-deep), as in the MaPLe repository.

IVLP learns shallow + deep prompts in each encoder with no coupling between them. N_CTX 0 or PROMPT_DEPTH 0 on a side
switches that side off (language-only / vision-only). VPT is IVLP with the text side off: the class prompts are the
fixed ``"<CTX_INIT> <classname>."``.
"""
import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from clip_patch import DeepPrompts
from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer
from .prompting import (ClassPrompts, check_prompt_depth, deep_prompt_list, init_context,
                        replace_from_list, text_prompt_slots, vision_prompt_slots)
from .release_formats import IVLP_GROUPS, VISION_BLOCK, ReleaseLayout


@register_config
def add_ivlp_vpt_config(cfg):
    cfg.TRAINER.IVLP = CN()
    cfg.TRAINER.IVLP.N_CTX_VISION = 2  # vision prompt tokens per layer (0 = no vision prompts)
    cfg.TRAINER.IVLP.N_CTX_TEXT = 2  # text prompt tokens per layer (0 = no text prompts)
    cfg.TRAINER.IVLP.CTX_INIT = "a photo of a"  # text prompt words; the first N_CTX_TEXT (≤ 4) start the context
    cfg.TRAINER.IVLP.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION = 9  # vision layers with prompts (1 = shallow only, 0 = none)
    cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT = 9  # text layers with prompts (1 = shallow only, 0 = none)
    cfg.TRAINER.VPT = CN()
    cfg.TRAINER.VPT.N_CTX_VISION = 2  # vision prompt tokens per layer
    cfg.TRAINER.VPT.CTX_INIT = "a photo of a"  # fixed text prompt: "<CTX_INIT> <classname>."
    cfg.TRAINER.VPT.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.VPT.PROMPT_DEPTH_VISION = 1  # vision layers with prompts (1 = shallow only)


def check_side_depths(node, depth_text, n_ctx_vision, depth_vision, text_layers, vision_layers):
    """Each side's depth at most its encoder's layers (0 switches a side off, so the vision side may be 0 only when the
    text side is on; it is checked only when it is on). ``node`` names the method's config node (TRAINER.IVLP,
    TRAINER.VPT, TRAINER.PROMPTSRC)."""
    check_prompt_depth(depth_text, text_layers, f"{node}.PROMPT_DEPTH_TEXT", minimum=0)
    if n_ctx_vision > 0 and depth_vision > 0:
        check_prompt_depth(depth_vision, vision_layers, f"{node}.PROMPT_DEPTH_VISION",
                           minimum=0 if depth_text > 0 else 1)


class VisionLanguagePrompts(nn.Module):
    """Independent shallow+deep prompts: ``ctx`` / ``deep_text`` (text side), ``ctx_vision`` / ``deep_vision``.
    ``node``: the config node whose keys errors name."""

    def __init__(self, backbone, classnames, ctx_init, n_ctx_text, depth_text, n_ctx_vision, depth_vision,
                 node="TRAINER.IVLP"):
        super().__init__()
        text_encoder = backbone.require_text_encoder("Text prompting")
        self.vision_on = n_ctx_vision > 0 and depth_vision > 0
        if self.vision_on:
            backbone.require_vit("Visual prompting")
        check_side_depths(node, depth_text, n_ctx_vision, depth_vision, text_encoder.num_layers,
                          backbone.image_encoder.num_layers if self.vision_on else None)
        self.text_on = n_ctx_text > 0 and depth_text > 0
        if self.text_on:
            n_ctx_text, prefix, vectors = init_context(backbone, n_ctx_text, ctx_init, False)
            self.ctx = nn.Parameter(vectors)  # [b_t, D_t]
            self.deep_text = deep_prompt_list(depth_text - 1, n_ctx_text, text_encoder.width)
        else:
            n_ctx_text, prefix = 0, ctx_init
        self.prompts = ClassPrompts(backbone, classnames, prefix, n_ctx_text)

        if self.vision_on:
            image_encoder = backbone.image_encoder
            self.ctx_vision = nn.Parameter(torch.randn(n_ctx_vision, image_encoder.width) * 0.02)  # [b_v, D_v]
            self.deep_vision = deep_prompt_list(depth_vision - 1, n_ctx_vision, image_encoder.width)
            self.vision_slots = vision_prompt_slots(image_encoder, n_ctx_vision)

    def text_inputs(self):
        if not self.text_on:
            return self.prompts.assemble(None), self.prompts.tokens, None
        deep = DeepPrompts(text_prompt_slots(self.ctx.shape[0]), replace_from_list(self.deep_text), shared=True)
        return self.prompts.assemble(self.ctx), self.prompts.tokens, deep

    def vision_inputs(self):
        if not self.vision_on:
            return None, None
        return self.ctx_vision, DeepPrompts(self.vision_slots, replace_from_list(self.deep_vision))


@TRAINER_REGISTRY.register()
class IVLP(CLIPPromptTrainer):
    DISPLAY_RANK = 100  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "IVLP"
    CHECKPOINT_NAME = "VLPromptLearner"
    # Release: trainers/independentVL.py, clip/model.py ResidualAttentionBlock_IVLP.
    RELEASE_LAYOUT = ReleaseLayout(groups=IVLP_GROUPS, trained=("prompt_learner", "VPT"))

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.IVLP
        for side in ("TEXT", "VISION"):
            check_range(f"TRAINER.IVLP.N_CTX_{side}", m[f"N_CTX_{side}"], 0,
                        meaning=f"{side.lower()} prompt tokens per layer; 0 switches {side.lower()} prompts off")
            check_range(f"TRAINER.IVLP.PROMPT_DEPTH_{side}", m[f"PROMPT_DEPTH_{side}"], 0,
                        meaning=f"{side.lower()} layers with prompts; 0 switches {side.lower()} prompts off")
        if not any(m[f"N_CTX_{side}"] and m[f"PROMPT_DEPTH_{side}"] for side in ("TEXT", "VISION")):
            raise ValueError("TRAINER.IVLP switches off the prompts of both sides (a 0 in N_CTX_TEXT/PROMPT_DEPTH_TEXT "
                             "and in N_CTX_VISION/PROMPT_DEPTH_VISION), so there is nothing to learn: give one side "
                             ">= 1 token and depth >= 1")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        m = cfg.TRAINER.IVLP
        check_side_depths("TRAINER.IVLP", m.PROMPT_DEPTH_TEXT, m.N_CTX_VISION, m.PROMPT_DEPTH_VISION, text_layers,
                          vision_layers)

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        return VisionLanguagePrompts(backbone, classnames, m.CTX_INIT, m.N_CTX_TEXT, m.PROMPT_DEPTH_TEXT,
                                     m.N_CTX_VISION, m.PROMPT_DEPTH_VISION)


@TRAINER_REGISTRY.register()
class VPT(CLIPPromptTrainer):
    DISPLAY_RANK = 90  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "VPT"
    CHECKPOINT_NAME = "prompt_learner"
    # Release: trainers/vpt.py; IVLP's vision side (the text prompt is fixed).
    RELEASE_LAYOUT = ReleaseLayout(
        groups={"ctx_vision": "image_encoder.VPT", "deep_vision": VISION_BLOCK + ".VPT_shallow"},
        trained=("prompt_learner", "VPT"),
    )

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.VPT
        check_range("TRAINER.VPT.N_CTX_VISION", m.N_CTX_VISION, 1, meaning="vision prompt tokens per layer")
        check_range("TRAINER.VPT.PROMPT_DEPTH_VISION", m.PROMPT_DEPTH_VISION, 1,
                    meaning="vision layers with prompts; 1 = shallow only")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        m = cfg.TRAINER.VPT
        check_side_depths("TRAINER.VPT", 0, m.N_CTX_VISION, m.PROMPT_DEPTH_VISION, text_layers, vision_layers)

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        return VisionLanguagePrompts(backbone, classnames, m.CTX_INIT, 0, 0, m.N_CTX_VISION, m.PROMPT_DEPTH_VISION,
                                     node="TRAINER.VPT")
