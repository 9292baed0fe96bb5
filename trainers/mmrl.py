"""MMRL (Guo & Gu, CVPR 2025): a shared representation space whose tokens enter both encoders, and two heads.

One learnable matrix R [N_REP_TOKENS, REP_DIM] is projected, for each block k of ``REP_LAYERS`` (1-based), into both
encoders by that layer's own Linear (REP_DIM -> vision width, REP_DIM -> text width). Before the first such block the
N projected tokens are inserted right after CLS (vision) and SOT (text), without positional embedding; before each
later one the previous block's outputs at their positions are replaced by the new projection (MMRL++: mixed with
them, ``trainers/mmrlpp.py``). The text input is the frozen hand-crafted sentence ``MMRL_TEMPLATES[DATASET.NAME]``
(no learnable word); its feature is read at EOT, N positions later; the text causal mask covers the longer sequence
(the prompted forward's inserted slots, :class:`clip_patch.DeepPrompts` ``insert_at``).

Two image heads on the same text features t (all L2-normalised), with the hard-coded logit scale 100:

    logits     = 100 · cos(CLS feature, t)
    logits_rep = 100 · cos(mean_n ln_post(rep-token output n) @ proj_rep, t)     (proj_rep: a new random [D_v, E])
    fusion     = ALPHA · logits + (1 − ALPHA) · logits_rep

    L = ALPHA · CE(logits) + (1 − ALPHA) · CE(logits_rep)
        + REG_WEIGHT · (1 − mean cos(CLS feature, frozen CLIP image feature))
        + REG_WEIGHT · (1 − mean_c cos(t_c, frozen CLIP text feature of the same sentence))

(yunncheng/MMRL ``trainers/mmrl.py`` L170-255, ``clip/model_mmrl.py`` L207-245, L365-381). The frozen CLIP is the
backbone's own encoders run without the tokens: no second copy of the weights. Which head a test reads depends on the
protocol (``TASK``): see :func:`fusion_at_test`. Per-dataset settings that the release's ``train.py`` applies after
the YAML come with the trainer (``dataset_overrides``). docs/MMRL.md lists every difference from the release.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_patch import DeepPrompts
from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer, PromptedCLIP, setting_opts
from .kgcoop import KNOWLEDGE_TEMPLATES, knowledge_features, mean_cosine_distance, template_for
from .prompting import ClassPrompts, fill_template, shared_layers, text_prompt_slots
from .release_formats import ReleaseLayout

TASKS = ("B2N", "FS", "CD")  # the release's TASK: base-to-novel, few-shot, cross-dataset (and domain generalization)
LOGIT_SCALE = 100.0  # hard-coded in the release (mmrl.py L231-232); CLIP's own logit scale is not read


def add_representation_keys(node):
    """The keys MMRL and MMRL++ share (the release's train.py L92-113 defaults)."""
    node.ALPHA = 0.7  # weight of the CLS head in the fused logits and in the loss; 1 - ALPHA: the rep head's
    node.REG_WEIGHT = 1.0  # weight of each cosine regulariser to the frozen CLIP (per data set: dataset_overrides)
    node.REP_LAYERS = []  # blocks (1-based, increasing) before which the tokens enter; published 6..12; [] refused
    node.REP_DIM = 512  # width of the shared representation space
    node.N_REP_TOKENS = 5  # representation tokens
    node.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU); published: amp
    node.TASK = "B2N"  # the release's command-line TASK: B2N | FS | CD; decides the test head and the overrides


@register_config
def add_mmrl_config(cfg):
    cfg.TRAINER.MMRL = CN()
    add_representation_keys(cfg.TRAINER.MMRL)


# The hand-crafted sentence per data set (yunncheng/MMRL ``trainers/mmrl.py`` L21-37): KgCoOp's knowledge templates
# but for DTD. A data set the release does not know (a KeyError there) gets its own ``prompt_template`` or
# "a photo of a {}.".
MMRL_TEMPLATES = {**KNOWLEDGE_TEMPLATES, "DescribableTextures": "{} texture."}

# Per-dataset settings of MMRL, the same for every TASK (yunncheng/MMRL ``trainers/config.py`` L6-43).
MMRL_DATASET_SETTINGS = {
    "StanfordCars": {"REG_WEIGHT": 7.0},
    "FGVCAircraft": {"REG_WEIGHT": 6.0},
    "SUN397": {"REG_WEIGHT": 6.0},
    "DescribableTextures": {"REG_WEIGHT": 6.0},
    "Food101": {"REG_WEIGHT": 5.0},
    "OxfordFlowers": {"REG_WEIGHT": 4.0},
    "UCF101": {"REG_WEIGHT": 3.0},
    "ImageNet": {"REG_WEIGHT": 0.5},
    "Caltech101": {"REG_WEIGHT": 0.5},
    "OxfordPets": {"REG_WEIGHT": 0.2},
    "EuroSAT": {"REP_DIM": 2048, "REG_WEIGHT": 0.01},
}


