"""Config keys of ecosystem methods this project does not implement, so their published YAML files still merge.

Every key here is inert: it is read by no code of this project and kept for compatibility only.
"""
from yacs.config import CfgNode as CN

from dassl.config import register_config


@register_config
def add_compat_config(cfg):
    cfg.TRAINER.UPT = CN()  # UPT — inert, kept for compatibility
    cfg.TRAINER.UPT.N_CTX = 2  # inert, kept for compatibility
    cfg.TRAINER.UPT.CTX_INIT = "a photo of a"  # inert, kept for compatibility
    cfg.TRAINER.UPT.PREC = "fp16"  # inert, kept for compatibility
    cfg.TRAINER.UPT.PROMPT_DEPTH = 1  # inert, kept for compatibility
