"""Key layouts of the released PromptSRC and PromptSRC_BMIP checkpoints, both directions.

The releases save the whole CustomCLIP (frozen CLIP, a second frozen image encoder, class-dependent buffers and the
prompts) under ``VLPromptLearner/model.pth.tar-N``; this project saves the prompt learner only. Released files are
Dassl-pickled: convert them first with ``python -m dassl.utils.convert_checkpoint --trust IN OUT``.

* import (``convert_released_*``): a released whole-model state dict -> the learner's keys (fp32); every frozen or
  dead tensor is dropped. A learner-only state dict (ours) passes through unchanged.
* export (``export_*``): the learner's state dict -> the release's key names (fp32 values; the release's
  ``load_model`` copies them into its own parameters with ``strict=False``, so the frozen weights it builds itself
  stay as they are).

PromptSRC (IVLP prompts; l = 1..J-1 are the deep layers)::

    prompt_learner.ctx                                  <-> ctx            [b_t, D_t]
    text_encoder.transformer.resblocks.{l}.VPT_shallow  <-> deep_text.{l-1}
    image_encoder.VPT                                   <-> ctx_vision     [b_v, D_v]
    image_encoder.transformer.resblocks.{l}.VPT_shallow <-> deep_vision.{l-1}

PromptSRC_BMIP has BMIP's layout (``trainers.bmip.convert_released_bmip`` imports it; docs/BMIP.md): learner keys
under ``prompt_learner.``, except the gates, which live in CLIP's blocks::

    image_encoder.transformer.resblocks.{l}.learnable_linear1.* <-> vision_gates.{l-1}.*   (l = 1..J-1)
    text_encoder.transformer.resblocks.{l}.learnable_linear2.*  <-> text_gates.{l-1}.*     (l = 1..J-2, reference)
"""
import re

_PROMPTSRC_DEEP = re.compile(r"^(?P<encoder>text|image)_encoder\.transformer\.resblocks\.(?P<layer>\d+)\.VPT_shallow$")
_PROMPTSRC_SHALLOW = {"prompt_learner.ctx": "ctx", "image_encoder.VPT": "ctx_vision"}
_DEEP_NAMES = {"text": "deep_text", "image": "deep_vision"}
_BMIP_GATES = {"vision_gates": ("image_encoder", "learnable_linear1"), "text_gates": ("text_encoder", "learnable_linear2")}


def convert_released_promptsrc(state_dict):
    """A released PromptSRC (or PromptSRC-repository IVLP) whole-model state dict -> ``VisionLanguagePrompts`` keys."""
    if not any(k.startswith("prompt_learner.") for k in state_dict):
        return state_dict
    converted = {}
    for key, value in state_dict.items():
        deep = _PROMPTSRC_DEEP.match(key)
        if key in _PROMPTSRC_SHALLOW:
            converted[_PROMPTSRC_SHALLOW[key]] = value
        elif deep:
            converted[f"{_DEEP_NAMES[deep['encoder']]}.{int(deep['layer']) - 1}"] = value
    return {k: v.float() for k, v in converted.items()}


def export_promptsrc(state_dict):
    """``VisionLanguagePrompts`` state dict -> the released PromptSRC key names."""
    shallow = {ours: theirs for theirs, ours in _PROMPTSRC_SHALLOW.items()}
    deep = {name: encoder for encoder, name in _DEEP_NAMES.items()}
    exported = {}
    for key, value in state_dict.items():
        head, _, index = key.partition(".")
        if key in shallow:
            exported[shallow[key]] = value
        elif head in deep and index.isdigit():
            exported[f"{deep[head]}_encoder.transformer.resblocks.{int(index) + 1}.VPT_shallow"] = value
        else:
            raise KeyError(f"'{key}' is not a PromptSRC learner key (ctx, ctx_vision, deep_text.k, deep_vision.k)")
    return {k: v.float() for k, v in exported.items()}


def export_promptsrc_bmip(state_dict):
    """``BMIPPromptLearner`` state dict -> the released PromptSRC_BMIP (= BMIP) key names."""
    exported = {}
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        if head in _BMIP_GATES:
            index, _, param = rest.partition(".")
            encoder, gate = _BMIP_GATES[head]
            exported[f"{encoder}.transformer.resblocks.{int(index) + 1}.{gate}.{param}"] = value
        else:
            exported[f"prompt_learner.{key}"] = value
    return {k: v.float() for k, v in exported.items()}