def fusion_at_test(task, subsample_classes, dataset_name):
    """Whether a test reads the fused logits (else the CLS head's alone), as the release's ``test()`` decides
    (mmrl.py L421-428): base-to-novel fuses on the base classes only (not on novel nor on all), few-shot always,
    cross-dataset only on ImageNet (the source)."""
    if task == "B2N":
        return subsample_classes == "base"
    if task == "FS":
        return True
    return dataset_name == "ImageNet"


def check_rep_layers(method, rep_layers, blocks=None):
    """``rep_layers`` as a list, or a one-line ValueError unless they are increasing whole block numbers from 1 (to
    ``blocks``, the encoders' block count, when known)."""
    rep_layers = list(rep_layers)
    whole = all(isinstance(k, int) and not isinstance(k, bool) for k in rep_layers)
    within = whole and rep_layers and rep_layers[0] >= 1 and (blocks is None or rep_layers[-1] <= blocks)
    if not within or rep_layers != sorted(set(rep_layers)):
        bound = f"in 1..{blocks}" if blocks else "from 1 to the encoders' block count"
        raise ValueError(f"TRAINER.{method}.REP_LAYERS is {rep_layers}: give increasing blocks {bound} "
                         f"(published: [6, 7, 8, 9, 10, 11, 12]).")
    return rep_layers


def check_fraction(key, value, meaning):
    """Raise a one-line ValueError unless ``value`` is a number in 0..1 (``key`` names the config key)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} = {value!r} is out of range: use a number in 0..1 ({meaning})")


def cloned_linears(linear, count):
    """``count`` copies of one freshly initialised Linear: every layer's projection starts equal (the release's
    ``_get_clones``)."""
    return nn.ModuleList([copy.deepcopy(linear) for _ in range(count)])


class RepresentationLearner(nn.Module):
    """MMRL's trainable tensors under the release's names (its ``representation_learner`` and the visual encoder's
    ``proj_rep``), and the frozen class sentences (not saved)."""

    METHOD = "MMRL"

    def __init__(self, backbone, classnames, template, rep_layers, n_tokens, rep_dim):
        super().__init__()
        backbone.require_vit(self.METHOD)
        text_encoder, image_encoder = backbone.require_text_encoder(self.METHOD), backbone.image_encoder
        rep_layers = check_rep_layers(self.METHOD, rep_layers, shared_layers(text_encoder.num_layers,
                                                                              image_encoder.num_layers))
        if image_encoder.proj is None:
            raise ValueError(f"{self.METHOD} projects its rep tokens beside the ViT's output projection, which this "
                             f"backbone's image tower lacks: use a ViT with a projection (e.g. ViT-B/16).")
        self.rep_layers = rep_layers
        self.n_tokens = n_tokens
        self.compound_rep_tokens = nn.Parameter(torch.empty(n_tokens, rep_dim))  # R [N, REP_DIM]
        nn.init.normal_(self.compound_rep_tokens, std=0.02)
        self.build_aligners(rep_dim, image_encoder.width, text_encoder.width)
        self.build_rep_projection(image_encoder)
        self.prompts = ClassPrompts(backbone, classnames, "", 0, texts=fill_template(template, classnames))

    # -- what MMRL++ builds and computes differently ---------------------------------------------------------------
    def build_aligners(self, rep_dim, vision_width, text_width):
        self.compound_rep_tokens_r2vproj = cloned_linears(nn.Linear(rep_dim, vision_width), len(self.rep_layers))
        self.compound_rep_tokens_r2tproj = cloned_linears(nn.Linear(rep_dim, text_width), len(self.rep_layers))

    def build_rep_projection(self, image_encoder):
        width, embed = image_encoder.proj.shape  # [D_v, E]
        self.proj_rep = nn.Parameter(width ** -0.5 * torch.randn(width, embed))  # new, random (model_mmrl.py L338)

    def layer_tokens(self, side, index):
        """The tokens [N, D] of the ``index``-th representation layer for ``side`` ("text" | "vision")."""
        aligners = self.compound_rep_tokens_r2tproj if side == "text" else self.compound_rep_tokens_r2vproj
        return aligners[index](self.compound_rep_tokens)

    ENTERING_READS_OUTPUTS = False  # whether ``entering`` reads the previous block's outputs (the probe): MMRL++

    def entering(self, new, probe):
        """What enters a later representation layer: the new tokens [N, D] replace the previous outputs."""
        return new

    def rep_projection(self, proj):
        """[D_v, E] for the mean rep-token output; ``proj``: the frozen CLIP's own (unused by MMRL)."""
        return self.proj_rep

    # -- the prompted forward's inputs -----------------------------------------------------------------------------
    def deep_tokens(self, side):
        """DeepPrompts inserting the tokens after CLS / SOT before block REP_LAYERS[0], renewing them before the
        others (``layer`` is 0-based: block k = layer + 1)."""
        index_of = {k - 1: i for i, k in enumerate(self.rep_layers)}  # 0-based layer -> representation layer
        first = self.rep_layers[0] - 1
        tokens = [self.layer_tokens(side, i) for i in range(len(self.rep_layers))]  # once per forward: [N, D] each

        def replace(layer, probe):
            if layer not in index_of:
                return None  # a block between representation layers keeps the tokens' outputs
            new = tokens[index_of[layer]]
            return new if layer == first else self.entering(new, probe)
        slots = text_prompt_slots(self.n_tokens)
        if not self.ENTERING_READS_OUTPUTS:  # the same [N, D] in every sequence, with or without a probe
            return DeepPrompts(slots, replace, shared=True, insert_at=first)
        # per sequence (each from its own outputs), by one rule for every class: a class chunk gets them as they are
        prompts = DeepPrompts(slots, replace, insert_at=first)
        prompts.restrict = lambda classes: prompts
        return prompts

    def text_inputs(self):
        return self.prompts.assemble(None), self.prompts.tokens, self.deep_tokens("text")  # [n_cls, L, D], [n_cls, L]

    def vision_inputs(self):
        return None, self.deep_tokens("vision")


