"""The ``open_clip`` family: models of the ``open_clip`` package (LAION, DataComp, MetaCLIP, DFN, ... weights; local
open_clip-format files such as RemoteCLIP or GeoRSCLIP; OpenAI-format files through open_clip's OpenAI converter).

Weights: ``MODEL.BACKBONE.PRETRAINED_TAG`` names open_clip's pretrained tag for ``NAME`` (``open_clip``'s own cache
and hub: its ``cache_dir`` default and the ``HF_HOME`` / ``HF_HUB_CACHE`` variables apply); ``hf-hub:org/repo`` names
bring their weights; ``MODEL.BACKBONE.PATH`` reads a local file without running code; the project tag ``random``
builds random weights from a fixed seed (tests and benchmarks only). A file is read as OpenAI-format (and converted,
its architecture inferred, with QuickGELU) when it is a TorchScript archive or carries OpenAI's metadata entries
``input_resolution`` / ``context_length`` / ``vocab_size``; any other file is a state dict of the open_clip model
``NAME``.

The prompted forward serves a ``CLIP`` whose image tower is a class-token ``VisionTransformer`` (no attention pool,
``pool_type 'tok'``) of standard blocks, and whose text transformer is causal, made of standard blocks, pooled at EOT
(``argmax`` or ``eos``) and tokenized by CLIP's BPE tokenizer. Other towers are served as they are: an image tower
as an :class:`~clip_patch.prompted.OpaqueImageEncoder` (no visual prompts), a text tower as an
:class:`~clip_patch.prompted.OpaqueTextEncoder` (no text prompts: methods that learn them are refused in one line)
except by zero-shot, which runs it on token ids as the family does. ``logit_bias`` (SigLIP) is one scalar added to every class logit: it changes neither the argmax nor the softmax
over classes, so the project leaves it out of its logits.
"""
import contextlib
import logging
import os.path as osp

import torch

from ..loading import OPENAI_BACKBONE_NAMES, WeightsNotFoundError, is_torchscript, read_state_dict
from ..prompted import (BlockView, OpaqueImageEncoder, OpaqueTextEncoder, PromptedImageEncoder, PromptedTextEncoder,
                        TextTower, VisionTower)
from .base import OPENAI_MEAN, OPENAI_STD, Backbone, open_clip

RANDOM_TAG = "random"  # the project's tag: random weights from a fixed seed (tests and benchmarks only)
OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")


# -- config checks (before any model is built) -------------------------------------------------------------------------
def open_clip_name(openai_name):
    """open_clip's name of one of OpenAI's models: ViT-B/16 -> ViT-B-16, ViT-L/14@336px -> ViT-L-14-336, RN50 -> RN50."""
    return openai_name.replace("/", "-").replace("@336px", "-336")


def check_spec(spec):
    """Raise one line for a NAME / PRETRAINED_TAG / PATH combination that cannot load."""
    name, tag, path = spec.name, spec.pretrained_tag, spec.path
    if name in OPENAI_BACKBONE_NAMES and open_clip_name(name) != name:  # (the ResNets' names are the same in both)
        raise ValueError(f"MODEL.BACKBONE.NAME '{name}' is an OpenAI name: open_clip spells it "
                         f"'{open_clip_name(name)}' (or set MODEL.BACKBONE.FAMILY openai)")
    if path and tag:
        raise ValueError(f"MODEL.BACKBONE.PATH and MODEL.BACKBONE.PRETRAINED_TAG '{tag}' are both set: give one "
                         f"(PATH reads a local file, PRETRAINED_TAG downloads open_clip's weights)")
    if name.startswith("hf-hub:"):
        return
    models = open_clip().list_models()
    if name not in models and not path:
        raise ValueError(f"MODEL.BACKBONE.NAME '{name}' is not an open_clip model: use one of open_clip.list_models() "
                         f"(e.g. ViT-B-32, ViT-B-16, ViT-L-14) or an hf-hub:org/repo name")
    if not path:
        tags = open_clip().list_pretrained_tags_by_model(name)
        if tag != RANDOM_TAG and tag not in tags:
            what = f"'{tag}' is not one of its tags" if tag else "is required with MODEL.BACKBONE.FAMILY open_clip"
            raise ValueError(f"MODEL.BACKBONE.PRETRAINED_TAG {what} for {name}: use one of {tags}, or set "
                             f"MODEL.BACKBONE.PATH to a local weights file")


