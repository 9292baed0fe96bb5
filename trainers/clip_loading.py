"""``load_clip_to_cpu(cfg)``: the CLIP loader that Dassl/CoOp-style trainer files call, for files from other repositories.

Trainer files of the CoOp ecosystem (CoOp's and CoCoOp's ``trainers/*.py`` and the many methods built on them) each
define ``load_clip_to_cpu(cfg)`` on top of their repository's bundled ``clip`` package; its ``clip._download(url)``
call fails against the installed OpenAI ``clip`` (whose ``_download`` needs a ``root``). To drop such a file into
``trainers/``, replace its definition with ``from trainers.clip_loading import load_clip_to_cpu`` (its other imports
— ``dassl.*``, ``clip``, ``clip.simple_tokenizer`` — work unchanged). See docs/ENGINE.md.

The result is what theirs returns, so the file's own precision code behaves as it does there: a ``clip.model.CLIP``
on the CPU, in eval mode, every parameter trainable (the file freezes what it does not train), with OpenAI's
``convert_weights`` applied (Linear/Conv/attention weights in fp16, ``clip_model.dtype == torch.float16``); the
file calls ``clip_model.float()`` itself for PREC fp32/amp. One difference: when the run's device (``cfg.DEVICE``)
is not CUDA the weights stay fp32, since fp16 does not compute on a CPU (CoOp issue #59); the file then runs in fp32
throughout, as it reads ``clip_model.dtype`` everywhere.

Weights come from ``MODEL.BACKBONE.NAME`` / ``MODEL.BACKBONE.PATH`` like every trainer here (cache, SHA-256 check,
offline message: :func:`clip_patch.load_clip`). Files that need a modified CLIP (the MaPLe family's
``clip.build_model(state_dict, design_details)``) are not served by this helper.

It serves the ``openai`` backbone family only (such files are written against OpenAI's ``clip`` package);
``MODEL.BACKBONE.FAMILY open_clip`` is refused in one line. Trainers of this project see a family-agnostic
:class:`clip_patch.Backbone` instead (``CLIPPromptTrainer.build_prompt_learner(cfg, classnames, backbone)``).
"""
from clip_patch import load_clip
from clip_patch.openai_clip import openai_clip
from dassl.engine import resolve_device


def load_clip_to_cpu(cfg):
    """CLIP for ``cfg.MODEL.BACKBONE`` as the ecosystem's ``load_clip_to_cpu`` returns it (fp16 only on CUDA runs)."""
    family = cfg.MODEL.BACKBONE.get("FAMILY", "openai")
    if family != "openai":
        raise ValueError(f"load_clip_to_cpu serves MODEL.BACKBONE.FAMILY openai only (the trainer file is written "
                         f"against OpenAI's clip package), got '{family}': port the trainer onto "
                         f"trainers.base.CLIPPromptTrainer to use other backbone families")
    clip_model = load_clip(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH)
    if resolve_device(cfg).type == "cuda":
        openai_clip().model.convert_weights(clip_model)
    return clip_model.requires_grad_(True)
