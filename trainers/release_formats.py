"""The whole-model checkpoint layouts of the released MaPLe, BMIP, IVLP, VPT, PromptSRC and PromptSRC_BMIP code,
in both directions: the machinery, and the key patterns those layouts share.

The released trainers register their whole ``CustomCLIP`` (frozen CLIP included) and load checkpoints with
``load_state_dict(state_dict, strict=False)``; this project saves only the prompt learner. A layout says, once,
where each learner tensor lives in the released model; :meth:`ReleaseLayout.to_release` (export) and
:meth:`ReleaseLayout.to_learner` (import) both read it. Each trainer class carries its own layout as its
``RELEASE_LAYOUT`` attribute (e.g. ``trainers/maple.py``); adding a layout is that one attribute.

A layout maps the first part of a learner key (its *group*) to a pattern of the released key. Patterns may use
``{key}`` (the whole learner key), and, for per-layer groups whose second key part is the deep-prompt index k,
``{layer}`` (= k + 1, the transformer block the prompt enters) and ``{rest}`` (what follows the index).

CoOp and CoCoOp register only their prompt learner, under the same names as here: their checkpoints need no layout.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Tuple

import torch

from dassl.engine import TRAINER_REGISTRY

# Keys of class-dependent tensors found in ecosystem checkpoints; dropped on load so new class names work.
CLASS_DEPENDENT_KEYS = ("token_prefix", "token_suffix", "tokenized_prompts", "token_embedding")

# Rows of a tensor the released code sizes by the tokenized prompt length (e.g. UPT's ctx_v, of which it reads b rows).
CONTEXT_ROWS = 77

# Top-level modules of the released CustomCLIP; a checkpoint with such keys is a whole-model one.
WHOLE_MODEL_PREFIXES = ("prompt_learner.", "image_encoder.", "text_encoder.")


def is_whole_model(state_dict):
    """True for a released whole-model state dict, False for a learner-only one (ours, CoOp's, CoCoOp's)."""
    return any(key.startswith(WHOLE_MODEL_PREFIXES) for key in state_dict)


def is_class_dependent(key):
    return key.split(".")[-1] in CLASS_DEPENDENT_KEYS


def _no_check(learner_keys):
    return ""


@dataclass(frozen=True)
class ReleaseLayout:
    """Where the released code keeps each tensor of one trainer's prompt learner."""

    groups: Dict[str, str]  # learner key group -> released key pattern
    trained: Tuple[str, ...]  # the release's own rule: a parameter whose name holds one of these is trainable
    dead: Tuple[str, ...] = ()  # substrings of released trainable keys that never reach the loss (ignored on import)
    export_refusal: Callable[[Iterable[str]], str] = field(default=_no_check)  # learner keys -> why not, or ""
    # learner group -> row count of its released tensor, of which the learner holds the first rows (the release reads
    # no others): export pads with zero rows, import keeps the learner's own row count
    padded_rows: Dict[str, int] = field(default_factory=dict)

    def release_key(self, key):
        """The released whole-model name of learner key ``key``."""
        group, *tail = key.split(".")
        if group not in self.groups:
            raise KeyError(f"'{key}' is not a tensor of this trainer's prompt learner (known: {sorted(self.groups)})")
        pattern = self.groups[group]
        if "{layer}" not in pattern:
            return pattern.format(key=key)
        return pattern.format(key=key, layer=int(tail[0]) + 1, rest=".".join(tail[1:]))

    def to_release(self, learner_state):
        """Learner state dict -> the released whole model's names (what its ``strict=False`` load reads)."""
        refusal = self.export_refusal(learner_state.keys())
        if refusal:
            raise ValueError(refusal)
        return {self.release_key(key): self._padded(key, value) for key, value in learner_state.items()}

    def _padded(self, key, value):
        rows = self.padded_rows.get(key.split(".")[0])
        if rows is None:
            return value
        return torch.cat([value, value.new_zeros(rows - value.shape[0], *value.shape[1:])])  # [rows, ...]

    def trained_in_release(self, key):
        return any(marker in key for marker in self.trained)

    def to_learner(self, state_dict, learner_state):
        """A released whole-model state dict -> learner keys (fp32), given the learner's own ``learner_state`` (key ->
        tensor); learner-only state dicts pass unchanged.

        Frozen CLIP weights, class-dependent buffers and the release's dead tensors are left out; a padded tensor
        keeps the learner's row count. A tensor the release trains that has no place in the learner (e.g. a deeper
        prompt of another PROMPT_DEPTH) keeps its released name, so the caller's strict key check reports it.
        """
        if not is_whole_model(state_dict):
            return state_dict
        learner_key = {self.release_key(key): key for key in learner_state}
        converted = {}
        for key, value in state_dict.items():
            if key in learner_key:
                ours = learner_key[key]
                value = value.float() if value.is_floating_point() else value
                if ours.split(".")[0] in self.padded_rows:
                    value = value[: learner_state[ours].shape[0]]  # [rows, ...] -> the rows the release reads
                converted[ours] = value
            elif self.trained_in_release(key) and not is_class_dependent(key) and not any(
                    marker in key for marker in self.dead):
                converted[key] = value
        return converted


