"""The backbone seam: a frozen CLIP of any family, seen through the few things the project needs of it.

A family (``openai``: OpenAI's ``clip`` package; ``open_clip``) is one adapter module in this package that builds a
:class:`Backbone` from a :class:`BackboneSpec` (``MODEL.BACKBONE``). Learners and trainers only use a Backbone:

* ``text_encoder``: the :class:`~clip_patch.prompted.PromptedTextEncoder` over the family's text transformer, or an
  :class:`~clip_patch.prompted.OpaqueTextEncoder` (token ids only: zero-shot) when the prompted forward cannot serve
  that tower (``require_text_encoder`` then refuses prompt methods in one line);
* ``image_encoder``: the :class:`~clip_patch.prompted.PromptedImageEncoder` over a class-token ViT, or an
  :class:`~clip_patch.prompted.OpaqueImageEncoder` (ResNets, timm towers, pooled ViTs) that takes no prompts;
* ``tokenize(texts) -> [n, L]``, ``token_ids(text)`` (BPE ids without SOS/EOT) and ``decoder`` (id -> BPE string);
* ``logit_scale``, ``embed_dim``, ``input_resolution``, ``image_mean`` / ``image_std``;
* ``cast_frozen_to_fp16()`` (PREC fp16 on CUDA: the family's own cast of its frozen weights);
* ``require_vit(method)`` / ``require_text_encoder(method)``: one-line refusals naming what is supported;
* ``spec.record()``: what checkpoints record of it.

Every model comes back in fp32, in eval mode, with ``requires_grad`` off.
"""
import functools
import os.path as osp
import warnings
from dataclasses import asdict, dataclass

from ..prompted import PromptedImageEncoder

FAMILIES = ("openai", "open_clip")
# What the prompted forward serves, named in every refusal.
SERVED_TOWERS = ("OpenAI CLIP ViTs, and open_clip CLIP models with a class-token ViT and a causal text transformer "
                 "pooled at EOT (e.g. ViT-B-32, ViT-B-16, ViT-L-14, ViT-H-14)")
# The pixel normalisation OpenAI's models were trained with (clip.clip._transform), open_clip's default too.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@functools.lru_cache(maxsize=None)
def open_clip():
    """The ``open_clip`` package, imported on first use (it takes seconds: ``train.py --help`` never needs it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import open_clip as package
        import open_clip.model  # noqa: F401
        import open_clip.transformer  # noqa: F401
    return package


@dataclass(frozen=True)
class BackboneSpec:
    """Which frozen CLIP a run uses: ``MODEL.BACKBONE.{FAMILY, NAME, PRETRAINED_TAG, PATH}``."""

    family: str = "openai"
    name: str = ""
    pretrained_tag: str = ""
    path: str = ""

    @classmethod
    def from_cfg(cls, node):
        """From a config's ``MODEL.BACKBONE`` node (a missing FAMILY/PRETRAINED_TAG/PATH reads as the default)."""
        return cls(node.get("FAMILY", "openai"), node.NAME, node.get("PRETRAINED_TAG", ""), node.get("PATH", ""))

    def record(self):
        """What a checkpoint records of the backbone: family, name, pretrained tag and the weights file's name."""
        record = asdict(self)
        record["path"] = osp.basename(self.path) if self.path else ""
        return record

    def describe(self):
        parts = [f"family {self.family}", f"name {self.name}"]
        if self.pretrained_tag:
            parts.append(f"pretrained tag {self.pretrained_tag}")
        if self.path:
            parts.append(f"file {self.path}")
        return ", ".join(parts)


def record_differences(saved, current):
    """``key: saved -> current`` for each field in which two backbone records differ (empty when they agree)."""
    return [f"{key} {saved.get(key)!r} -> {current.get(key)!r}" for key in current if saved.get(key) != current.get(key)]


class Backbone:
    """A frozen CLIP model of one family (see the module docstring). A family subclasses it and provides the
    tokenizer and the fp16 cast."""

    def __init__(self, spec, model, text_encoder, image_encoder, logit_scale, embed_dim, input_resolution,
                 image_mean, image_std, text_refusal=""):
        self.spec = spec
        self.model = model  # the family's own model (its encode_image / encode_text are the reference)
        self.text_encoder = text_encoder  # PromptedTextEncoder | OpaqueTextEncoder
        self.image_encoder = image_encoder  # PromptedImageEncoder | OpaqueImageEncoder
        self.logit_scale = logit_scale  # log of the scale applied to cosine similarities
        self.embed_dim = embed_dim  # E, the joint embedding size
        self.input_resolution = input_resolution  # images are input_resolution x input_resolution
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)  # the pixel normalisation it was trained with
        self.text_refusal = text_refusal  # why text_encoder is opaque ("" when it takes prompts)

    # -- the family's parts ----------------------------------------------------------------------------------------
    def tokenize(self, texts):
        """Token ids [n, L] of ``texts``, on the CPU."""
        raise NotImplementedError

    def token_ids(self, text):
        """The BPE ids of ``text`` without SOS/EOT (CoOp's class-name lengths)."""
        raise NotImplementedError

    @property
    def decoder(self):
        """``{token id: BPE string}`` (analysis/interpret_prompt.py)."""
        raise NotImplementedError

    def cast_frozen_to_fp16(self):
        """Cast the frozen weights as the family does for fp16 inference (PREC fp16 on CUDA)."""
        raise NotImplementedError

    # -- refusals --------------------------------------------------------------------------------------------------
    @property
    def has_prompted_vision(self):
        return isinstance(self.image_encoder, PromptedImageEncoder)

    def require_vit(self, method="This method"):
        """Raise one line unless the image encoder takes prompts (a ViT the prompted forward serves)."""
        if not self.has_prompted_vision:
            raise ValueError(
                f"{method} puts prompts into the image encoder, which needs a ViT backbone the prompted forward "
                f"serves ({SERVED_TOWERS}), but this backbone's image encoder is {self.image_encoder.why}. Use such a "
                f"ViT (e.g. MODEL.BACKBONE.NAME ViT-B/16) or a text-prompt method (CoOp, CoCoOp, ProDA, KgCoOp, TCP, "
                f"ZeroshotCLIP)."
            )

    @property
    def has_prompted_text(self):
        return not self.text_refusal

    def require_text_encoder(self, method="This method"):
        """The prompted text encoder; raise one line unless the prompted forward serves the text tower."""
        if not self.has_prompted_text:
            raise ValueError(
                f"{method} runs the text transformer through the prompted forward, which serves {SERVED_TOWERS}, but "
                f"the text tower of {self.spec.name} is {self.text_refusal}. Use such a model, or a method without "
                f"text prompts (ZeroshotCLIP, LinearProbeCLIP)."
            )
        return self.text_encoder