class RepresentationCLIP(PromptedCLIP):
    """The frozen encoders with the representation tokens, and MMRL's two heads.

    ``forward(image)`` gives the fused logits (training, and any caller that wants one answer); a trainer's test
    reads :meth:`heads` and chooses (``fusion_at_test``). The text features are cached per evaluation as for every
    method (:class:`trainers.base.PromptedCLIP`)."""

    def __init__(self, backbone, learner, alpha, **options):
        super().__init__(backbone, learner, **options)
        self.alpha = alpha

    def rep_image_features(self, image):
        """L2-normalised CLS features [B, E] and rep features [B, E] (mean of the rep tokens' ln_post outputs,
        projected)."""
        _, deep = self.prompt_learner.vision_inputs()
        cls, rep_tokens = self.image_encoder.with_slot_outputs(image, deep, self.straightforward)  # [B, E], [B, N, D]
        projection = self.prompt_learner.rep_projection(self.image_encoder.proj)  # [D, E]
        rep = rep_tokens.mean(dim=1) @ projection.to(rep_tokens.dtype)  # [B, E]
        return F.normalize(cls, dim=-1), F.normalize(rep, dim=-1)

    def heads(self, image):
        """(logits [B, n_cls], logits_rep [B, n_cls], CLS image features [B, E], text features [n_cls, E])."""
        image_features, rep_features = self.rep_image_features(image)
        text_features = self.text_features()  # [n_cls, E], normalised
        logits = LOGIT_SCALE * image_features @ text_features.t()  # [B, n_cls]
        logits_rep = LOGIT_SCALE * rep_features @ text_features.t()  # [B, n_cls]
        return logits, logits_rep, image_features, text_features

    def fuse(self, logits, logits_rep):
        """ALPHA · logits + (1 − ALPHA) · logits_rep, both [B, n_cls]."""
        return self.alpha * logits + (1 - self.alpha) * logits_rep

    def forward(self, image):
        logits, logits_rep, _, _ = self.heads(image)
        return self.fuse(logits, logits_rep)  # [B, n_cls]


