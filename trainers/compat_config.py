"""Config keys of ecosystem methods this project does not implement, so their published YAML files still merge.

Every key here is inert: it is read by no code of this project and kept for compatibility only.
"""
from yacs.config import CfgNode as CN

from dassl.config import register_config


@register_config
def add_compat_config(cfg):
    cfg.TRAINER.PROMPTSRC = CN()  # PromptSRC (Khattak et al., ICCV 2023) — inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.N_CTX_VISION = 4  # inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.N_CTX_TEXT = 4  # inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.CTX_INIT = "a photo of a"  # inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.PREC = "fp16"  # inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = 9  # inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 9  # inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = 25  # inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT = 10  # inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15  # inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.GPA_STD = 1  # inert, kept for compatibility
    cfg.TRAINER.PROMPTSRC.N_CTX = 4  # inert, kept for compatibility (BMIP repository's PromptSRC_BMIP)
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH = 9  # inert, kept for compatibility (BMIP repository's PromptSRC_BMIP)
    cfg.TRAINER.PROMPTSRC.CONNECT_METHOD = "None"  # inert, kept for compatibility
    cfg.TRAINER.BITP = CN()  # BITP, BMIP's predecessor in the BMIP repository — inert, kept for compatibility
    cfg.TRAINER.BITP.N_CTX = 2  # inert, kept for compatibility
    cfg.TRAINER.BITP.CTX_INIT = "a photo of a"  # inert, kept for compatibility
    cfg.TRAINER.BITP.PREC = "fp16"  # inert, kept for compatibility
    cfg.TRAINER.BITP.PROMPT_DEPTH = 9  # inert, kept for compatibility
    cfg.TRAINER.BITP.CONNECT_METHOD = "add"  # inert, kept for compatibility
    cfg.TRAINER.ProDA = CN()  # ProDA — inert, kept for compatibility
    cfg.TRAINER.ProDA.N_CTX = 16  # inert, kept for compatibility
    cfg.TRAINER.ProDA.N_PROMPT = 32  # inert, kept for compatibility
    cfg.TRAINER.ProDA.PREC = "fp16"  # inert, kept for compatibility
    cfg.TRAINER.UPT = CN()  # UPT — inert, kept for compatibility
    cfg.TRAINER.UPT.N_CTX = 2  # inert, kept for compatibility
    cfg.TRAINER.UPT.CTX_INIT = "a photo of a"  # inert, kept for compatibility
    cfg.TRAINER.UPT.PREC = "fp16"  # inert, kept for compatibility
    cfg.TRAINER.UPT.PROMPT_DEPTH = 1  # inert, kept for compatibility