def prompt_learner_groups(*groups):
    """Groups the release keeps under the same name inside its ``prompt_learner``."""
    return {group: "prompt_learner.{key}" for group in groups}


def bmip_export_refusal(learner_keys):
    """Only ``reference`` BMIP has a released equivalent: ``per_sample`` blends text at one more layer."""
    def count(group):
        return len({key.split(".")[1] for key in learner_keys if key.startswith(group + ".")})
    vision, text = count("vision_gates"), count("text_gates")
    if vision and text == vision:
        return ("This BMIP model was trained with TRAINER.BMIP.MODE per_sample (a text gate at every deep layer); "
                "the released code computes the reference gates, so it has no released equivalent.")
    return ""


_BLOCK = "{encoder}.transformer.resblocks.{{layer}}"
TEXT_BLOCK, VISION_BLOCK = _BLOCK.format(encoder="text_encoder"), _BLOCK.format(encoder="image_encoder")

# IVLP's prompts: the shallow text context in prompt_learner, the shallow vision prompt in the image encoder, the deep
# prompts of block l in that block's VPT_shallow (release: ResidualAttentionBlock_IVLP).
IVLP_GROUPS = {"ctx": "prompt_learner.ctx", "deep_text": TEXT_BLOCK + ".VPT_shallow",
               "ctx_vision": "image_encoder.VPT", "deep_vision": VISION_BLOCK + ".VPT_shallow"}
# BMIP's prompts: the gate before block l is that block's learnable_linear1 (vision) / learnable_linear2 (text).
BMIP_GROUPS = {**prompt_learner_groups(
    "ctx_t", "proj_t", "compound_prompts_text", "compound_prompts_visual", "single_layer_t", "single_layer_v",
    "compound_prompt_projections_t", "compound_prompt_projections_v"),
    "vision_gates": VISION_BLOCK + ".learnable_linear1.{rest}",
    "text_gates": TEXT_BLOCK + ".learnable_linear2.{rest}"}
# Registered by the released BMIP code but never reaching the loss: ctx_v, proj_v, the exchange layers, the gates of
# other blocks and the last per-layer v->t head.
BMIP_DEAD = ("ctx_v", "proj_v.", "exchange_layer", "compound_exchange", "learnable_linear",
             "compound_prompt_projections_v.", "single_layer_v.")


def release_layouts():
    """``{trainer name: its class's RELEASE_LAYOUT}`` for every registered trainer that has one (a trainer class not
    built on trainers.base.CLIPPromptTrainer, e.g. another codebase's, may lack the attribute)."""
    layouts = {name: getattr(TRAINER_REGISTRY.get(name), "RELEASE_LAYOUT", None)
               for name in TRAINER_REGISTRY.registered_names()}
    return {name: layout for name, layout in layouts.items() if layout is not None}
