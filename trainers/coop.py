"""CoOp (Zhou et al., IJCV 2022): learnable context vectors in the text prompt, shared or class-specific."""

import torch
import torch.nn as nn

from yacs.config import CfgNode as CN

from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer
from .prompting import ClassPrompts, init_context


@register_config
def add_coop_config(cfg):
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COOP.CSC = False  # class-specific context (one context per class) instead of a shared one
    cfg.TRAINER.COOP.CTX_INIT = ""  # initialise the context from these words (their count then sets N_CTX)
    cfg.TRAINER.COOP.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # where the class name goes: end | middle | front


class CoOpPromptLearner(nn.Module):
    """Context ``ctx`` [b, D] (or [n_cls, b, D] with CSC) placed around the class-name tokens."""

    CONTEXT_SETS = "class"  # with CSC, ctx's leading axis is the class (analysis.interpret_prompt)

    def __init__(self, method_cfg, classnames, backbone):
        super().__init__()
        text_encoder = backbone.require_text_encoder("CoOp")
        n_ctx, prefix, vectors = init_context(backbone, method_cfg.N_CTX, method_cfg.CTX_INIT, True)
        if method_cfg.CSC and not method_cfg.CTX_INIT:
            vectors = torch.empty(len(classnames), n_ctx, text_encoder.width)
            nn.init.normal_(vectors, std=0.02)
        position = method_cfg.CLASS_TOKEN_POSITION
        if position not in ("end", "middle", "front"):
            raise ValueError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be end, middle or front, got '{position}'")
        print(f'Initial context: "{prefix}" ({n_ctx} context words)')
        self.ctx = nn.Parameter(vectors)  # [b, D] or [n_cls, b, D]
        self.prompts = ClassPrompts(backbone, classnames, prefix, n_ctx)
        self.position = position
        self.name_lens = [len(backbone.token_ids(name.replace("_", " "))) for name in classnames]

    def _embeddings(self):
        if self.position == "end":
            return self.prompts.assemble(self.ctx)  # [n_cls, L, D]
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.expand(self.prompts.num_classes, -1, -1)
        ctx = ctx.to(self.prompts.token_prefix.dtype)  # [n_cls, b, D]
        half = ctx.shape[1] // 2
        rows = []
        for i, name_len in enumerate(self.name_lens):
            prefix = self.prompts.token_prefix[i: i + 1]  # [1, 1, D]
            name = self.prompts.token_suffix[i: i + 1, :name_len]  # [1, name_len, D]
            rest = self.prompts.token_suffix[i: i + 1, name_len:]  # [1, *, D] ("." EOT pad)
            c = ctx[i: i + 1]
            if self.position == "middle":
                rows.append(torch.cat([prefix, c[:, :half], name, c[:, half:], rest], dim=1))
            else:  # front
                rows.append(torch.cat([prefix, name, c, rest], dim=1))
        return torch.cat(rows, dim=0)  # [n_cls, L, D]

    def text_inputs(self):
        return self._embeddings(), self.prompts.tokens, None

    def vision_inputs(self):
        return None, None


@TRAINER_REGISTRY.register()
class CoOp(CLIPPromptTrainer):
    DISPLAY_RANK = 20  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "COOP"
    CHECKPOINT_NAME = "prompt_learner"
    RELEASED_AS_LEARNER = True

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_range("TRAINER.COOP.N_CTX", cfg.TRAINER.COOP.N_CTX, 1, meaning="learnable context tokens")

    def build_prompt_learner(self, cfg, classnames, backbone):
        return CoOpPromptLearner(self.method_cfg, classnames, backbone)
