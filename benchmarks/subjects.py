"""What the benchmark measures: the trainers (built exactly as ``train.py`` builds them, minus the data), the
zero-shot floor, random-weight backbones and real class names.

The trainers are every registered prompt trainer (built on ``trainers/base.py``) but those in ``NOT_MEASURED``, in
the registry's display order (``trainers/display.py``): those in ``PUBLISHED`` with the settings the benchmark states
its figures for, every other one (a new method) with its registered config defaults (``TrainerSpec(name)``), so a
new trainer is measured by being registered.

A trainer is built from its published YAML through ``runs.config.setup_cfg`` (so every config key is the one a user's
run has), then its own ``build_model()`` runs on a stand-in dataset that only carries class names: the model,
optimizer, precision policy and ``forward_backward`` / ``model_inference`` are the trainer's real code.
"""
import contextlib
import io
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from clip_patch import RANDOM_BACKBONES, BackboneSpec, Precision, load_backbone
from dassl.engine import TRAINER_REGISTRY, TrainerBase, resolve_device
from trainers.display import display_order
from trainers.lookup import learns
from trainers.zsclip import DEFAULT_TEMPLATE

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLASSNAMES_FILE = osp.join(osp.dirname(osp.abspath(__file__)), "imagenet_classnames.txt")
FLOOR = "floor"  # the zero-shot CLIP floor: text features encoded once, the image encoder alone per batch
JUDGED_BACKBONE = "random-ViT-B/16"  # the benchmark targets and GPU goals are stated for these shapes


@dataclass(frozen=True)
class TrainerSpec:
    """One benchmarked method: the registered trainer, its published config, extra config options, and where it
    appears."""

    trainer: str
    config_file: str = None  # relative to the repository root; None: the trainer's registered config defaults
    opts: tuple = ()
    compare_with: str = ""  # its fast training step is judged against this trainer's (the method it extends)
    reported_against: tuple = ()  # trainers its fast training step is reported against (a ratio, no target)
    per_image_text: bool = False  # text prompts depend on the image: evaluation batch capped (--cocoop-eval-batch)
    gpu_table: bool = False  # measured in the GPU check's speed table (benchmarks/gpu_check.py)
    large_class_memory: bool = False  # measured in the 1000-class training-memory check (ImageNet scale)

    @property
    def trains(self):
        return learns(self.trainer)


