"""MaPLe (Khattak et al., CVPR 2023): text prompts at layers 0..J-1, each coupled to the vision side by a linear map.

Layer 0: text context ``ctx`` at positions 1..b; vision prompt ``proj(ctx)`` appended after the patches.
Deep layer l = 1..J-1: text slots <- ``compound_prompts_text[l-1]``; vision slots <-
``compound_prompt_projections[l-1](compound_prompts_text[l-1])``. Parameter names match the MaPLe release, whose
whole-model checkpoints keep them under ``prompt_learner.`` (trainers/release_formats.py maps both ways).
"""
import copy

import torch.nn as nn
from yacs.config import CfgNode as CN

from clip_patch import DeepPrompts
from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer
from .prompting import (ClassPrompts, check_coupled_depth, deep_prompt_list, init_context,
                        replace_from_list, text_prompt_slots, vision_prompt_slots)
from .release_formats import ReleaseLayout, prompt_learner_groups


def add_coupled_prompt_keys(node):
    """The keys of MaPLe's prompts, which CoPrompt's node has too (the releases' defaults)."""
    node.N_CTX = 2  # prompt tokens per layer
    node.CTX_INIT = "a photo of a"  # prompt words; the first N_CTX (≤ 4) start the context
    node.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    node.PROMPT_DEPTH = 9  # layers with prompts, J (1 = shallow only)


@register_config
def add_maple_config(cfg):
    cfg.TRAINER.MAPLE = CN()
    add_coupled_prompt_keys(cfg.TRAINER.MAPLE)
    cfg.TRAINER.MAPLE.CONNECT_METHOD = "add"  # inert, kept for compatibility (BMIP repository's MaPLe variant)


class MaPLePromptLearner(nn.Module):
    def __init__(self, backbone, classnames, n_ctx, ctx_init, depth, method="MaPLe",
                 depth_key="TRAINER.MAPLE.PROMPT_DEPTH"):
        """``method`` and ``depth_key`` name the running method and its depth key in errors (CoPrompt reuses it)."""
        super().__init__()
        backbone.require_vit(method)
        text_encoder, image_encoder = backbone.require_text_encoder(method), backbone.image_encoder
        check_coupled_depth(depth, text_encoder.num_layers, image_encoder.num_layers, depth_key)
        n_ctx, prefix, vectors = init_context(backbone, n_ctx, ctx_init, False)
        d_t, d_v = text_encoder.width, image_encoder.width
        self.ctx = nn.Parameter(vectors)  # [b, D_t]
        self.proj = nn.Linear(d_t, d_v)
        self.compound_prompts_text = deep_prompt_list(depth - 1, n_ctx, d_t)  # J-1 x [b, D_t]
        coupling = nn.Linear(d_t, d_v)  # the release deep-copies one layer, so all J-1 start identical
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(coupling) for _ in range(depth - 1)])
        self.prompts = ClassPrompts(backbone, classnames, prefix, n_ctx)
        self.text_slots, self.vision_slots = text_prompt_slots(n_ctx), vision_prompt_slots(image_encoder, n_ctx)

    def text_inputs(self):
        replace = replace_from_list(self.compound_prompts_text)
        return self.prompts.assemble(self.ctx), self.prompts.tokens, DeepPrompts(self.text_slots, replace, shared=True)

    def vision_inputs(self):
        def replace(layer, probe):
            if layer > len(self.compound_prompts_text):
                return None
            return self.compound_prompt_projections[layer - 1](self.compound_prompts_text[layer - 1])  # [b, D_v]
        return self.proj(self.ctx), DeepPrompts(self.vision_slots, replace)


@TRAINER_REGISTRY.register()
class MaPLe(CLIPPromptTrainer):
    DISPLAY_RANK = 40  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "MAPLE"
    CHECKPOINT_NAME = "MultiModalPromptLearner"
    # Every trainable tensor sits in the released prompt_learner under our name.
    RELEASE_LAYOUT = ReleaseLayout(
        groups=prompt_learner_groups("ctx", "proj", "compound_prompts_text", "compound_prompt_projections"),
        trained=("prompt_learner",),
    )

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.MAPLE
        check_range("TRAINER.MAPLE.N_CTX", m.N_CTX, 1, meaning="prompt tokens per layer")
        check_range("TRAINER.MAPLE.PROMPT_DEPTH", m.PROMPT_DEPTH, 1, meaning="layers with prompts; 1 = shallow only")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        check_coupled_depth(cfg.TRAINER.MAPLE.PROMPT_DEPTH, text_layers, vision_layers, "TRAINER.MAPLE.PROMPT_DEPTH")

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        return MaPLePromptLearner(backbone, classnames, m.N_CTX, m.CTX_INIT, m.PROMPT_DEPTH)
