"""The CLIP trainer base classes, and the model every prompt method shares.

Which base a method subclasses:

* :class:`CLIPPromptTrainer`: a prompt method. It supplies a *prompt learner*: an ``nn.Module`` holding every
  trainable tensor of the method (and no frozen CLIP weight), with two methods

  * ``text_inputs() -> (embeddings [n_cls, L, D_t], tokens [n_cls, L], DeepPrompts | None)``
  * ``vision_inputs() -> (shallow [b, D_v] | None, DeepPrompts | None)``
  * optionally (adapter methods) ``block_branch(side) -> BlockBranch | None`` for side "text" / "vision": a residual
    branch beside each block of that encoder (:data:`clip_patch.prompted.BlockBranch`)
  * optionally (output adapters) ``mix_features(side, features [N, E]) -> [N, E]``: the encoder's features before
    they are L2-normalised (CoPrompt)

  Which computation runs them (fast, or the released code's with ``MODEL.STRAIGHTFORWARD``) is the encoders'
  business, not the learner's: a learner only answers ``DeepPrompts.replace(layer, probe)``. :class:`PromptedCLIP`
  runs the frozen encoders of :mod:`clip_patch` with those inputs; the trainer registers the learner (only it is
  trained and saved) under the method's checkpoint folder name and trains it by gradient, epoch after epoch.
* :class:`FrozenCLIPTrainer`: a method that trains nothing by gradient on top of the frozen CLIP (zero-shot, linear
  probe). It builds its model around the frozen encoders; one that fits something on frozen features sets
  ``LEARNS = True`` and implements ``fit()``, which is its whole training.

Both derive from :class:`CLIPTrainer` (the method's config node and precision, the frozen CLIP, evaluation). A
trainer class also carries its own facts: ``LEARNS`` (whether it learns anything; the engine's default is True) and
``RELEASE_LAYOUT`` (where the released code keeps its tensors, :mod:`trainers.release_formats`).

Learners see the frozen model only as a :class:`clip_patch.Backbone` (``MODEL.BACKBONE``: FAMILY openai | open_clip,
NAME, PRETRAINED_TAG, PATH; docs/BACKBONES.md), handed to ``build_prompt_learner(cfg, classnames, backbone)`` /
``build_frozen_model(backbone)`` and kept as ``self.backbone``: ``backbone.text_encoder`` / ``backbone.image_encoder``
(the prompted encoders; ``require_text_encoder(method)`` / ``require_vit(method)`` refuse unserved towers in one
line), ``backbone.tokenize(texts)``, ``backbone.token_ids(text)``, ``backbone.embed_dim`` and ``backbone.logit_scale``.
Every checkpoint records the backbone (``checkpoint_record``); one of another backbone is refused on load.
"""
import contextlib
import os.path as osp

import torch
import torch.nn as nn
import torch.nn.functional as F

from clip_patch import PRECISIONS, BackboneSpec, Precision, load_backbone, record_differences
from clip_patch.chunked import AUTO, check_chunk_setting, encode_text
from dassl.config import register_config
from dassl.engine import TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer

from .release_formats import is_class_dependent


@register_config
def add_clip_config(cfg):
    cfg.MODEL.BACKBONE.FAMILY = "openai"  # backbone family: openai (OpenAI's clip package) | open_clip
    cfg.MODEL.BACKBONE.PRETRAINED_TAG = ""  # open_clip's pretrained tag for NAME (e.g. laion2b_s34b_b88k); openai: ""
    cfg.MODEL.BACKBONE.PATH = ""  # local CLIP weights file; "" = load MODEL.BACKBONE.NAME (download/cache/shipped)
    cfg.MODEL.INIT_SEED = -1  # >= 0: seed only the prompt-learner initialisation with it; -1: use the run's SEED
    cfg.MODEL.STRAIGHTFORWARD = False  # True: released-code computation (no EOT cut, no text cache, attention twice)
    cfg.MODEL.TEXT_CHUNK_CLASSES = AUTO  # class prompts per text-encoder chunk: -1 auto (100), 0 never, C > 0


def setting_opts(node, settings):
    """``[KEY, value, ...]`` for a release's per-data-set ``settings`` {key: value} (a trainer's ``dataset_overrides``):
    a key without a dot is ``TRAINER.<node>.<key>``, a dotted one a full config key."""
    return [item for key, value in settings.items() for item in (key if "." in key else f"TRAINER.{node}.{key}", value)]