_BMIP_CONFIG = "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml"
# The settings the benchmark's figures are stated for (docs/BENCHMARK.md), by benchmark name.
PUBLISHED = OrderedDict([
    ("ZS-CLIP", TrainerSpec("ZeroshotCLIP", "configs/trainers/CoOp/vit_b16.yaml")),
    ("CoOp", TrainerSpec("CoOp", "configs/trainers/CoOp/vit_b16.yaml", large_class_memory=True)),
    ("CoCoOp", TrainerSpec("CoCoOp", "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
                           per_image_text=True)),
    ("IVLP", TrainerSpec("IVLP", "configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx_dp9.yaml")),
    ("MaPLe", TrainerSpec("MaPLe", "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", gpu_table=True,
                          large_class_memory=True)),
    ("BITP", TrainerSpec("BITP", "configs/trainers/BITP/vit_b16_c2_ep20_ctx1_dp9TT.yaml",
                         reported_against=("MaPLe", "BMIP-reference"))),
    ("UPT", TrainerSpec("UPT", "configs/trainers/UPT/vit_b16_c2_ep5_batch4_2ctx.yaml", reported_against=("MaPLe",))),
    ("BMIP-reference", TrainerSpec("BMIP", _BMIP_CONFIG, ("TRAINER.BMIP.MODE", "reference"), compare_with="MaPLe",
                                   gpu_table=True, large_class_memory=True)),
    ("BMIP-per_sample", TrainerSpec("BMIP", _BMIP_CONFIG, ("TRAINER.BMIP.MODE", "per_sample"), compare_with="MaPLe",
                                    gpu_table=True, large_class_memory=True)),
    # The self-regulating methods: the step includes the regularisers (one extra frozen image-encoder forward).
    ("PromptSRC", TrainerSpec("PromptSRC", "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
                              reported_against=("MaPLe", "IVLP"), large_class_memory=True)),
    ("PromptSRC_BMIP", TrainerSpec("PromptSRC_BMIP",
                                   "configs/trainers/PromptSRC_BMIP/vit_bitp_ctx4_ep20TT_adam_PromptSRC.yaml",
                                   reported_against=("BMIP-reference", "MaPLe"))),
    # ProDA: a step encodes every class under PROMPT_BATCH (= 4) of its 32 prompts; an evaluation under all 32.
    ("ProDA", TrainerSpec("ProDA", "configs/trainers/ProDA/vit_b16_c2_e100_ctx16_warmup5_BZ64_ProDA.yaml",
                          reported_against=("CoOp",))),
    # MMA: no prompts; a residual adapter beside blocks 5..12 of both encoders, on every token.
    ("MMA", TrainerSpec("MultiModalAdapter", "configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml",
                        reported_against=("MaPLe",))),
    # CoOp's prompts plus the knowledge term (its target encoded once at build): the published scripts' W and N_CTX.
    ("KgCoOp", TrainerSpec("KgCoOp", "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
                           ("TRAINER.KGCOOP.N_CTX", "4", "TRAINER.KGCOOP.W", "8.0"), reported_against=("CoOp", "MaPLe"))),
    # KgCoOp's training with class-aware tokens from a meta-network entering the text encoder at block 8.
    ("TCP", TrainerSpec("TCP", "configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml", ("OPTIM.ADAM_EPS", "1e-3"),
                        reported_against=("KgCoOp", "MaPLe"))),
    # Representation tokens inserted before blocks 6..12 of both encoders, two heads; the step includes the frozen
    # image encoder's forward for the regulariser (the last block computes every row: the rep tokens are read).
    ("MMRL", TrainerSpec("MMRL", "configs/trainers/MMRL/vit_b16.yaml", reported_against=("MaPLe",))),
    ("MMRLpp", TrainerSpec("MMRLpp", "configs/trainers/MMRLpp/vit_b16.yaml", reported_against=("MMRL", "MaPLe"))),
    # MaPLe's prompts plus output adapters; the step adds one frozen image-encoder forward of the second view (here the
    # same batch). ImageNet's row of the release's per-dataset settings applies (depth 12, 4 tokens, W 8.0).
    ("CoPrompt", TrainerSpec("CoPrompt", "configs/trainers/CoPrompt/coprompt.yaml", reported_against=("MaPLe",))),
    ("CoPrompt_BMIP", TrainerSpec("CoPrompt_BMIP", "configs/trainers/CoPrompt_BMIP/coprompt_bmip.yaml",
                                  reported_against=("CoPrompt", "BMIP-reference", "MaPLe"))),
])
# Registered trainers the benchmark leaves out, and why.
NOT_MEASURED = {"LinearProbeCLIP": "no prompt learner and no training step: a logistic regression fitted once on "
                                   "cached image features, and its evaluation is the zero-shot floor's image encoder "
                                   "plus one matrix product"}


def real_classnames(count):
    """The first ``count`` ImageNet class names (plain English, one per line in imagenet_classnames.txt)."""
    with open(CLASSNAMES_FILE) as f:
        names = [line.strip() for line in f if line.strip()]
    if not 1 <= count <= len(names):
        raise ValueError(f"Asked for {count} class names; the benchmark has 1..{len(names)} real class names "
                         f"(ImageNet's). Pass a class count in that range.")
    return names[:count]


def benchmark_classnames(count):
    """``count`` class names: ImageNet's real ones up to 1000; beyond, the real names again with a number appended
    ("tench 2", ...), so a larger label set (e.g. ImageNet-21k's 21,000) has prompts of realistic token lengths."""
    if count <= 1000:
        return real_classnames(count)
    names = real_classnames(1000)
    return names + [f"{names[i % 1000]} {i // 1000 + 1}" for i in range(1000, count)]


def benchmark_backbone(name):
    """Random-weight backbone with ``name``'s real shapes: ``ViT-B/16`` -> ``random-ViT-B/16`` (no download)."""
    if name in RANDOM_BACKBONES:
        return name
    if f"random-{name}" in RANDOM_BACKBONES:
        return f"random-{name}"
    choices = sorted({n.replace("random-", "") for n in RANDOM_BACKBONES})
    raise ValueError(f"Unknown backbone '{name}' for the benchmark; use one of {choices}.")


def benchmark_backbone_spec(backbone, weights=""):
    """The random backbone ``backbone`` through the openai family, or (``weights``: its OpenAI-format file, see
    :func:`write_openai_format`) the same weights through the open_clip family's OpenAI converter."""
    name = benchmark_backbone(backbone)
    return BackboneSpec("open_clip", name, path=weights) if weights else BackboneSpec("openai", name)