@TRAINER_REGISTRY.register()
class MMRL(CLIPPromptTrainer):
    DISPLAY_RANK = 125  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "MMRL"
    CHECKPOINT_NAME = "MultiModalRepresentationLearner"  # the release's model name (its checkpoint folder)
    LEARNER = RepresentationLearner
    # The release saves its whole CustomCLIP; the trainables live in ``representation_learner`` and the visual
    # encoder's ``proj_rep``, marked trainable by substring (mmrl.py L291-300).
    RELEASE_LAYOUT = ReleaseLayout(
        groups={"compound_rep_tokens": "representation_learner.{key}",
                "compound_rep_tokens_r2vproj": "representation_learner.{key}",
                "compound_rep_tokens_r2tproj": "representation_learner.{key}",
                "proj_rep": "image_encoder.proj_rep"},
        trained=("representation_learner", "image_encoder.proj_rep"))

    @staticmethod
    def dataset_overrides(cfg):
        """[key, value, ...] the release's train.py merges after the config files and before the command-line
        options for this data set (applied the same way by ``runs.config.setup_cfg``)."""
        settings = MMRL_DATASET_SETTINGS.get(cfg.DATASET.NAME, {})
        return setting_opts("MMRL", settings)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node, m = f"TRAINER.{self.CFG_NODE}", cfg.TRAINER[self.CFG_NODE]
        if m.TASK not in TASKS:
            raise ValueError(f"{node}.TASK is {m.TASK!r}: use B2N (base-to-novel), FS (few-shot) or CD "
                             f"(cross-dataset / domain generalization), the release's TASK.")
        check_fraction(f"{node}.ALPHA", m.ALPHA, meaning="weight of the CLS head; 1 - ALPHA: the rep head's")
        check_range(f"{node}.REG_WEIGHT", m.REG_WEIGHT, 0.0, meaning="weight of the regularisers to frozen CLIP")
        check_rep_layers(self.CFG_NODE, m.REP_LAYERS)  # (against the encoders' block count: check_backbone_depths)
        check_range(f"{node}.N_REP_TOKENS", m.N_REP_TOKENS, 1, meaning="representation tokens")
        check_range(f"{node}.REP_DIM", m.REP_DIM, 1, meaning="width of the representation space")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        blocks = shared_layers(text_layers, vision_layers)
        check_rep_layers(self.CFG_NODE, cfg.TRAINER[self.CFG_NODE].REP_LAYERS, blocks)

    @property
    def tests_fused_logits(self):
        """Whether this run's test reads the fused logits (else the CLS head's): :func:`fusion_at_test`."""
        cfg = self.cfg
        return fusion_at_test(self.method_cfg.TASK, cfg.DATASET.SUBSAMPLE_CLASSES, cfg.DATASET.NAME)

    def clip_text_target(self, backbone, texts):
        """The frozen CLIP's L2-normalised features [n_cls, E] of the class sentences, in the compute dtype of PREC
        (the release's second CLIP is ``.float()``ed unless PREC is fp16)."""
        return knowledge_features(backbone, texts, self.device, fp16=self.precision.prec == "fp16")

    def build_learner(self, backbone, classnames, template):
        m = self.method_cfg
        return self.LEARNER(backbone, classnames, template, m.REP_LAYERS, m.N_REP_TOKENS, m.REP_DIM)

    def build_prompt_learner(self, cfg, classnames, backbone):
        template = template_for(MMRL_TEMPLATES, self.dm.dataset, cfg.DATASET.NAME)
        print(f'Class sentences: "{template}"; test head: {"fusion" if self.tests_fused_logits else "CLS"} '
              f"(TASK {self.method_cfg.TASK})")
        target = self.clip_text_target(backbone, fill_template(template, classnames))
        learner = self.build_learner(backbone, classnames, template)
        learner.register_buffer("text_target", target, persistent=False)  # [n_cls, E]
        return learner

    def build_clip_model(self, backbone, learner):
        return RepresentationCLIP(backbone, learner, self.method_cfg.ALPHA, **self.model_options())

    def loss_terms(self, image, label):
        """The four weighted loss terms (tensors) and the fused logits [B, n_cls]."""
        model, m = self.model, self.method_cfg
        logits, logits_rep, image_features, text_features = model.heads(image)
        with torch.no_grad():
            clip_image = model.image_encoder(image, None, None, model.straightforward)  # [B, E]: without the tokens
        terms = {"loss_ce": m.ALPHA * F.cross_entropy(logits.float(), label),
                 "loss_ce_rep": (1 - m.ALPHA) * F.cross_entropy(logits_rep.float(), label),
                 # 1 - mean cosine of the rows, KgCoOp's distance (here on image features too)
                 "loss_reg_image": m.REG_WEIGHT * mean_cosine_distance(image_features, clip_image),
                 "loss_reg_text": m.REG_WEIGHT * mean_cosine_distance(text_features, model.prompt_learner.text_target)}
        return terms, model.fuse(logits, logits_rep)

    def compute_loss(self, image, label):
        return self.sum_of_terms(*self.loss_terms(image, label))

    def model_inference(self, image):
        """The test's logits: fused or the CLS head's, as the release's ``test()`` chooses for TASK."""
        with self.precision.autocast():
            logits, logits_rep, _, _ = self.model.heads(image)
            return (self.model.fuse(logits, logits_rep) if self.tests_fused_logits else logits).float()
