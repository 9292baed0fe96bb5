"""CoCoOp (Zhou et al., CVPR 2022): the context is shifted per image by a small meta-network of its features."""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_patch.chunked import encode_text
from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer, PromptedCLIP
from .prompting import ClassPrompts, init_context


@register_config
def add_cocoop_config(cfg):
    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COCOOP.CTX_INIT = ""  # initialise the context from these words (their count then sets N_CTX)
    cfg.TRAINER.COCOOP.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)


class CoCoOpPromptLearner(nn.Module):
    """Shared context ``ctx`` [b, D_t] plus ``meta_net``: image feature [E] -> context shift [D_t]."""

    def __init__(self, method_cfg, classnames, backbone):
        super().__init__()
        text_encoder = backbone.require_text_encoder("CoCoOp")
        n_ctx, prefix, vectors = init_context(backbone, method_cfg.N_CTX, method_cfg.CTX_INIT, True)
        print(f'Initial context: "{prefix}" ({n_ctx} context words)')
        self.ctx = nn.Parameter(vectors)  # [b, D_t]
        embed_dim = backbone.embed_dim
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(embed_dim, embed_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(embed_dim // 16, text_encoder.width)),
        ]))
        self.prompts = ClassPrompts(backbone, classnames, prefix, n_ctx)

    def conditioned_embeddings(self, image_feature):
        """image_feature [E] (normalised) -> class prompt embeddings [n_cls, L, D_t] for that image."""
        shift = self.meta_net(image_feature.float())  # [D_t]
        return self.prompts.assemble(self.ctx + shift)  # [n_cls, L, D_t]


class CoCoOpCLIP(PromptedCLIP):
    """Text features depend on the image, so they are encoded per image (no cache)."""

    def forward(self, image):
        image_features = self.image_encoder(image, straightforward=self.straightforward)  # [B, E]
        image_features = F.normalize(image_features.float(), dim=-1)
        tokens = self.prompt_learner.prompts.tokens
        logits = []
        for feature in image_features:
            embeddings = self.prompt_learner.conditioned_embeddings(feature)  # [n_cls, L, D_t]
            text = encode_text(self.text_encoder, embeddings, tokens, None, self.straightforward,
                               self.text_chunk_classes)  # [n_cls, E]
            text = F.normalize(text.float(), dim=-1)
            logits.append(self.logit_scale.exp() * feature @ text.t())  # [n_cls]
        return torch.stack(logits)  # [B, n_cls]


@TRAINER_REGISTRY.register()
class CoCoOp(CLIPPromptTrainer):
    DISPLAY_RANK = 30  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "COCOOP"
    CHECKPOINT_NAME = "prompt_learner"
    RELEASED_AS_LEARNER = True

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_range("TRAINER.COCOOP.N_CTX", cfg.TRAINER.COCOOP.N_CTX, 1, meaning="learnable context tokens")

    def build_prompt_learner(self, cfg, classnames, backbone):
        return CoCoOpPromptLearner(self.method_cfg, classnames, backbone)

    def build_clip_model(self, backbone, learner):
        return CoCoOpCLIP(backbone, learner, **self.model_options())
