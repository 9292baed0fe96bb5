"""Backbone families behind one seam (:mod:`clip_patch.backbones.base`): ``openai`` and ``open_clip``.

``load_backbone(spec)`` builds the frozen :class:`Backbone` of a :class:`BackboneSpec` (``MODEL.BACKBONE``);
``check_backbone(spec)`` refuses a combination that cannot load in one line, before anything is built;
``backbone_depths(spec)`` tells the encoders' layer counts without loading any weights (the early check of depth keys).
Adding a family: one module here with ``check_spec(spec)``, ``encoder_depths(spec) -> (text layers, vision layers)``
(None where not known before loading, or not a transformer), ``locate(spec)`` and ``load(spec) -> Backbone`` (a
subclass providing the tokenizer and the fp16 cast), and its name in ``FAMILIES`` and ``_FAMILY_MODULES``
(docs/DESIGN.md).
"""
import importlib
import os.path as osp

from .base import FAMILIES, SERVED_TOWERS, Backbone, BackboneSpec, record_differences

_FAMILY_MODULES = {"openai": "clip_patch.backbones.openai", "open_clip": "clip_patch.backbones.open_clip"}


def _family(name):
    return importlib.import_module(_FAMILY_MODULES[name])


def check_backbone(spec):
    """Raise one actionable line (ValueError / FileNotFoundError) unless ``spec`` names a backbone that can load."""
    if spec.family not in FAMILIES:
        raise ValueError(f"MODEL.BACKBONE.FAMILY '{spec.family}' is unknown: use one of {FAMILIES}")
    if not spec.name:
        raise ValueError("MODEL.BACKBONE.NAME is empty: name the model (e.g. ViT-B/16, or ViT-B-16 with FAMILY "
                         "open_clip)")
    if spec.path and not osp.isfile(spec.path):
        raise FileNotFoundError(f"MODEL.BACKBONE.PATH points to {spec.path}, which does not exist. Fix the path, or "
                                f"set it to '' to load backbone '{spec.name}' by name.")
    _family(spec.family).check_spec(spec)


def backbone_depths(spec):
    """``(text layers, vision layers)`` of the encoders ``load_backbone(spec)`` would build, from the family's tables
    and configs (no weights read); each None where not known before loading, or not a transformer (a ResNet)."""
    check_backbone(spec)
    return _family(spec.family).encoder_depths(spec)


def locate_backbone_weights(spec):
    """Fetch the weights ``load_backbone(spec)`` will read into the family's cache now (or fail in one line, e.g.
    offline), before any model is built; returns the local file, or None where there is none to fetch first."""
    check_backbone(spec)
    return _family(spec.family).locate(spec)


def load_backbone(spec):
    """The frozen :class:`Backbone` of ``spec`` (a :class:`BackboneSpec`, or an OpenAI-family name)."""
    if isinstance(spec, str):
        spec = BackboneSpec("openai", spec)
    check_backbone(spec)
    return _family(spec.family).load(spec)


__all__ = ["FAMILIES", "SERVED_TOWERS", "Backbone", "BackboneSpec", "backbone_depths", "check_backbone",
           "load_backbone", "locate_backbone_weights", "record_differences"]
