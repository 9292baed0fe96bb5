"""Independent vision-language prompting (IVLP) and visual prompt tuning (VPT-deep), as in the MaPLe repository.

IVLP learns shallow + deep prompts in each encoder with no coupling between them. N_CTX 0 or PROMPT_DEPTH 0 on a side
switches that side off (language-only / vision-only). VPT is IVLP with the text side off: the class prompts are the
fixed ``"<CTX_INIT> <classname>."``.
"""
import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from clip_patch import DeepPrompts, PromptedImageEncoder, PromptedTextEncoder, require_vit
from dassl.config import register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer
from .prompting import ClassPrompts, init_context


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


def _check_depth(depth, num_layers, key):
    if not 0 <= depth <= num_layers:
        raise ValueError(f"{key} = {depth}, but the encoder has {num_layers} layers: use 0..{num_layers}.")


def _deep_prompt_list(count, n_ctx, width):
    """``count`` independent prompt sets [n_ctx, width], each drawn from N(0, 0.02)."""
    return nn.ParameterList([nn.Parameter(torch.randn(n_ctx, width) * 0.02) for _ in range(count)])


class VisionLanguagePrompts(nn.Module):
    """Independent shallow+deep prompts: ``ctx`` / ``deep_text`` (text side), ``ctx_vision`` / ``deep_vision``."""

    def __init__(self, clip_model, classnames, ctx_init, n_ctx_text, depth_text, n_ctx_vision, depth_vision):
        super().__init__()
        text_encoder = PromptedTextEncoder(clip_model)
        _check_depth(depth_text, text_encoder.num_layers, "PROMPT_DEPTH_TEXT")
        self.text_on = n_ctx_text > 0 and depth_text > 0
        if self.text_on:
            n_ctx_text, prefix, vectors = init_context(text_encoder, n_ctx_text, ctx_init, False)
            self.ctx = nn.Parameter(vectors)  # [b_t, D_t]
            self.deep_text = _deep_prompt_list(depth_text - 1, n_ctx_text, text_encoder.width)
        else:
            n_ctx_text, prefix = 0, ctx_init
        self.prompts = ClassPrompts(text_encoder, classnames, prefix, n_ctx_text)

        self.vision_on = n_ctx_vision > 0 and depth_vision > 0
        if self.vision_on:
            require_vit(clip_model, "Visual prompting")
            image_encoder = PromptedImageEncoder(clip_model)
            _check_depth(depth_vision, image_encoder.num_layers, "PROMPT_DEPTH_VISION")
            self.ctx_vision = nn.Parameter(torch.randn(n_ctx_vision, image_encoder.width) * 0.02)  # [b_v, D_v]
            self.deep_vision = _deep_prompt_list(depth_vision - 1, n_ctx_vision, image_encoder.width)
            start = image_encoder.num_patch_tokens
            self.vision_slots = slice(start, start + n_ctx_vision)

    def text_inputs(self, straightforward=False):
        if not self.text_on:
            return self.prompts.assemble(None), self.prompts.tokens, None
        deep = DeepPrompts(slice(1, 1 + self.ctx.shape[0]), self._deep_replace(self.deep_text), shared=True)
        return self.prompts.assemble(self.ctx), self.prompts.tokens, deep

    def vision_inputs(self, straightforward=False):
        if not self.vision_on:
            return None, None
        return self.ctx_vision, DeepPrompts(self.vision_slots, self._deep_replace(self.deep_vision))

    @staticmethod
    def _deep_replace(prompt_list):
        def replace(layer, probe):
            return prompt_list[layer - 1] if layer - 1 < len(prompt_list) else None
        return replace


@TRAINER_REGISTRY.register()
class IVLP(CLIPPromptTrainer):
    CFG_NODE = "IVLP"
    CHECKPOINT_NAME = "VLPromptLearner"

    def build_prompt_learner(self, cfg, classnames, clip_model):
        m = self.method_cfg
        return VisionLanguagePrompts(clip_model, classnames, m.CTX_INIT, m.N_CTX_TEXT, m.PROMPT_DEPTH_TEXT,
                                     m.N_CTX_VISION, m.PROMPT_DEPTH_VISION)


@TRAINER_REGISTRY.register()
class VPT(CLIPPromptTrainer):
    CFG_NODE = "VPT"
    CHECKPOINT_NAME = "prompt_learner"

    def build_prompt_learner(self, cfg, classnames, clip_model):
        m = self.method_cfg
        return VisionLanguagePrompts(clip_model, classnames, m.CTX_INIT, 0, 0, m.N_CTX_VISION, m.PROMPT_DEPTH_VISION)
