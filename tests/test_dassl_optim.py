"""Tests for dassl.optim: optimizers, schedulers, warm-up LR values and exact resume."""

import io
import math

import pytest
import torch
import torch.nn as nn

from dassl.config import get_cfg_default
from dassl.optim import (
    AVAI_OPTIMS,
    ConstantWarmupScheduler,
    LinearWarmupScheduler,
    build_lr_scheduler,
    build_optimizer,
)


def _optim_cfg(**overrides):
    cfg = get_cfg_default()
    for key, value in overrides.items():
        setattr(cfg.OPTIM, key, value)
    return cfg.OPTIM


def _per_epoch_lrs(optimizer, scheduler, epochs):
    """LR used in each epoch, stepping the scheduler once per epoch like the trainers do."""
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "name, cls, extra",
    [
        ("adam", torch.optim.Adam, {"amsgrad": False, "betas": (0.9, 0.999)}),
        ("amsgrad", torch.optim.Adam, {"amsgrad": True}),
        ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": False, "dampening": 0}),
        ("rmsprop", torch.optim.RMSprop, {"alpha": 0.99, "momentum": 0.9}),
        ("radam", torch.optim.RAdam, {"betas": (0.9, 0.999)}),
        ("adamw", torch.optim.AdamW, {"betas": (0.9, 0.999)}),
    ],
)
def test_build_optimizer_each_name(name, cls, extra):
    model = nn.Linear(3, 2)
    optim = build_optimizer(model, _optim_cfg(NAME=name, LR=0.01))
    assert type(optim) is cls
    group = optim.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 5e-4
    for key, value in extra.items():
        assert group[key] == value
    assert len(group["params"]) == 2  # whole module: weight and bias


@pytest.mark.parametrize("name", ["adam", "amsgrad", "radam", "adamw"])
def test_adam_eps_is_the_config_value(name):
    from dassl.config import extend_cfg
    from dassl.optim import check_optim_cfg

    params = [nn.Parameter(torch.zeros(2))]
    assert build_optimizer(params, _optim_cfg(NAME=name)).defaults["eps"] == 1e-8  # pure Dassl tree: torch's default
    optim_cfg = extend_cfg(get_cfg_default()).OPTIM
    optim_cfg.NAME, optim_cfg.ADAM_EPS = name, 1e-3  # TCP's README value
    assert build_optimizer(params, optim_cfg).defaults["eps"] == 1e-3
    optim_cfg.ADAM_EPS = -1e-3
    with pytest.raises(ValueError, match="OPTIM.ADAM_EPS = -0.001 is out of range"):
        check_optim_cfg(optim_cfg)


def test_build_optimizer_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="must be one of .*'sgd'.*but got 'sgdd'"):
        build_optimizer(nn.Linear(2, 2), _optim_cfg(NAME="sgdd"))
    assert AVAI_OPTIMS == ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]


def test_build_optimizer_params_and_staged_lr():
    model = nn.Sequential()
    model.add_module("backbone", nn.Linear(3, 3))
    model.add_module("head", nn.Linear(3, 2))
    optim = build_optimizer([model.head.weight], _optim_cfg(NAME="sgd", LR=0.1))
    assert optim.param_groups[0]["params"] == [model.head.weight]

    staged = build_optimizer(model, _optim_cfg(NAME="sgd", LR=0.1, STAGED_LR=True, NEW_LAYERS=("head",)))
    base_group, new_group = staged.param_groups
    assert base_group["lr"] == pytest.approx(0.01) and new_group["lr"] == 0.1
    assert {id(p) for p in new_group["params"]} == {id(model.head.weight), id(model.head.bias)}
    with pytest.raises(TypeError, match="STAGED_LR"):
        build_optimizer(list(model.parameters()), _optim_cfg(STAGED_LR=True, NEW_LAYERS=("head",)))


