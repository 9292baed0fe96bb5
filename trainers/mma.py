"""MMA (multi-modal adapter, Yang et al., CVPR 2024) as its released code computes it: no prompt, fixed class texts
"<TEXT_CTX_INIT> <name>.", and an adapter beside each of the blocks ADAPTER_START..ADAPTER_END (1-based, inclusive) of
both encoders.

Beside block k of an encoder, on every token x of the block's input (docs/MMA.md):

    block_k(x) + ADAPTER_SCALE * up_k(shared_k(down_k(ln_1_k(x))))

``down_k`` = Linear(D -> ADAPTER_DIM) + ReLU and ``up_k`` = Linear(ADAPTER_DIM -> D) are the encoder's own;
``shared_k`` = Linear(ADAPTER_DIM -> ADAPTER_DIM) + ReLU is one module used by both encoders; ``ln_1_k`` is the
block's frozen first LayerNorm. The adapters run as the prompted forward's per-block residual branch
(:data:`clip_patch.prompted.BlockBranch`), a token-wise function, so every fast-path shortcut stays exact.

The release multiplies the gradient of every adapter parameter by 1 / ADAPTER_SCALE (its gradient scale layers
around the adapter, identity in the forward); ``RELEASE_GRADIENT_SCALE`` (default True) reproduces it, False gives the
true gradients (ADAPTER_SCALE times the release's). The learner's parameter names are the release's
(``text_adapter.<k>.down.0.weight``, ``shared_adapter.<k>.0.weight``, ...); the release saves this learner alone as
``adapter_learner``, so checkpoints pass both ways unchanged.
"""
from collections import OrderedDict

import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer
from .prompting import ClassPrompts, shared_layers


@register_config
def add_mma_config(cfg):
    cfg.TRAINER.MMADAPTER = CN()
    cfg.TRAINER.MMADAPTER.TEXT_CTX_INIT = ""  # words before each class name: "<TEXT_CTX_INIT> <name>."
    cfg.TRAINER.MMADAPTER.PREC = "amp"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.MMADAPTER.ADAPTER_START = 4  # first adapted block, 1-based (the published configs: 5)
    cfg.TRAINER.MMADAPTER.ADAPTER_END = 12  # last adapted block, 1-based, inclusive
    cfg.TRAINER.MMADAPTER.ADAPTER_DIM = 32  # adapter bottleneck width
    cfg.TRAINER.MMADAPTER.ADAPTER_SCALE = 0.1  # factor on the adapter output (the published configs: 0.001)
    cfg.TRAINER.MMADAPTER.RELEASE_GRADIENT_SCALE = True  # adapter gradients / ADAPTER_SCALE as released; False: true


def gradient_scaled(tensor, factor):
    """``tensor`` in the forward (exactly); its gradient multiplied by ``factor`` in the backward."""
    frozen = tensor.detach()
    return frozen + (tensor - frozen) * factor


def adapter_list(width, num_layers, start, end, dim):
    """Slots 0..num_layers; slot k in start..end adapts block k. The release's rule: an adapter whose width equals its
    bottleneck is one Linear + ReLU (the shared adapter), otherwise ``down`` (Linear + ReLU) and ``up`` (Linear)."""
    slots = [None] * (num_layers + 1)
    for k in range(start, end + 1):
        if width == dim:
            slots[k] = nn.Sequential(nn.Linear(width, dim), nn.ReLU())
        else:
            slots[k] = nn.Sequential(OrderedDict(down=nn.Sequential(nn.Linear(width, dim), nn.ReLU()),
                                                 up=nn.Linear(dim, width)))
    adapters = nn.ModuleList(slots)
    for module in adapters.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return adapters


def check_adapter_end(end, text_layers, vision_layers):
    """Adapters sit beside blocks ADAPTER_START..ADAPTER_END of both encoders: END at most the blocks both have (not
    checked while either count is unknown; START <= END is ``check_cfg``'s)."""
    layers = shared_layers(text_layers, vision_layers)
    if layers is not None and end > layers:
        raise ValueError(f"TRAINER.MMADAPTER.ADAPTER_END is {end}, but this backbone's encoders have {layers} "
                         f"blocks: set ADAPTER_END to at most {layers}.")