class PromptedCLIP(nn.Module):
    """Frozen CLIP encoders driven by a prompt learner; ``forward(image) -> logits [B, n_cls]``.

    Text features do not depend on the image. Inside ``with model.text_cache():`` (one evaluation: the trainer's
    ``test()`` opens it) they are computed once, on the first gradient-free forward, and reused; outside it they are
    never stored, so no change of the prompts (optimizer step, loaded checkpoint, in-place edit) can be missed.
    """

    def __init__(self, backbone, prompt_learner, straightforward=False, text_chunk_classes=AUTO):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.text_chunk_classes = text_chunk_classes  # clip_patch/chunked.py
        self.text_encoder = backbone.text_encoder
        self.image_encoder = backbone.image_encoder
        self.logit_scale = backbone.logit_scale
        self.straightforward = straightforward
        self._caching = False  # inside a text_cache() scope
        self._text_cache = None  # features [n_cls, E] of the current scope

    @contextlib.contextmanager
    def text_cache(self):
        """Scope (one evaluation) within which gradient-free forwards share one text-feature computation."""
        if self._caching:  # nested: the outer scope owns the cache
            yield
            return
        self._caching = True
        try:
            yield
        finally:
            self._caching, self._text_cache = False, None

    def text_features(self):
        """L2-normalised class text features [n_cls, E]."""
        cacheable = self._caching and not torch.is_grad_enabled() and not self.straightforward
        if cacheable and self._text_cache is not None:
            return self._text_cache
        # (no reference kept here: encode_text frees the assembled prompts [n_cls, L, D] once it has cut them)
        features = encode_text(self.text_encoder, *self.prompt_learner.text_inputs(), self.straightforward,
                               self.text_chunk_classes, self.block_branch("text"))  # [n_cls, E]
        features = self.output_mix("text", features)
        features = features / features.norm(dim=-1, keepdim=True)
        if cacheable:
            self._text_cache = features
        return features

    def block_branch(self, side):
        """The learner's residual branch beside the blocks of the ``side`` ("text" | "vision") encoder, or None."""
        block_branch = getattr(self.prompt_learner, "block_branch", None)
        return None if block_branch is None else block_branch(side)

    def output_mix(self, side, features):
        """Features [N, E] of the ``side`` ("text" | "vision") encoder through the learner's ``mix_features`` (output
        adapters, before normalisation), when it has one."""
        mix_features = getattr(self.prompt_learner, "mix_features", None)
        return features if mix_features is None else mix_features(side, features)

    def image_features(self, image):
        shallow, deep = self.prompt_learner.vision_inputs()
        features = self.image_encoder(image, shallow, deep, self.straightforward, self.block_branch("vision"))
        features = self.output_mix("vision", features)
        return features / features.norm(dim=-1, keepdim=True)

    def logits(self, image_features, text_features):
        """CLIP's scaled cosine similarities [B, n_cls] of normalised image features [B, E] and text features
        [n_cls, E]."""
        return self.logit_scale.exp() * image_features @ text_features.t()  # [B, n_cls]

    def forward(self, image):
        image_features = self.image_features(image)  # [B, E]
        text_features = self.text_features()  # [n_cls, E]
        return self.logits(image_features, text_features)  # [B, n_cls]


