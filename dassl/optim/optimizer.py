"""``build_optimizer``: a torch optimizer from ``cfg.OPTIM``."""

import math
import warnings

import torch
import torch.nn as nn

from dassl.config import check_range

__all__ = ["AVAI_OPTIMS", "MAX_LR", "check_learning_rate", "check_optim_cfg", "build_optimizer"]

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]
# No published recipe of this ecosystem comes near it (prompt learning: 0.002-0.0035; Dassl's ImageNet SGD: 0.1).
# Far above it, SGD and Adam steps overflow or diverge at once: reject before anything is built.
MAX_LR = 10.0
# The learning rates of cfg.OPTIM: the main one and the warm-up's (constant, or the start of the linear ramp).
LEARNING_RATE_KEYS = ("LR", "WARMUP_CONS_LR", "WARMUP_MIN_LR")


def check_learning_rate(optim_cfg):
    """Raise ``ValueError`` (one actionable line) unless every learning rate of ``cfg.OPTIM`` — ``LR``, the warm-up
    rates and, with ``STAGED_LR``, ``LR * BASE_LR_MULT`` — is a finite number in [0, MAX_LR]."""
    rates = {f"OPTIM.{key}": optim_cfg[key] for key in LEARNING_RATE_KEYS}
    if optim_cfg.STAGED_LR:
        rates["OPTIM.LR * OPTIM.BASE_LR_MULT"] = optim_cfg.LR * optim_cfg.BASE_LR_MULT
    for key, lr in rates.items():
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 <= lr <= MAX_LR:
            raise ValueError(
                f"{key} = {lr!r} is not a usable learning rate: use a number between 0 and {MAX_LR:g} "
                "(the published prompt-learning recipes use 0.002-0.0035)"
            )


def check_optim_cfg(optim_cfg):
    """Raise ``ValueError`` (one line naming the key and its range) unless the training keys of ``cfg.OPTIM`` are
    usable: ``MAX_EPOCH >= 1`` and the learning rates (:func:`check_learning_rate`)."""
    check_range("OPTIM.MAX_EPOCH", optim_cfg.MAX_EPOCH, 1, meaning="the number of training epochs")
    check_range("OPTIM.ADAM_EPS", optim_cfg.get("ADAM_EPS", 1e-8), 0.0, meaning="eps of the Adam-family optimizers")
    check_learning_rate(optim_cfg)


def _staged_param_groups(model, optim_cfg):
    """Children named in ``NEW_LAYERS`` get ``LR``; all other children ``LR * BASE_LR_MULT``."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            "OPTIM.STAGED_LR=True needs an nn.Module passed to build_optimizer() (to split its children), "
            f"got {type(model).__name__}"
        )
    if isinstance(model, nn.DataParallel):
        model = model.module
    new_layers = optim_cfg.NEW_LAYERS
    if isinstance(new_layers, str):
        new_layers = [new_layers]
    if not new_layers:
        warnings.warn("OPTIM.STAGED_LR=True but OPTIM.NEW_LAYERS is empty: every layer gets LR * BASE_LR_MULT")

    base_params, new_params = [], []
    for name, module in model.named_children():
        (new_params if name in new_layers else base_params).extend(module.parameters())
    return [
        {"params": base_params, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT},
        {"params": new_params},
    ]


def build_optimizer(model_or_params, optim_cfg, param_groups=None):
    """Build the optimizer named by ``optim_cfg.NAME``.

    Args:
        model_or_params: an ``nn.Module`` (all of its parameters are given to the optimizer; frozen ones
            never receive a gradient, so they are never updated) or an iterable of parameters / groups.
        optim_cfg: the ``cfg.OPTIM`` node.
        param_groups (list, optional): explicit parameter groups; they take precedence (STAGED_LR ignored).
    """
    name = optim_cfg.NAME
    if name not in AVAI_OPTIMS:
        raise ValueError(f"OPTIM.NAME must be one of {AVAI_OPTIMS}, but got {name!r}")
    check_learning_rate(optim_cfg)

    if param_groups is not None and optim_cfg.STAGED_LR:
        warnings.warn("OPTIM.STAGED_LR is ignored because explicit param_groups were given")
    if param_groups is None:
        if optim_cfg.STAGED_LR:
            param_groups = _staged_param_groups(model_or_params, optim_cfg)
        elif isinstance(model_or_params, nn.Module):
            param_groups = model_or_params.parameters()
        else:
            param_groups = model_or_params

    lr, weight_decay = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    adam = {"betas": (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2), "eps": optim_cfg.get("ADAM_EPS", 1e-8)}
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay, **adam)
    if name == "amsgrad":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay, amsgrad=True, **adam)
    if name == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=weight_decay,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            param_groups,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=weight_decay,
            alpha=optim_cfg.RMSPROP_ALPHA,
        )
    if name == "radam":
        return torch.optim.RAdam(param_groups, lr=lr, weight_decay=weight_decay, **adam)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, **adam)
