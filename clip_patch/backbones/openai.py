"""The ``openai`` family: OpenAI's ``clip`` package (its nine checkpoints, local files in its format, the shipped
MicroViT and the random-weight shapes of :mod:`clip_patch.random_backbones`), loaded by :mod:`clip_patch.loading`."""
import functools

import torch

from ..loading import load_clip
from ..openai_clip import openai_clip
from ..prompted import (BlockView, OpaqueImageEncoder, PromptedImageEncoder, PromptedTextEncoder, TextTower,
                        VisionTower)
from .base import Backbone

# The pixel normalisation OpenAI's models were trained with (clip.clip._transform).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def eot_by_argmax(tokens):
    """tokens [n, L] -> [n]: the EOT position (CLIP's EOT id is the largest in its vocabulary)."""
    return tokens.argmax(dim=-1)


def block_views(resblocks):
    """OpenAI ``ResidualAttentionBlock`` s as :class:`BlockView` s (no layer scale; the text mask is the block's)."""
    return [BlockView(b.ln_1, b.attn, b.ln_2, b.mlp, attn_mask=b.attn_mask, batch_first=b.attn.batch_first)
            for b in resblocks]


def text_tower(model):
    return TextTower(model.token_embedding, model.positional_embedding, block_views(model.transformer.resblocks),
                     model.ln_final, model.text_projection, eot_by_argmax)


def image_encoder(visual):
    """The prompted ViT encoder, or OpenAI's ResNet as it is."""
    if not hasattr(visual, "transformer"):
        return OpaqueImageEncoder(visual, "a ResNet")
    tower = VisionTower(visual.conv1, visual.class_embedding, visual.positional_embedding, visual.ln_pre,
                        block_views(visual.transformer.resblocks), visual.ln_post, visual.proj)
    return PromptedImageEncoder(tower)


@functools.lru_cache(maxsize=None)
def _bpe():
    return openai_clip().simple_tokenizer.SimpleTokenizer()


class OpenAIBackbone(Backbone):
    def tokenize(self, texts):
        with torch.device("cpu"):
            return openai_clip().tokenize(texts)  # [n, 77]

    def token_ids(self, text):
        return _bpe().encode(text)

    @property
    def decoder(self):
        return _bpe().decoder

    def cast_frozen_to_fp16(self):
        openai_clip().model.convert_weights(self.model)  # OpenAI's conversion: Linear/Conv/attention weights to fp16


def from_model(spec, model):
    """A Backbone around a frozen ``clip.model.CLIP``."""
    visual = model.visual
    return OpenAIBackbone(spec, model, PromptedTextEncoder(text_tower(model)), image_encoder(visual),
                          model.logit_scale, visual.output_dim, visual.input_resolution, OPENAI_MEAN, OPENAI_STD)


def load(spec):
    return from_model(spec, load_clip(spec.name, spec.path))
