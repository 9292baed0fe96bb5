"""A prompt-capable CLIP: backbone families behind one seam, loading, precision policy and one prompted forward pass."""
from .backbones import (FAMILIES, Backbone, BackboneSpec, backbone_depths, check_backbone, load_backbone,
                        locate_backbone_weights, record_differences)
from .loading import (OPENAI_BACKBONE_NAMES, SHIPPED_BACKBONES, WeightsNotFoundError, available_backbones,
                      default_cache_dir, download_weights, load_clip, locate_weights, openai_backbones,
                      read_state_dict)
from .precision import PRECISIONS, Precision
from .prompted import (AttentionProbe, BlockBranch, BlockView, DeepPrompts, OpaqueImageEncoder, OpaqueTextEncoder,
                       PromptedImageEncoder, PromptedTextEncoder, TextTower, VisionTower, run_blocks)
from .random_backbones import RANDOM_BACKBONES, build_random_clip
