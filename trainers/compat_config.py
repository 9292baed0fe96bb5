"""Config keys of ecosystem methods this project does not implement, so their published YAML files still merge.

Every key here is inert: it is read by no code of this project and kept for compatibility only.
"""
from yacs.config import CfgNode as CN

from dassl.config import register_config


@register_config
def add_compat_config(cfg):
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