def openai_format_path(backbone, folder):
    """Where :func:`write_openai_format` saves ``backbone`` in ``folder``."""
    return osp.join(folder, benchmark_backbone(backbone).replace("/", "-").replace("@", "-") + "-openai-format.pt")


def write_openai_format(backbone, folder):
    """Save the random backbone ``backbone`` as an OpenAI-format file (state dict + OpenAI's metadata entries) in
    ``folder``, so the open_clip family measures the same shapes and weights; returns its path."""
    model = load_backbone(benchmark_backbone(backbone)).model
    metadata = {"input_resolution": torch.tensor(model.visual.input_resolution),
                "context_length": torch.tensor(model.context_length), "vocab_size": torch.tensor(model.vocab_size)}
    path = openai_format_path(backbone, folder)
    torch.save({**model.state_dict(), **metadata}, path)
    return path


def input_resolution(backbone):
    return RANDOM_BACKBONES[benchmark_backbone(backbone)][1]


def benchmark_subjects():
    """``{benchmark name: TrainerSpec}`` of every registered prompt trainer, in display order: its ``PUBLISHED``
    entries (BMIP has one per mode), or one entry named after it with its registered config defaults."""
    subjects = OrderedDict()
    for trainer in display_order():
        if trainer in NOT_MEASURED or not hasattr(TRAINER_REGISTRY.get(trainer), "CFG_NODE"):
            continue  # (a trainer not built on trainers/base.py has no TRAINER.<CFG_NODE>.PREC to set)
        published = [(name, spec) for name, spec in PUBLISHED.items() if spec.trainer == trainer]
        subjects.update(published or [(trainer, TrainerSpec(trainer))])
    return subjects


def trainer_spec(trainer_id):
    subjects = benchmark_subjects()
    if trainer_id not in subjects:
        raise ValueError(f"Unknown benchmark trainer '{trainer_id}'; use any of {list(subjects)}.")
    return subjects[trainer_id]


def build_cfg(trainer_id, backbone, device, prec=None, straightforward=False, weights="", text_chunk_classes=None):
    """The frozen config ``train.py`` would build for this trainer, backbone, device and precision.

    ``prec`` None keeps the published config's PREC (what a user's run computes in); ``weights`` (an OpenAI-format
    file of the same backbone) runs it through the open_clip family; ``text_chunk_classes`` None keeps the default
    ``MODEL.TEXT_CHUNK_CLASSES`` (auto).
    """
    from runs.config import build_parser, setup_cfg  # train.py's own config (imports every trainer and dataset)

    spec = trainer_spec(trainer_id)
    backbone = benchmark_backbone(backbone)
    size = input_resolution(backbone)
    node = TRAINER_REGISTRY.get(spec.trainer).CFG_NODE
    config = ["--config-file", osp.join(REPO_ROOT, spec.config_file)] if spec.config_file else []
    argv = ["--trainer", spec.trainer, *config, "--backbone", backbone, "--device", device,
            "MODEL.STRAIGHTFORWARD", str(bool(straightforward)), "INPUT.SIZE", f"({size}, {size})",
            "DATASET.NAME", "ImageNet", *spec.opts]
    if weights:
        argv += ["MODEL.BACKBONE.FAMILY", "open_clip", "MODEL.BACKBONE.PATH", weights]
    if prec is not None:
        argv += [f"TRAINER.{node}.PREC", prec]
    if text_chunk_classes is not None:
        argv += ["MODEL.TEXT_CHUNK_CLASSES", str(text_chunk_classes)]
    return setup_cfg(build_parser().parse_args(argv))


def shipped_precision(cfg):
    """The PREC of a trainer's config (``TRAINER.<its node>.PREC``)."""
    return cfg.TRAINER[TRAINER_REGISTRY.get(cfg.TRAINER.NAME).CFG_NODE].PREC


def published_settings(trainer_id, backbone, device="cpu"):
    """(PREC, training batch size, learning rate) of the trainer's published config."""
    cfg = build_cfg(trainer_id, backbone, device)
    return shipped_precision(cfg), cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.OPTIM.LR


def large_class_spec(trainer_id, straightforward, classes, batch, **common):
    """A measurement spec: training at ``classes`` classes, one step (peak memory), in the ``large_classes`` group."""
    return {**common, "kind": "train", "group": "large_classes", "trainer": trainer_id,
            "straightforward": straightforward, "classes": classes, "batch": batch, "repeats": 1, "max_seconds": 0.0}


