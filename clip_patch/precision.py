"""PREC: how the frozen CLIP encoders compute. Trainable tensors and optimizer state stay fp32 in every mode.

| PREC | on CUDA | on CPU |
|---|---|---|
| fp32 | fp32 | fp32 |
| fp16 | frozen weights in fp16, prompts cast at injection, GradScaler | fp32 (one warning) |
| amp  | fp32 weights, fp16 autocast, GradScaler | fp32 (one warning) |
| bf16 | fp32 weights, bf16 autocast | bf16 autocast |
"""
import contextlib
import warnings

import torch

from .openai_clip import openai_clip

PRECISIONS = ("fp16", "fp32", "amp", "bf16")


class Precision:
    """The compute precision a run actually uses on its device, after CPU fallbacks."""

    def __init__(self, prec, device):
        if prec not in PRECISIONS:
            raise ValueError(f"PREC must be one of {PRECISIONS}, got '{prec}'")
        device = torch.device(device)
        if device.type != "cuda" and prec in ("fp16", "amp"):
            warnings.warn(f"PREC '{prec}' needs a CUDA device; running in fp32 on {device.type}")
            prec = "fp32"
        self.prec, self.device = prec, device

    def prepare_frozen(self, clip_model):
        """Cast the frozen CLIP weights to the compute dtype (fp16 only for PREC fp16 on CUDA)."""
        if self.prec == "fp16":
            openai_clip().model.convert_weights(clip_model)  # OpenAI's own conversion: Linear/Conv/attention weights to fp16
        return clip_model

    def autocast(self):
        if self.prec == "amp":
            return torch.autocast(self.device.type, dtype=torch.float16)
        if self.prec == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def grad_scaler(self):
        """A GradScaler for fp16 compute on CUDA, else None."""
        if self.prec in ("fp16", "amp"):
            return torch.amp.GradScaler(self.device.type)
        return None
