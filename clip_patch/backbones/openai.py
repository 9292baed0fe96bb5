"""The ``openai`` family: OpenAI's ``clip`` package (its nine checkpoints, local files in its format, the shipped
MicroViT and the random-weight shapes of :mod:`clip_patch.random_backbones`), loaded by :mod:`clip_patch.loading`."""
import functools
import json
import os.path as osp

import torch

from ..loading import SHIPPED_BACKBONES, available_backbones, load_clip, locate_weights
from ..openai_clip import openai_clip
from ..prompted import (BlockView, OpaqueImageEncoder, PromptedImageEncoder, PromptedTextEncoder, TextTower,
                        VisionTower)
from ..random_backbones import OPENAI_SHAPES, RANDOM_BACKBONES, shape_layers
from .base import OPENAI_MEAN, OPENAI_STD, Backbone, open_clip


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


def check_spec(spec):
    """Raise one line for a NAME / PRETRAINED_TAG combination that cannot load."""
    if spec.pretrained_tag:
        raise ValueError(f"MODEL.BACKBONE.PRETRAINED_TAG '{spec.pretrained_tag}' is an open_clip setting: with "
                         f"MODEL.BACKBONE.FAMILY openai the weights follow MODEL.BACKBONE.NAME; set it to '' "
                         f"(or MODEL.BACKBONE.FAMILY open_clip)")
    if spec.path or spec.name in available_backbones():
        return
    if spec.name.startswith("hf-hub:") or spec.name in open_clip().list_models():  # (imported on this error path only)
        raise ValueError(f"MODEL.BACKBONE.NAME '{spec.name}' is an open_clip model name: set "
                         f"MODEL.BACKBONE.FAMILY open_clip and MODEL.BACKBONE.PRETRAINED_TAG (e.g. "
                         f"laion2b_s34b_b88k, openai), or use an OpenAI name such as ViT-B/16")
    raise ValueError(f"Unknown CLIP backbone '{spec.name}'. Set MODEL.BACKBONE.NAME to one of {available_backbones()}, "
                     f"or set MODEL.BACKBONE.PATH to a local weights file.")


def shipped_layers(name):
    """(text, vision) layers of a shipped backbone, from the report its training wrote beside its weights
    (scripts/pretrain_micro_clip.py: ``layers`` in each transformer)."""
    with open(osp.splitext(SHIPPED_BACKBONES[name])[0] + ".json") as f:
        layers = json.load(f)["hyper_parameters"]["layers"]
    return layers, layers


def encoder_depths(spec):
    """``(text layers, vision layers)`` of a named backbone without loading it: the released shapes
    (:data:`clip_patch.random_backbones.OPENAI_SHAPES`), the random ones, the shipped ones' training reports; vision
    None for a ResNet. (None, None) for a local file (MODEL.BACKBONE.PATH), whose architecture is seen once loaded."""
    if spec.path:
        return None, None
    if spec.name in SHIPPED_BACKBONES:
        return shipped_layers(spec.name)
    shape = OPENAI_SHAPES.get(spec.name) or RANDOM_BACKBONES.get(spec.name)
    return shape_layers(shape) if shape else (None, None)


def locate(spec):
    return locate_weights(spec.name, spec.path)


def load(spec):
    return from_model(spec, load_clip(spec.name, spec.path))