def class_scaling_spec(trainer_id, classes, batch, text_chunk_classes, **common):
    """A measurement spec: the peak memory of one fast training step (the first: no warm-up) at ``classes`` classes
    with ``MODEL.TEXT_CHUNK_CLASSES`` = ``text_chunk_classes``, in the ``class_scaling`` group. A self-regulating
    trainer's frozen teacher (template-averaged text features, computed once per run without gradients, in the
    first step) averages one template instead of 60-80 (``teacher_templates``): the same computation, a 60th of its
    time."""
    return {**common, "kind": "train", "group": "class_scaling", "trainer": trainer_id, "straightforward": False,
            "classes": classes, "batch": batch, "text_chunk_classes": text_chunk_classes, "teacher_templates": 1,
            "warmup": False, "repeats": 1, "max_seconds": 0.0}


def chunking_cost_spec(trainer_id, classes, batch, rounds, **common):
    """A measurement spec: training steps at ``classes`` classes alternating the class-chunked text encoding (auto)
    and one pass, ``rounds`` timed steps each after one warm-up step each (``measure.time_chunking_cost``), in the
    ``chunking_cost`` group; the teacher as in :func:`class_scaling_spec`."""
    return {**common, "kind": "train", "group": "chunking_cost", "trainer": trainer_id, "straightforward": False,
            "classes": classes, "batch": batch, "text_chunk_classes": -1, "teacher_templates": 1,
            "alternate_one_pass": True, "repeats": rounds, "max_seconds": 0.0}


def build_trainer(trainer_id, backbone, device, prec=None, classes=10, straightforward=False):
    """:func:`build_cfg` then :func:`build_trainer_without_data` on the first ``classes`` ImageNet class names,
    without the build's progress lines."""
    cfg = build_cfg(trainer_id, backbone, device, prec, straightforward)
    with contextlib.redirect_stdout(io.StringIO()):
        return build_trainer_without_data(cfg, real_classnames(classes))


def build_trainer_without_data(cfg, classnames):
    """The registered trainer of ``cfg`` after its own ``build_model()``, on a stand-in dataset of class names.

    Everything a trainer does besides loading data runs unchanged: ``check_cfg``, device resolution, the frozen
    CLIP, the prompt learner, optimizer, precision and grad scaler.
    """
    trainer_class = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    trainer = trainer_class.__new__(trainer_class)  # SimpleTrainer.__init__ would build a DataManager
    TrainerBase.__init__(trainer)
    trainer.check_cfg(cfg)
    trainer.cfg = cfg
    trainer.device = resolve_device(cfg)
    trainer.start_epoch = trainer.epoch = 0
    trainer.max_epoch = cfg.OPTIM.MAX_EPOCH
    trainer.dm = SimpleNamespace(dataset=SimpleNamespace(classnames=list(classnames)))
    trainer.num_classes = len(classnames)
    trainer.batch_idx, trainer.num_batches = 0, 2 ** 31  # an epoch that never ends: no LR step while timing
    trainer.build_model()
    if hasattr(trainer, "use_descriptions"):  # trains with class descriptions (CoPrompt): 10 stand-in sentences each
        trainer.use_descriptions([[f"a photo of a {name}, description {i}." for i in range(10)] for name in classnames])
    return trainer


def trainable_parameters(trainer):
    """Number of trainable scalars of the trainer's registered (saved) modules."""
    return sum(p.numel() for name in trainer.get_model_names()
               for p in trainer._models[name].parameters() if p.requires_grad)


class ZeroShotFloor:
    """Zero-shot CLIP as the family's own code runs it: text features encoded once, then ``encode_image`` per batch."""

    def __init__(self, backbone, device, prec, classnames, weights=""):
        self.device = torch.device(device)
        self.precision = Precision(prec, self.device)
        frozen = self.precision.prepare_frozen(load_backbone(benchmark_backbone_spec(backbone, weights)))
        self.clip = frozen.model.to(self.device)
        tokens = frozen.tokenize([DEFAULT_TEMPLATE.format(name) for name in classnames]).to(self.device)  # [n_cls, L]
        with torch.no_grad(), self.precision.autocast():
            text = self.clip.encode_text(tokens).float()  # [n_cls, E]
        self.text_features = text / text.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def __call__(self, images):
        """images [B, 3, H, W] -> logits [B, n_cls]."""
        with self.precision.autocast():
            features = self.clip.encode_image(images).float()  # [B, E]
        features = features / features.norm(dim=-1, keepdim=True)
        return self.clip.logit_scale.exp() * features @ self.text_features.t()  # [B, n_cls]
