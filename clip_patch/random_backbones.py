"""CLIP models with the real OpenAI architecture and RANDOM weights, for tests and benchmarks only.

* ``random-<OpenAI name>`` (e.g. ``random-ViT-B/16``): the exact shapes of that OpenAI backbone — parameter counts
  and compute match the real model, so benchmarks and counting tests need no download.
* ``tiny-ViT`` / ``tiny-RN``: 32x32 inputs and narrow layers, 12 transformer layers on each side so every published
  prompt depth (≤ 12) applies unchanged; a forward pass takes milliseconds. Use ``INPUT.SIZE (32, 32)``.

Weights are drawn from a fixed seed that does not touch the global RNG, so every build of a name is identical
(an eval-only run sees the same "pretrained" weights as the training run).
"""
import torch

from .openai_clip import openai_clip

VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77

# name -> (embed_dim, image_resolution, vision_layers, vision_width, patch_size, text_width, text_heads, text_layers)
OPENAI_SHAPES = {
    "RN50": (1024, 224, (3, 4, 6, 3), 64, None, 512, 8, 12),
    "RN101": (512, 224, (3, 4, 23, 3), 64, None, 512, 8, 12),
    "RN50x4": (640, 288, (4, 6, 10, 6), 80, None, 640, 10, 12),
    "RN50x16": (768, 384, (6, 8, 18, 8), 96, None, 768, 12, 12),
    "RN50x64": (1024, 448, (3, 15, 36, 10), 128, None, 1024, 16, 12),
    "ViT-B/32": (512, 224, 12, 768, 32, 512, 8, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 512, 8, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 768, 12, 12),
    "ViT-L/14@336px": (768, 336, 24, 1024, 14, 768, 12, 12),
}
RANDOM_BACKBONES = {f"random-{name}": shape for name, shape in OPENAI_SHAPES.items()}
RANDOM_BACKBONES["tiny-ViT"] = (32, 32, 12, 64, 8, 64, 4, 12)  # 16 patches + CLS; heads = width // 64 = 1
RANDOM_BACKBONES["tiny-RN"] = (32, 32, (1, 1, 1, 1), 8, None, 64, 4, 12)


def build_random_clip(name, seed=0):
    """Randomly initialised ``clip.model.CLIP`` with the shapes registered under ``name`` (fp32)."""
    embed, resolution, v_layers, v_width, patch, t_width, t_heads, t_layers = RANDOM_BACKBONES[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = openai_clip().model.CLIP(embed, resolution, v_layers, v_width, patch or 0, CONTEXT_LENGTH, VOCAB_SIZE,
                     t_width, t_heads, t_layers)
    return model.float().eval()


def shape_layers(shape):
    """``(text layers, vision layers)`` of a shape above: vision None for a ResNet (its ``vision_layers`` is a tuple of
    stage depths, not a transformer)."""
    vision_layers, text_layers = shape[2], shape[7]
    return text_layers, vision_layers if isinstance(vision_layers, int) else None