def tower_layers(tower_cfg, foreign_key):
    """The transformer layers a tower config of open_clip gives, or None (a ResNet's list of stage depths, or a tower
    built elsewhere: ``foreign_key`` names its timm / Hugging Face model)."""
    layers = tower_cfg.get("layers")
    return layers if isinstance(layers, int) and not tower_cfg.get(foreign_key) else None


def encoder_depths(spec):
    """``(text layers, vision layers)`` of open_clip model NAME from its model config (``open_clip.get_model_config``),
    without building it; None for a tower that is not such a transformer, and (None, None) for a local file or an
    hf-hub name (their architecture is seen once loaded)."""
    if spec.path or spec.name.startswith("hf-hub:"):
        return None, None
    config = open_clip().get_model_config(spec.name) or {}
    return (tower_layers(config.get("text_cfg", {}), "hf_model_name"),
            tower_layers(config.get("vision_cfg", {}), "timm_model_name"))


# -- building the model ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_random_init():
    """Silence open_clip's "initialized randomly" warning: the project's ``random`` tag asks for exactly that."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _frozen(model):
    model = model.float().eval()
    model.requires_grad_(False)
    return model


def read_weights(path):
    """A state dict from ``path`` without running code: safetensors, or torch (``weights_only``) / TorchScript."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    state = read_state_dict(path)
    if all(key.startswith("module.") for key in state):  # saved from a DistributedDataParallel model
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def is_openai_format(state):
    """OpenAI's release files carry these metadata entries next to the weights; open_clip state dicts do not."""
    return any(key in state for key in OPENAI_METADATA)


def from_openai_state_dict(state, source):
    """open_clip's ``build_model_from_openai_state_dict`` (architecture inferred, QuickGELU), with the exact fp32
    values (the converter's fp16 round trip undone)."""
    try:
        model = open_clip().model.build_model_from_openai_state_dict(dict(state)).float()
        model.load_state_dict({k: v for k, v in state.items() if k not in OPENAI_METADATA})
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError, AssertionError) as err:
        detail = f"missing {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise ValueError(f"{source} is not an OpenAI-format CLIP weights file ({detail}): use an open_clip state dict "
                         f"of MODEL.BACKBONE.NAME, or an OpenAI file (e.g. ViT-B-16.pt)") from None
    return model


def load_file(name, path):
    """The model stored in the local file ``path`` (see the module docstring for how its format is recognised)."""
    if not osp.isfile(path):
        raise WeightsNotFoundError(f"MODEL.BACKBONE.PATH points to {path}, which does not exist. Fix the path, or set "
                                   f"it to '' to load MODEL.BACKBONE.NAME '{name}' with MODEL.BACKBONE.PRETRAINED_TAG.")
    state = read_weights(path)
    if is_torchscript(path) or is_openai_format(state):
        return from_openai_state_dict(state, path)
    if name not in open_clip().list_models():
        raise ValueError(f"{path} is a plain state dict, so MODEL.BACKBONE.NAME must name its open_clip architecture, "
                         f"but '{name}' is not an open_clip model: use one of open_clip.list_models() (e.g. ViT-B-32 "
                         f"for RemoteCLIP-ViT-B-32.pt)")
    model = open_clip().create_model(name, pretrained=None)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise ValueError(f"{path} does not hold the weights of open_clip model {name} ({first}): set "
                         f"MODEL.BACKBONE.NAME to the architecture it was trained with") from None
    return model