def test_constant_warmup_cosine_matches_dassl_values():
    cfg = _optim_cfg(NAME="sgd", LR=2e-3, LR_SCHEDULER="cosine", MAX_EPOCH=5,
                     WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5)  # fmt: skip
    optim = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_lr_scheduler(optim, cfg)
    assert isinstance(sched, ConstantWarmupScheduler)
    lrs = _per_epoch_lrs(optim, sched, 5)

    # Independent formula: constant warm-up, then cosine with T_max = MAX_EPOCH counted from epoch 1.
    expected = [1e-5] + [2e-3 * (1 + math.cos(math.pi * (e - 1) / 5)) / 2 for e in range(1, 5)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert [round(lr, 7) for lr in lrs] == [1e-5, 2.0e-3, 1.809e-3, 1.309e-3, 6.91e-4]


def test_linear_warmup_values():
    cfg = _optim_cfg(NAME="sgd", LR=0.1, LR_SCHEDULER="cosine", MAX_EPOCH=6,
                     WARMUP_EPOCH=2, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-4)  # fmt: skip
    optim = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_lr_scheduler(optim, cfg)
    assert isinstance(sched, LinearWarmupScheduler)
    lrs = _per_epoch_lrs(optim, sched, 5)
    expected = [1e-4, 0.1 * 1 / 2] + [0.1 * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(3)]
    assert lrs == pytest.approx(expected, rel=1e-9)


def test_step_schedulers():
    cfg = _optim_cfg(NAME="sgd", LR=1.0, LR_SCHEDULER="single_step", STEPSIZE=(2,), GAMMA=0.5)
    optim = build_optimizer(nn.Linear(2, 2), cfg)
    assert _per_epoch_lrs(optim, build_lr_scheduler(optim, cfg), 5) == pytest.approx([1, 1, 0.5, 0.5, 0.25])

    cfg = _optim_cfg(NAME="sgd", LR=1.0, LR_SCHEDULER="single_step", STEPSIZE=(-1,), MAX_EPOCH=3, GAMMA=0.1)
    optim = build_optimizer(nn.Linear(2, 2), cfg)
    assert _per_epoch_lrs(optim, build_lr_scheduler(optim, cfg), 4) == pytest.approx([1, 1, 1, 0.1])

    cfg = _optim_cfg(NAME="sgd", LR=1.0, LR_SCHEDULER="multi_step", STEPSIZE=(1, 3), GAMMA=0.1)
    optim = build_optimizer(nn.Linear(2, 2), cfg)
    assert _per_epoch_lrs(optim, build_lr_scheduler(optim, cfg), 4) == pytest.approx([1, 0.1, 0.1, 0.01])


def test_scheduler_bad_names():
    optim = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="LR_SCHEDULER must be one of"):
        build_lr_scheduler(optim, _optim_cfg(LR_SCHEDULER="poly"))
    with pytest.raises(ValueError, match="WARMUP_TYPE must be one of"):
        build_lr_scheduler(optim, _optim_cfg(LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="exp"))


def _warmup_cosine_pair():
    cfg = _optim_cfg(NAME="adam", LR=2e-3, LR_SCHEDULER="cosine", MAX_EPOCH=6,
                     WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5)  # fmt: skip
    optim = build_optimizer(nn.Linear(2, 2), cfg)
    return optim, build_lr_scheduler(optim, cfg)


def _roundtrip_weights_only(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_resume_into_new_optimizer_continues_exact_schedule():
    optim, sched = _warmup_cosine_pair()
    uninterrupted = _per_epoch_lrs(optim, sched, 6)

    optim, sched = _warmup_cosine_pair()
    first_part = _per_epoch_lrs(optim, sched, 3)
    saved = _roundtrip_weights_only({"optimizer": optim.state_dict(), "scheduler": sched.state_dict()})
    assert isinstance(saved["scheduler"]["successor"], dict)

    new_optim, new_sched = _warmup_cosine_pair()
    new_optim.load_state_dict(saved["optimizer"])
    new_sched.load_state_dict(saved["scheduler"])
    assert new_sched.successor.optimizer is new_optim
    resumed = first_part + _per_epoch_lrs(new_optim, new_sched, 3)
    assert resumed == pytest.approx(uninterrupted, rel=1e-12)
    assert len(set(round(lr, 12) for lr in resumed[1:])) == 5  # keeps decaying (Dassl froze it)


def test_load_state_dict_accepts_old_dassl_successor_object():
    optim, sched = _warmup_cosine_pair()
    uninterrupted = _per_epoch_lrs(optim, sched, 5)

    optim, sched = _warmup_cosine_pair()
    first_part = _per_epoch_lrs(optim, sched, 2)
    old_style = sched.state_dict()
    old_style["successor"] = sched.successor  # how Dassl 0.6.3 stored it (a pickled object)

    new_optim, new_sched = _warmup_cosine_pair()
    new_optim.load_state_dict(optim.state_dict())
    new_sched.load_state_dict(old_style)
    assert first_part + _per_epoch_lrs(new_optim, new_sched, 3) == pytest.approx(uninterrupted, rel=1e-12)