class CLIPTrainer(TrainerX):
    """What every CLIP trainer shares: its config node, the frozen CLIP cast for PREC, mixed-precision inference and
    one evaluation scope per test."""

    CFG_NODE = "COOP"  # cfg.TRAINER.<CFG_NODE> holds PREC and the method's keys
    CONFIG_FOLDER = None  # its YAML files' folder under configs/trainers/ (None: the trainer's own name)

    @property
    def method_cfg(self):
        return self.cfg.TRAINER[self.CFG_NODE]

    def check_cfg(self, cfg):
        prec = cfg.TRAINER[self.CFG_NODE].PREC
        if prec not in PRECISIONS:
            raise ValueError(f"TRAINER.{self.CFG_NODE}.PREC must be one of {PRECISIONS}, got '{prec}'")
        check_chunk_setting(cfg.MODEL.TEXT_CHUNK_CLASSES)

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        """Refuse a key of ``cfg`` bounded by the encoders' depths (a prompt depth, a layer number) that this
        backbone's layers cannot hold, before anything is loaded (``runs.checks.check_config``). ``text_layers`` /
        ``vision_layers``: the transformer layers of each encoder, None where not known before loading (or not a
        transformer: a ResNet). A method with such keys checks them here with the function its learner checks them
        with on the built encoders (one message for both); the default has none."""

    def model_options(self):
        """The config's keyword arguments of every method's :class:`PromptedCLIP`."""
        return {"straightforward": self.cfg.MODEL.STRAIGHTFORWARD,
                "text_chunk_classes": self.cfg.MODEL.TEXT_CHUNK_CLASSES}

    @property
    def backbone_spec(self):
        return BackboneSpec.from_cfg(self.cfg.MODEL.BACKBONE)

    def load_frozen_backbone(self):
        """The frozen backbone of MODEL.BACKBONE, checked against INPUT.SIZE and cast for PREC (sets self.precision
        and self.backbone)."""
        cfg, spec = self.cfg, self.backbone_spec
        print(f"Loading CLIP (backbone: {spec.name}{'' if spec.family == 'openai' else f', {spec.describe()}'})")
        backbone = load_backbone(spec)
        resolution = backbone.input_resolution
        if tuple(cfg.INPUT.SIZE) != (resolution, resolution):
            raise ValueError(
                f"INPUT.SIZE is {tuple(cfg.INPUT.SIZE)} but backbone {spec.name} takes "
                f"{resolution}x{resolution} images: set INPUT.SIZE ({resolution}, {resolution})."
            )
        self.precision = Precision(self.method_cfg.PREC, self.device)
        self.backbone = self.precision.prepare_frozen(backbone)
        return self.backbone

    # -- the backbone a checkpoint was trained on ----------------------------------------------------------------
    def checkpoint_record(self):
        return {"backbone": self.backbone_spec.record()}

    def check_checkpoint_record(self, checkpoint, path):
        """Refuse a checkpoint trained on another backbone, naming what differs. Checkpoints without a record (older
        ones, released ones) load as before."""
        saved = checkpoint.get("backbone") if isinstance(checkpoint, dict) else None
        if not saved:
            return
        differences = record_differences(saved, self.backbone_spec.record())
        if differences:
            raise ValueError(f'Checkpoint "{path}" was trained on another backbone ({"; ".join(differences)}): set '
                             f"MODEL.BACKBONE as it was trained, or train for this backbone")

    def precision_used(self):
        """PREC after the precision policy's fallbacks (e.g. fp16 asked on a CPU runs fp32); None before
        ``load_frozen_backbone`` set the policy."""
        precision = getattr(self, "precision", None)
        return precision.prec if precision is not None else None

    def model_inference(self, image):
        with self.precision.autocast():
            return self.model(image).float()

    def evaluation_scope(self):
        """One evaluation: gradient-free forwards inside it share one computation of the class text features."""
        return self.model.text_cache() if isinstance(self.model, PromptedCLIP) else contextlib.nullcontext()

    def test(self, split=None):
        """The engine's evaluation, with the class text features computed once for it."""
        with self.evaluation_scope():
            return super().test(split)


class CLIPPromptTrainer(CLIPTrainer):
    """Template for CLIP prompt methods. Subclasses set ``CFG_NODE`` / ``CHECKPOINT_NAME`` and build the learner."""

    CHECKPOINT_NAME = "prompt_learner"  # folder of the learner's checkpoints (the ecosystem's name)
    # Where the released code keeps each learner tensor in its whole-model checkpoints (a ReleaseLayout of
    # trainers/release_formats.py); None: the release saves the learner alone, as we do (CoOp, CoCoOp), or there is
    # no release.
    RELEASE_LAYOUT = None
    RELEASED_AS_LEARNER = False  # True: the release saves the prompt learner alone, under our names (CoOp, CoCoOp)
    # The weighted loss terms of the last step, {name: detached scalar tensor}: a compute_loss with several terms sets
    # it (sum_of_terms), and each step logs them beside the total.
    last_loss_terms = {}

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.MODEL.INIT_WEIGHTS and not osp.isfile(cfg.MODEL.INIT_WEIGHTS):
            raise FileNotFoundError(
                f'MODEL.INIT_WEIGHTS is "{cfg.MODEL.INIT_WEIGHTS}", which is not a file: give a checkpoint file '
                f"(a run's <folder>/model.pth.tar-N or model-best.pth.tar, or a released one), or ''."
            )

    # -- the parts a method provides -------------------------------------------------------------------------
    def build_prompt_learner(self, cfg, classnames, backbone):
        """The method's learner for the frozen ``backbone`` (a :class:`clip_patch.Backbone`)."""
        raise NotImplementedError

    def build_clip_model(self, backbone, learner):
        return PromptedCLIP(backbone, learner, **self.model_options())

    def convert_checkpoint(self, state_dict):
        """Map a released whole-model checkpoint onto this learner's keys (the class's ``RELEASE_LAYOUT``);
        learner-only checkpoints (ours, CoOp's, CoCoOp's) pass unchanged."""
        if self.RELEASE_LAYOUT is None:
            return state_dict
        return self.RELEASE_LAYOUT.to_learner(state_dict, self._models[self.CHECKPOINT_NAME].state_dict())

    # -- the shared machinery ------------------------------------------------------------------------------------
    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        backbone = self.load_frozen_backbone()
        print("Building the prompt learner")
        seed = cfg.MODEL.INIT_SEED
        with torch.random.fork_rng(devices=[]) if seed >= 0 else contextlib.nullcontext():
            if seed >= 0:
                torch.manual_seed(seed)
            learner = self.build_prompt_learner(cfg, classnames, backbone)
        self.model = self.build_clip_model(backbone, learner)
        self.model.requires_grad_(False)
        learner.requires_grad_(True)
        learner.float()  # trainable tensors are fp32 in every PREC
        self.model.to(self.device)
        print(f"# trainable parameters: {sum(p.numel() for p in learner.parameters()):,}")

        self.optim = build_optimizer(learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.CHECKPOINT_NAME, learner, self.optim, self.sched)
        self.scaler = self.precision.grad_scaler()
        if cfg.MODEL.INIT_WEIGHTS:
            self.load_init_weights()

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def compute_loss(self, image, label):
        """Training loss and logits; methods with extra loss terms override this (with :meth:`sum_of_terms`)."""
        logits = self.model(image)  # [B, n_cls]
        return F.cross_entropy(logits.float(), label), logits

    def sum_of_terms(self, terms, logits):
        """(the loss: the sum of the weighted loss ``terms`` {name: scalar tensor}, ``logits``), the terms kept as
        ``last_loss_terms`` for the step's log."""
        self.last_loss_terms = {name: value.detach() for name, value in terms.items()}
        return sum(terms.values()), logits

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        with self.precision.autocast():
            loss, logits = self.compute_loss(image, label)
        if self.scaler is None:
            self.model_backward_and_update(loss)
        else:
            self.detect_anomaly(loss)
            self.optim.zero_grad()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        summary = {"loss": loss.item(), "acc": compute_accuracy(logits, label)[0].item()}
        if self.last_loss_terms:
            names, values = zip(*self.last_loss_terms.items())
            summary.update(zip(names, torch.stack(values).tolist()))  # logged next to the total; one host sync
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def load_init_weights(self):
        """MODEL.INIT_WEIGHTS: initialise the learner from a checkpoint file (ours or a released one), as the released
        trainers do at the end of build_model; every key must fit (Dassl's loader silently keeps the matching ones)."""
        path = self.cfg.MODEL.INIT_WEIGHTS
        checkpoint = self.load_weights_file(self.CHECKPOINT_NAME, path)
        print(f'Initialised {self.CHECKPOINT_NAME} from MODEL.INIT_WEIGHTS "{path}" '
              f'(epoch = {checkpoint.get("epoch")})')

    def checkpoint_state_for(self, name, state_dict):
        """A checkpoint's state dict for the learner: mapped from another codebase's layout by ``convert_checkpoint``,
        without class-dependent tensors, so any class set can be evaluated (the engine's ``load_model`` loads it)."""
        state_dict = self.convert_checkpoint(state_dict)
        return {k: v for k, v in state_dict.items() if not is_class_dependent(k)}