def _weights_source(cfg):
    hub = cfg.get("hf_hub", "")
    return f"hf-hub:{hub}" if hub else cfg.get("url", "")


def download(name, tag, cache_dir=None):
    """Fetch the weights of ``name`` / ``tag`` into open_clip's cache (a no-op when cached); one line if it fails."""
    package = open_clip()
    cfg = package.get_pretrained_cfg(name, tag)
    try:
        return package.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as err:  # noqa: BLE001 (urllib, huggingface_hub and OS errors alike: all mean "not available")
        raise WeightsNotFoundError(
            f"open_clip weights {name} / {tag} are not available: they are not in open_clip's cache and downloading "
            f"{_weights_source(cfg)} failed ({type(err).__name__}). Fix: download that file on a machine with internet "
            f"access into open_clip's cache (cache_dir, or $HF_HOME for hub weights), or point MODEL.BACKBONE.PATH at "
            f"a local copy.") from None


def locate(spec, cache_dir=None):
    """The weights file of a pretrained tag, fetched into open_clip's cache now; the local file; or None (random
    weights, hf-hub names: those are fetched when the model is built)."""
    if spec.path:
        return spec.path
    if spec.pretrained_tag == RANDOM_TAG or spec.name.startswith("hf-hub:"):
        return None
    return download(spec.name, spec.pretrained_tag, cache_dir)


def build_model(spec, cache_dir=None):
    """The frozen fp32 open_clip model of ``spec``."""
    package = open_clip()
    if spec.path:
        return _frozen(load_file(spec.name, spec.path))
    if spec.name.startswith("hf-hub:"):
        try:
            return _frozen(package.create_model(spec.name, cache_dir=cache_dir))
        except Exception as err:  # noqa: BLE001
            raise WeightsNotFoundError(
                f"open_clip model {spec.name} is not available: it is not in the Hugging Face cache and downloading it "
                f"failed ({type(err).__name__}). Fix: download the repository on a machine with internet access into "
                f"$HF_HOME, or point MODEL.BACKBONE.PATH at its weights file and NAME at its architecture.") from None
    if spec.pretrained_tag == RANDOM_TAG:
        with torch.random.fork_rng(devices=[]), _quiet_random_init():
            torch.manual_seed(0)
            return _frozen(package.create_model(spec.name, pretrained=None))
    download(spec.name, spec.pretrained_tag, cache_dir)
    return _frozen(package.create_model(spec.name, pretrained=spec.pretrained_tag, cache_dir=cache_dir))


# -- what the prompted forward can serve --------------------------------------------------------------------------------
def _standard_block(block):
    """An open_clip ``ResidualAttentionBlock`` with one packed Q/K/V projection (no custom attention)."""
    attn = getattr(block, "attn", None)
    return (type(block).__name__ == "ResidualAttentionBlock" and not hasattr(block, "ln_1_kv")
            and isinstance(attn, torch.nn.MultiheadAttention) and attn._qkv_same_embed_dim)


def block_views(resblocks, attn_mask=None):
    return [BlockView(b.ln_1, b.attn, b.ln_2, b.mlp, attn_mask=attn_mask, ls_1=b.ls_1, ls_2=b.ls_2,
                      batch_first=b.attn.batch_first) for b in resblocks]


def vision_refusal(visual):
    """Why the prompted forward cannot serve this image tower ("" when it can)."""
    if type(visual).__name__ != "VisionTransformer":
        return f"a {type(visual).__name__} tower"
    if visual.attn_pool is not None:
        return "a ViT with attention pooling"
    if visual.pool_type != "tok":
        return f"a ViT pooled by '{visual.pool_type}', not its class token"
    if not all(_standard_block(b) for b in visual.transformer.resblocks):
        return "a ViT with non-standard attention blocks"
    return ""


def image_encoder(visual):
    why = vision_refusal(visual)
    if why:
        return OpaqueImageEncoder(visual, why)
    tower = VisionTower(visual.conv1, visual.class_embedding, visual.positional_embedding, visual.ln_pre,
                        block_views(visual.transformer.resblocks), visual.ln_post, visual.proj)
    return PromptedImageEncoder(tower)


