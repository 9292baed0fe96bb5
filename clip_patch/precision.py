"""PREC: how the frozen CLIP encoders compute. Trainable tensors and optimizer state stay fp32 in every mode.

| PREC | on CUDA | on CPU (and any other device) |
|---|---|---|
| fp32 | fp32 | fp32 |
| fp16 | frozen weights in fp16, prompts cast at injection, GradScaler | fp32 (one warning) |
| amp  | fp32 weights, fp16 autocast, GradScaler | fp32 (one warning) |
| bf16 | fp32 weights, bf16 autocast (1) | bf16 autocast (2) |

(1) one warning on GPUs without native bf16 (compute capability < 8.0): it runs emulated, slowly.
(2) fp32 with one warning on a device type without autocast.
"""
import contextlib
import warnings

import torch

PRECISIONS = ("fp16", "fp32", "amp", "bf16")
COMPUTE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "amp": torch.float16, "bf16": torch.bfloat16}


def _native_bf16(device):
    """Whether a CUDA device computes bf16 natively (Ampere, compute capability 8.0, and later)."""
    return torch.cuda.get_device_capability(device)[0] >= 8


class Precision:
    """The compute precision a run actually uses on its device, after the fallbacks of the table above."""

    def __init__(self, prec, device):
        if prec not in PRECISIONS:
            raise ValueError(f"PREC must be one of {PRECISIONS}, got '{prec}'")
        device = torch.device(device)
        if device.type != "cuda" and prec in ("fp16", "amp"):
            warnings.warn(f"PREC '{prec}' needs a CUDA device; running in fp32 on {device.type}")
            prec = "fp32"
        if prec == "bf16" and not torch.amp.is_autocast_available(device.type):
            warnings.warn(f"PREC 'bf16' needs autocast, which {device.type} does not have; running in fp32")
            prec = "fp32"
        if prec == "bf16" and device.type == "cuda" and torch.cuda.is_available() and not _native_bf16(device):
            warnings.warn(f"PREC 'bf16' on {torch.cuda.get_device_name(device)}, which has no native bf16: it "
                          f"runs emulated and slowly; PREC fp16 or amp is faster there")
        self.prec, self.device = prec, device

    @property
    def compute_dtype(self):
        """The dtype the frozen encoders' matrix products run in."""
        return COMPUTE_DTYPES[self.prec]

    @property
    def unit_roundoff(self):
        """u = 2^-p of the compute dtype (p mantissa bits + 1): fp32 2^-24, fp16 2^-11, bf16 2^-8."""
        return torch.finfo(self.compute_dtype).eps / 2

    @property
    def casts_frozen_weights(self):
        """True when the frozen weights themselves are stored in the compute dtype (PREC fp16 on CUDA)."""
        return self.prec == "fp16"

    @property
    def uses_grad_scaler(self):
        """True when gradients are computed in fp16 and need loss scaling (fp16 and amp, CUDA only)."""
        return self.prec in ("fp16", "amp")

    def prepare_frozen(self, backbone):
        """Cast the frozen weights of a :class:`~clip_patch.backbones.Backbone` to the compute dtype (fp16 only for
        PREC fp16 on CUDA), as its family casts them (OpenAI's ``convert_weights``, open_clip's
        ``convert_weights_to_lp``)."""
        if self.casts_frozen_weights:
            backbone.cast_frozen_to_fp16()
        return backbone

    def autocast(self):
        if self.prec in ("amp", "bf16"):
            return torch.autocast(self.device.type, dtype=self.compute_dtype)
        return contextlib.nullcontext()

    def grad_scaler(self):
        """A GradScaler for fp16 compute on CUDA, else None."""
        if self.uses_grad_scaler:
            return torch.amp.GradScaler(self.device.type)
        return None