class FrozenCLIPTrainer(CLIPTrainer):
    """Template for methods that train nothing by gradient on top of the frozen CLIP: no prompt learner, no optimizer.

    A method builds its model around the frozen CLIP (``build_frozen_model``). By default it learns nothing and only
    evaluates (``--eval-only``, no ``--model-dir``). A method that fits something on frozen features (a classifier)
    sets ``LEARNS = True``, registers what it fits in ``build_frozen_model`` and implements ``fit()``: its training
    is one epoch whose work is the fit, so it ends as every run does: the fit saved as epoch 1 (a run stopped after it
    resumes from there), the final test, ``result.json``.
    """

    LEARNS = False

    def __init__(self, cfg):
        super().__init__(cfg)
        self.max_epoch = 1  # the fit (OPTIM.MAX_EPOCH does not apply)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.MODEL.INIT_WEIGHTS:
            raise ValueError(f"{type(self).__name__} has no weights to initialise: set MODEL.INIT_WEIGHTS ''")

    # -- the parts a method provides -------------------------------------------------------------------------
    def build_frozen_model(self, backbone):
        """The model around the frozen ``backbone``: ``forward(image) -> logits [B, n_cls]``."""
        raise NotImplementedError

    def fit(self):
        """Fit what the method registered, on frozen features (a method with ``LEARNS = True``)."""
        raise NotImplementedError

    # -- the shared machinery ------------------------------------------------------------------------------------
    def build_model(self):
        self.model = self.build_frozen_model(self.load_frozen_backbone())
        self.model.requires_grad_(False)
        self.model.to(self.device)

    def load_model(self, directory, epoch=None):
        if not self.LEARNS:
            if directory:
                print(f"{type(self).__name__} has no weights to load; --model-dir is ignored")
            return
        super().load_model(directory, epoch)

    def validates_each_epoch(self):
        """Never: there is one epoch, nothing to choose among (a fit selects its model itself)."""
        return False

    def before_train(self):
        if not self.LEARNS:
            raise RuntimeError(f"{type(self).__name__} does not train: run train.py with --eval-only")
        super().before_train()

    def run_epoch(self):
        """The one epoch: the fit (no batches, no gradient)."""
        self.fit()