class AdapterLearner(nn.Module):
    """Every trainable tensor of MMA: the text, visual and shared adapters (release names), and the fixed class texts
    (not saved)."""

    def __init__(self, backbone, classnames, text_ctx_init, start, end, dim, scale, release_gradient_scale=True):
        super().__init__()
        backbone.require_vit("MMA")
        text_encoder, image_encoder = backbone.require_text_encoder("MMA"), backbone.image_encoder
        check_adapter_end(end, text_encoder.num_layers, image_encoder.num_layers)
        if dim in (text_encoder.width, image_encoder.width):
            raise ValueError(f"TRAINER.MMADAPTER.ADAPTER_DIM {dim} equals an encoder width of this backbone (text "
                             f"{text_encoder.width}, vision {image_encoder.width}), which leaves no bottleneck: use a "
                             f"smaller ADAPTER_DIM (published: 32).")
        self.text_adapter = adapter_list(text_encoder.width, text_encoder.num_layers, start, end, dim)
        self.visual_adapter = adapter_list(image_encoder.width, image_encoder.num_layers, start, end, dim)
        self.shared_adapter = adapter_list(dim, image_encoder.num_layers, start, end, dim)
        self.scale = float(scale)
        self.gradient_factor = 1.0 / self.scale if release_gradient_scale else 1.0
        self.prompts = ClassPrompts(backbone, classnames, text_ctx_init, 0)

    def linear(self, layer, x):
        """``layer`` (an nn.Linear) on x, its parameter gradients multiplied by ``gradient_factor``."""
        weight, bias = layer.weight, layer.bias
        if self.gradient_factor != 1.0:
            weight, bias = gradient_scaled(weight, self.gradient_factor), gradient_scaled(bias, self.gradient_factor)
        return F.linear(x.to(weight.dtype), weight, bias)

    def adapt(self, adapter, shared, block, x):
        """The adapter branch on a block's incoming tokens x [..., D] -> [..., D]."""
        h = F.relu(self.linear(adapter.down[0], block.ln_1(x)))  # [..., dim]
        h = F.relu(self.linear(shared[0], h))  # [..., dim]
        return self.linear(adapter.up, h) * self.scale  # [..., D]

    def block_branch(self, side):
        adapters = self.text_adapter if side == "text" else self.visual_adapter

        def branch(layer, block, x):
            k = layer + 1  # slot k adapts block k (1-based)
            if adapters[k] is None:
                return None
            return self.adapt(adapters[k], self.shared_adapter[k], block, x)
        return branch

    def text_inputs(self):
        return self.prompts.assemble(None), self.prompts.tokens, None  # [n_cls, L, D], [n_cls, L]

    def vision_inputs(self):
        return None, None


@TRAINER_REGISTRY.register()
class MultiModalAdapter(CLIPPromptTrainer):
    DISPLAY_RANK = 77  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "MMADAPTER"
    CHECKPOINT_NAME = "adapter_learner"
    RELEASED_AS_LEARNER = True

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.MMADAPTER
        check_range("TRAINER.MMADAPTER.ADAPTER_START", m.ADAPTER_START, 1,
                    meaning="first adapted block, 1-based; adapters on the embeddings (0) are not supported")
        check_range("TRAINER.MMADAPTER.ADAPTER_END", m.ADAPTER_END, m.ADAPTER_START,
                    meaning="last adapted block, 1-based, inclusive; at least ADAPTER_START")
        check_range("TRAINER.MMADAPTER.ADAPTER_DIM", m.ADAPTER_DIM, 1, meaning="adapter bottleneck width")
        check_range("TRAINER.MMADAPTER.ADAPTER_SCALE", m.ADAPTER_SCALE, 1e-12,
                    meaning="factor on the adapter output; positive, since the released gradients divide by it")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        check_adapter_end(cfg.TRAINER.MMADAPTER.ADAPTER_END, text_layers, vision_layers)

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        return AdapterLearner(backbone, classnames, m.TEXT_CTX_INIT, m.ADAPTER_START, m.ADAPTER_END, m.ADAPTER_DIM,
                              m.ADAPTER_SCALE, m.RELEASE_GRADIENT_SCALE)
