"""A prompt-capable CLIP: loading by backbone name, precision policy and one prompted forward pass."""
from .loading import (OPENAI_BACKBONE_NAMES, SHIPPED_BACKBONES, WeightsNotFoundError, available_backbones,
                      default_cache_dir, download_weights, load_clip, locate_weights, openai_backbones,
                      read_state_dict)
from .precision import PRECISIONS, Precision
from .prompted import (AttentionProbe, DeepPrompts, PromptedImageEncoder, PromptedTextEncoder, ResNetImageEncoder,
                       image_encoder_for, require_vit, run_blocks)
from .random_backbones import RANDOM_BACKBONES, build_random_clip