def text_refusal(model, tokenizer):
    """Why the prompted forward cannot serve this text tower ("" when it can)."""
    if type(model).__name__ != "CLIP":
        return f"a {type(model).__name__} text tower (not open_clip's built-in text transformer)"
    if model.attn_mask is None:
        return "bidirectional (no causal mask)"
    if model.text_pool_type not in ("argmax", "eos"):
        return f"pooled by '{model.text_pool_type}', not at EOT"
    if not all(_standard_block(b) for b in model.transformer.resblocks):
        return "made of non-standard attention blocks"
    if isinstance(model.text_projection, torch.nn.Linear):
        return "projected by a Linear layer"
    if type(tokenizer).__name__ != "SimpleTokenizer":
        return f"tokenized by {type(tokenizer).__name__}, not CLIP's BPE tokenizer with SOS/EOT"
    return ""


def pooling(model, tokenizer):
    """tokens [n, L] -> the pooled row [n], as open_clip's ``text_global_pool`` reads it."""
    if model.text_pool_type == "argmax":
        return lambda tokens: tokens.argmax(dim=-1)
    eos = tokenizer.eot_token_id
    return lambda tokens: (tokens == eos).int().argmax(dim=-1)


def text_encoder(model, tokenizer):
    tower = TextTower(model.token_embedding, model.positional_embedding,
                      block_views(model.transformer.resblocks, model.attn_mask), model.ln_final, model.text_projection,
                      pooling(model, tokenizer))
    return PromptedTextEncoder(tower)


def tokenizer_for(spec, model):
    """open_clip's tokenizer of ``NAME`` (CLIP's BPE at the model's context length for converted OpenAI files)."""
    package = open_clip()
    if spec.name in package.list_models() or spec.name.startswith("hf-hub:"):
        return package.get_tokenizer(spec.name, context_length=model.context_length)
    return package.SimpleTokenizer(context_length=model.context_length)


class OpenCLIPBackbone(Backbone):
    def __init__(self, spec, model, tokenizer, **kwargs):
        super().__init__(spec, model, **kwargs)
        self.tokenizer = tokenizer

    def tokenize(self, texts):
        with torch.device("cpu"):
            return self.tokenizer(texts).long()  # [n, L]

    def token_ids(self, text):
        return self.tokenizer.encode(text)

    @property
    def decoder(self):
        return self.tokenizer.decoder

    def cast_frozen_to_fp16(self):
        open_clip().model.convert_weights_to_lp(self.model, torch.float16)


def _square(size):
    size = (size, size) if isinstance(size, int) else tuple(size)
    if size[0] != size[1]:
        raise ValueError(f"The image tower takes {size[0]}x{size[1]} images; the project supports square inputs only")
    return size[0]


def from_model(spec, model, tokenizer):
    """A Backbone around a frozen open_clip model."""
    refusal = text_refusal(model, tokenizer)
    visual = model.visual
    projection = getattr(model, "text_projection", None)  # [D, E]
    embed_dim = projection.shape[1] if isinstance(projection, torch.Tensor) else visual.output_dim
    return OpenCLIPBackbone(
        spec, model, tokenizer,
        text_encoder=OpaqueTextEncoder(model, refusal) if refusal else text_encoder(model, tokenizer),
        image_encoder=image_encoder(visual),
        logit_scale=model.logit_scale, embed_dim=embed_dim, input_resolution=_square(visual.image_size),
        image_mean=getattr(visual, "image_mean", None) or OPENAI_MEAN,
        image_std=getattr(visual, "image_std", None) or OPENAI_STD, text_refusal=refusal)


def load(spec):
    with torch.random.fork_rng(devices=[]):  # building draws an init that the weights replace: leave the run's RNG
        model = build_model(spec)
    return from_model(spec, model, tokenizer_for(spec, model))
