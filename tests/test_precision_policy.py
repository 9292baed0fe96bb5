"""The precision policy (clip_patch/precision.py): what each PREC computes on each device type, decided without a
GPU (CUDA decisions are made from the device name alone; autocast objects are inspected, not entered)."""
import warnings

import pytest
import torch

from clip_patch import Precision, load_backbone

# (PREC, device) -> (computes, compute dtype, fp16 frozen weights, autocast dtype or None, GradScaler, warning)
FALLBACK = "PREC '{}' needs a CUDA device; running in fp32 on {}"
POLICY = {
    ("fp32", "cpu"): ("fp32", torch.float32, False, None, False, None),
    ("fp16", "cpu"): ("fp32", torch.float32, False, None, False, FALLBACK.format("fp16", "cpu")),
    ("amp", "cpu"): ("fp32", torch.float32, False, None, False, FALLBACK.format("amp", "cpu")),
    ("bf16", "cpu"): ("bf16", torch.bfloat16, False, torch.bfloat16, False, None),
    ("fp32", "cuda"): ("fp32", torch.float32, False, None, False, None),
    ("fp16", "cuda"): ("fp16", torch.float16, True, None, True, None),
    ("amp", "cuda"): ("amp", torch.float16, False, torch.float16, True, None),
    ("bf16", "cuda"): ("bf16", torch.bfloat16, False, torch.bfloat16, False, None),
    ("fp16", "cuda:1"): ("fp16", torch.float16, True, None, True, None),
    ("fp16", "meta"): ("fp32", torch.float32, False, None, False, FALLBACK.format("fp16", "meta")),
    ("bf16", "meta"): ("fp32", torch.float32, False, None, False,
                       "PREC 'bf16' needs autocast, which meta does not have; running in fp32"),
}


@pytest.mark.parametrize("prec, device", sorted(POLICY))
def test_policy_decision_for_each_prec_and_device(prec, device):
    computes, dtype, fp16_weights, autocast_dtype, scaler, warning = POLICY[(prec, device)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precision = Precision(prec, device)
    assert [str(w.message) for w in caught] == ([warning] if warning else [])
    assert (precision.prec, precision.compute_dtype) == (computes, dtype)
    assert precision.device == torch.device(device)
    assert precision.casts_frozen_weights is fp16_weights and precision.uses_grad_scaler is scaler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available ... Disabling autocast" on this machine
        context = precision.autocast()
    if autocast_dtype is None:
        assert not isinstance(context, torch.autocast)
    else:
        assert isinstance(context, torch.autocast)
        assert (context.device, context.fast_dtype) == (torch.device(device).type, autocast_dtype)


def test_unit_roundoff_is_half_the_machine_epsilon_of_the_compute_dtype():
    assert Precision("fp32", "cpu").unit_roundoff == 2.0 ** -24
    assert Precision("fp16", "cuda").unit_roundoff == 2.0 ** -11
    assert Precision("amp", "cuda").unit_roundoff == 2.0 ** -11
    assert Precision("bf16", "cpu").unit_roundoff == 2.0 ** -8


def test_grad_scaler_only_where_gradients_are_fp16():
    assert Precision("bf16", "cpu").grad_scaler() is None and Precision("fp32", "cuda").grad_scaler() is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler disables itself without CUDA; its type is what is decided
        assert isinstance(Precision("amp", "cuda").grad_scaler(), torch.amp.GradScaler)


def test_fp16_policy_converts_the_frozen_weights_clip_does_and_nothing_else():
    backbone = load_backbone("tiny-ViT")
    Precision("fp16", "cuda").prepare_frozen(backbone)  # the conversion itself runs on CPU tensors
    clip_model = backbone.model
    block = clip_model.transformer.resblocks[0]
    half = [clip_model.visual.conv1.weight, clip_model.visual.proj, clip_model.text_projection,
            block.attn.in_proj_weight, block.attn.out_proj.weight, block.mlp.c_fc.weight]
    single = [clip_model.token_embedding.weight, clip_model.positional_embedding, clip_model.ln_final.weight,
              block.ln_1.weight, clip_model.visual.class_embedding, clip_model.logit_scale]
    assert all(t.dtype == torch.float16 for t in half)
    assert all(t.dtype == torch.float32 for t in single)
    fp32 = load_backbone("tiny-ViT")
    Precision("amp", "cuda").prepare_frozen(fp32)
    Precision("bf16", "cuda").prepare_frozen(fp32)
    assert all(p.dtype == torch.float32 for p in fp32.model.parameters())


@pytest.mark.parametrize("capability, warns", [((7, 0), True), ((8, 0), False), ((9, 0), False)])
def test_bf16_warns_on_gpus_without_native_bf16(monkeypatch, capability, warns):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precision = Precision("bf16", "cuda")
    messages = [str(w.message) for w in caught]
    assert precision.prec == "bf16"  # still honoured: emulated bf16 runs, only slowly
    if warns:
        assert messages == ["PREC 'bf16' on Tesla V100-SXM2-16GB, which has no native bf16: it runs emulated and "
                            "slowly; PREC fp16 or amp is faster there"]
    else:
        assert messages == []
