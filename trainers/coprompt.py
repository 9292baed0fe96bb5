"""CoPrompt (Roy & Etemad, ICLR 2024): MaPLe's coupled prompts plus two output adapters, trained to stay consistent
with the frozen CLIP; and CoPrompt_BMIP, BMIP's prompts trained the same way.

Prompts (``CoPrompt``): MaPLe's (``trainers/maple.py``): text context at positions 1..b, vision prompt ``proj(ctx)``
appended after the patches, deep layers l = 1..J-1 replace the text slots and the LAST b vision tokens. Output
adapters: ``A(x) = ReLU(W2 ReLU(W1 x))`` (Linear E -> E/4 -> E, no bias) on each encoder's features, mixed before
normalisation with the release's fixed ratios: image 0.1 A_v(v) + 0.9 v, text 0.2 A_t(t) + 0.8 t.

Loss (ShuvenduRoy/CoPrompt ``trainers/coprompt.py`` L336-366), with prompted, mixed, normalised features v̂ [B, E] of
the first augmented view and t̂ [n_cls, E]:

    L = CE(s · v̂ t̂ᵀ, y) + W · ((1 − mean_c cos(t̂_c, g_dc)) + (1 − mean_i cos(v̂_i, z_i)))

g_d [n_cls, E]: the frozen CLIP's normalised features of the d-th LLM description of each class
(``trainers/llm_descriptions.py``), one index d drawn per step for all classes; z [B, E]: the frozen CLIP's
normalised features of a SECOND augmented view of each image (``DATALOADER.K_TRANSFORMS`` 2). ``DISTILL`` "mse"
replaces both cosine distances by the mean squared error of the normalised features. The frozen CLIP here is the
backbone's own encoders run without prompts (the release builds a second copy of CLIP). docs/COPROMPT.md lists every
difference from the release.
"""
import dataclasses
import random

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer, setting_opts
from .bmip import MODES, BMIPPromptLearner
from .kgcoop import mean_cosine_distance
from .llm_descriptions import check_descriptions_file, class_descriptions
from .maple import MaPLe, MaPLePromptLearner, add_coupled_prompt_keys
from .prompting import check_coupled_depth, frozen_text_features
from .release_formats import ReleaseLayout

DISTILL_KINDS = ("cosine", "mse")
IMAGE_ADAPTER_RATIO, TEXT_ADAPTER_RATIO = 0.1, 0.2  # the release's hard-coded mixing ratios (coprompt.py L301-302)


@register_config
def add_coprompt_config(cfg):
    cfg.TRAINER.COPROMPT = CN()  # the release's TRAINER.CoPrompt.* plus its TRAINER.W and TRAINER.DISTILL
    add_coupled_prompt_keys(cfg.TRAINER.COPROMPT)  # N_CTX, CTX_INIT, PREC, PROMPT_DEPTH: MaPLe's
    cfg.TRAINER.COPROMPT.W = 8.0  # weight of the two consistency terms (release default; its coprompt.yaml: 1.0)
    cfg.TRAINER.COPROMPT.DISTILL = "cosine"  # consistency distance: cosine | mse
    cfg.TRAINER.COPROMPT.DATASET_OVERRIDES = True  # True: DATASET_SETTINGS[DATASET.NAME] win over files and options
    cfg.TRAINER.COPROMPT.FP16_PROMPTS = True  # CoPrompt: vision and deep text prompts rounded to fp16 (release)
    cfg.TRAINER.COPROMPT.DESCRIPTIONS = ""  # JSON file {class name: [sentence, ...]}; "" = the data set's own
    cfg.TRAINER.COPROMPT.BMIP_MODE = "reference"  # CoPrompt_BMIP: BMIP gates, reference | per_sample; CoPrompt: inert


# The release's per-dataset settings (ShuvenduRoy/CoPrompt ``trainers/constants.py`` L3-60), applied by its train.py
# after the config files and the command line (``train.py`` L116-117). Here: with TRAINER.COPROMPT.DATASET_OVERRIDES
# True, by ``dataset_overrides`` over the config files, while a key given as a command-line option keeps the option's
# value (the release silently replaces it); data sets not listed (cross-dataset and DG targets, the micro world) keep
# the config's values (the release cannot set up a config for them).
DATASET_SETTINGS = {
    "ImageNet": {"PROMPT_DEPTH": 12, "N_CTX": 4, "W": 8.0},
    "Caltech101": {"PROMPT_DEPTH": 12, "N_CTX": 4, "W": 4.0},
    "OxfordPets": {"PROMPT_DEPTH": 12, "N_CTX": 2, "W": 0.1},
    "StanfordCars": {"PROMPT_DEPTH": 12, "N_CTX": 4, "W": 4.0},
    "OxfordFlowers": {"PROMPT_DEPTH": 9, "N_CTX": 4, "W": 8.0},
    "Food101": {"PROMPT_DEPTH": 9, "N_CTX": 4, "W": 0.5, "OPTIM.MAX_EPOCH": 5},
    "FGVCAircraft": {"PROMPT_DEPTH": 9, "N_CTX": 4, "W": 2.0},
    "SUN397": {"PROMPT_DEPTH": 12, "N_CTX": 4, "W": 8.0},
    "DescribableTextures": {"PROMPT_DEPTH": 12, "N_CTX": 2, "W": 8.0},
    "EuroSAT": {"PROMPT_DEPTH": 12, "N_CTX": 2, "W": 0.1},
    "UCF101": {"PROMPT_DEPTH": 12, "N_CTX": 4, "W": 2.0},
}


def fp16_rounded(values):
    """values [..., D] rounded to fp16 and back to their dtype (None stays None); gradients pass as through a cast."""
    return None if values is None else values.to(torch.float16).to(values.dtype)


class Adapter(nn.Module):
    """The release's output adapter: Linear(E -> E/4) ReLU Linear(E/4 -> E) ReLU, no biases (``fc`` as named there)."""

    def __init__(self, width, reduction=4):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(width, width // reduction, bias=False), nn.ReLU(),
                                nn.Linear(width // reduction, width, bias=False), nn.ReLU())

    def forward(self, x):
        return self.fc(x)  # [N, E] -> [N, E]


class OutputAdapters:
    """Mixin for a prompt learner: the two output adapters and their mix (``PromptedCLIP`` calls ``mix_features``
    before it normalises the features)."""

    def add_output_adapters(self, embed_dim):
        self.adapter_image = Adapter(embed_dim)
        self.adapter_text = Adapter(embed_dim)

    def mix_features(self, side, features):
        """features [N, E] -> ratio · A(features) + (1 − ratio) · features, A and ratio of ``side``."""
        adapter, ratio = ((self.adapter_text, TEXT_ADAPTER_RATIO) if side == "text"
                          else (self.adapter_image, IMAGE_ADAPTER_RATIO))
        features = features.to(adapter.fc[0].weight.dtype)  # [N, E], the adapter's dtype
        return ratio * adapter(features) + (1 - ratio) * features  # [N, E]


class CoPromptLearner(OutputAdapters, MaPLePromptLearner):
    """MaPLe's prompts (same names: ``ctx``, ``proj``, ``compound_prompts_text``, ``compound_prompt_projections``) and
    the output adapters. ``fp16_prompts``: the vision prompts and the deep text prompts are rounded to fp16 where they
    enter the sequence, in every PREC, as the release's model code does (``clip/model.py`` L387, L408, L632)."""

    def __init__(self, backbone, classnames, n_ctx, ctx_init, depth, fp16_prompts):
        MaPLePromptLearner.__init__(self, backbone, classnames, n_ctx, ctx_init, depth, method="CoPrompt",
                                    depth_key="TRAINER.COPROMPT.PROMPT_DEPTH")
        self.add_output_adapters(backbone.embed_dim)
        self.fp16_prompts = fp16_prompts

    def _rounded(self, deep):
        if not self.fp16_prompts:
            return deep
        replace = deep.replace
        return dataclasses.replace(deep, replace=lambda layer, probe: fp16_rounded(replace(layer, probe)))

    def text_inputs(self):
        embeddings, tokens, deep = super().text_inputs()
        return embeddings, tokens, self._rounded(deep)

    def vision_inputs(self):
        shallow, deep = super().vision_inputs()
        return (fp16_rounded(shallow) if self.fp16_prompts else shallow), self._rounded(deep)


class CoPromptBMIPLearner(OutputAdapters, BMIPPromptLearner):
    """BMIP's prompts (``trainers/bmip.py``, either gate mode) and CoPrompt's output adapters."""

    def __init__(self, backbone, classnames, n_ctx, ctx_init, depth, mode, share_text, share_visual):
        BMIPPromptLearner.__init__(self, backbone, classnames, n_ctx, ctx_init, depth, mode, share_text, share_visual,
                                   method="CoPrompt_BMIP", depth_key="TRAINER.COPROMPT.PROMPT_DEPTH")
        self.add_output_adapters(backbone.embed_dim)


def description_features(backbone, descriptions):
    """The frozen CLIP's L2-normalised features of every description, [n_desc, n_cls, E] fp32: each sentence encoded
    as it is (no template), class by class, by the backbone's text encoder in its own dtype, as the release does
    (``trainers/coprompt.py`` L375-401)."""
    encoder = backbone.text_encoder
    per_class = [frozen_text_features(encoder, description_tokens(backbone, sentences).to(encoder.device))
                 for sentences in descriptions]  # [n_desc, E] each
    return torch.stack(per_class, dim=1)  # [n_desc, n_cls, E]


def description_tokens(backbone, sentences):
    """Token ids [n_desc, L] of one class's descriptions; ValueError (one line) for a sentence longer than the text
    encoder's context, which OpenAI's tokenizer refuses (a RuntimeError there)."""
    try:
        return backbone.tokenize(sentences)
    except RuntimeError as err:
        raise ValueError(f"A class description does not fit the text encoder ({err}): give shorter sentences in "
                         "TRAINER.COPROMPT.DESCRIPTIONS") from None


def consistency_distance(student, teacher, kind):
    """Distance between normalised features [N, E] of the student and the frozen CLIP (normalised here): 1 − mean
    cosine ("cosine") or the mean squared error ("mse"), in fp32."""
    teacher = teacher.float()  # [N, E]
    teacher = teacher / teacher.norm(dim=-1, keepdim=True)  # [N, E], unit rows
    if kind == "cosine":
        return mean_cosine_distance(student, teacher)
    return F.mse_loss(student.float(), teacher)


class ConsistencyTrainer(CLIPPromptTrainer):
    """CoPrompt's training around a prompt learner with output adapters: the loss above, two augmented views per
    training image, LLM descriptions encoded once per training class set."""

    CFG_NODE = "COPROMPT"
    CHECKPOINT_NAME = "MultiModalPromptLearner"  # the release's registered name

    @classmethod
    def dataset_overrides(cls, cfg):
        """Settings ``runs.config`` merges over the config files (command-line options keep their values): the
        release's DATASET_SETTINGS row of DATASET.NAME, when TRAINER.COPROMPT.DATASET_OVERRIDES is True."""
        settings = DATASET_SETTINGS.get(cfg.DATASET.NAME, {}) if cfg.TRAINER.COPROMPT.DATASET_OVERRIDES else {}
        return setting_opts("COPROMPT", settings)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.COPROMPT
        check_range("TRAINER.COPROMPT.N_CTX", m.N_CTX, 1, meaning="prompt tokens per layer")
        check_range("TRAINER.COPROMPT.PROMPT_DEPTH", m.PROMPT_DEPTH, 1, meaning="layers with prompts; 1 = shallow only")
        check_range("TRAINER.COPROMPT.W", m.W, 0.0, meaning="weight of the consistency terms")
        if m.DISTILL not in DISTILL_KINDS:
            raise ValueError(f"TRAINER.COPROMPT.DISTILL must be one of {DISTILL_KINDS}, got '{m.DISTILL}'")
        check_descriptions_file(m.DESCRIPTIONS)  # (its content is checked against the classes in before_train)

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        check_coupled_depth(cfg.TRAINER.COPROMPT.PROMPT_DEPTH, text_layers, vision_layers,
                            "TRAINER.COPROMPT.PROMPT_DEPTH")

    def build_model(self):
        super().build_model()
        self.descriptions = None  # frozen CLIP features of the LLM descriptions [n_desc, n_cls, E]; before_train
        self.description_rng = None  # draws the description index of each step; seeded per epoch (run_epoch)

    def before_train(self):
        super().before_train()
        cfg = self.cfg
        sentences, source = class_descriptions(self.dm.dataset, cfg.DATASET.NAME, cfg.DATASET.ROOT,
                                               self.method_cfg.DESCRIPTIONS)
        print(f"Encoding {len(sentences[0])} LLM descriptions of each of the {len(sentences)} training classes "
              f"({source}) with the frozen CLIP")
        self.use_descriptions(sentences)

    def use_descriptions(self, sentences):
        """Train with the descriptions ``sentences`` [n_cls][n_desc] of the training classes (encoded here, once)."""
        self.descriptions = description_features(self.backbone, sentences).to(self.device)
        self.description_rng = random.Random(self.description_seed(self.epoch))

    def description_seed(self, epoch):
        """The seed of the description draws of ``epoch`` (0-based): from SEED, so a run (and its resumption)
        draws the same indices; None (fresh entropy) when SEED < 0."""
        return None if self.cfg.SEED < 0 else f"coprompt-descriptions-{self.cfg.SEED}-{epoch}"

    def run_epoch(self):
        self.description_rng = random.Random(self.description_seed(self.epoch))
        super().run_epoch()

    def draw_description(self):
        """The index d of the description every class uses this step (the release: Python's global ``random``)."""
        return self.description_rng.randint(0, self.descriptions.shape[0] - 1)

    def parse_batch_train(self, batch):
        """((first view, second view) [B, 3, H, W] each, label [B]); with one view (K_TRANSFORMS 1) the frozen CLIP
        sees the same view as the prompted model."""
        views = batch["img"] if isinstance(batch["img"], (list, tuple)) else [batch["img"]]
        image = views[0].to(self.device)
        second = views[1].to(self.device) if len(views) > 1 else image
        return (image, second), batch["label"].to(self.device)

    def loss_terms(self, views, label, description):
        """{"loss_ce", "loss_text", "loss_image"} (weighted, tensors) and the prompted logits [B, n_cls], for
        ``views`` = (first view, second view), or one batch [B, 3, H, W] both use, and the description index
        ``description``."""
        image, second = (views, views) if torch.is_tensor(views) else views
        model = self.model
        image_features = model.image_features(image)  # [B, E], mixed, normalised
        text_features = model.text_features()  # [n_cls, E], mixed, normalised
        logits = model.logits(image_features, text_features)  # [B, n_cls]
        with torch.no_grad():
            teacher_image = model.image_encoder(second, None, None, model.straightforward)  # frozen, unprompted [B, E]
        m = self.method_cfg
        return {
            "loss_ce": F.cross_entropy(logits.float(), label),
            "loss_text": m.W * consistency_distance(text_features, self.descriptions[description], m.DISTILL),
            "loss_image": m.W * consistency_distance(image_features, teacher_image, m.DISTILL),
        }, logits

    def compute_loss(self, views, label):
        return self.sum_of_terms(*self.loss_terms(views, label, self.draw_description()))


@TRAINER_REGISTRY.register()
class CoPrompt(ConsistencyTrainer):
    DISPLAY_RANK = 120  # place in result tables and benchmarks (trainers/display.py)
    # Release: its whole CustomCLIP (both CLIPs) is saved; MaPLe's prompts under prompt_learner, the adapters at the
    # top level; the teacher model_distill is frozen.
    RELEASE_LAYOUT = ReleaseLayout(
        groups={**MaPLe.RELEASE_LAYOUT.groups, "adapter_image": "{key}", "adapter_text": "{key}"},
        trained=("prompt_learner", "adapter"),
    )

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        return CoPromptLearner(backbone, classnames, m.N_CTX, m.CTX_INIT, m.PROMPT_DEPTH, m.FP16_PROMPTS)


@TRAINER_REGISTRY.register()
class CoPrompt_BMIP(ConsistencyTrainer):
    """BMIP's prompts (``TRAINER.COPROMPT.N_CTX``, ``PROMPT_DEPTH``, gates ``BMIP_MODE``, heads ``SHARE.*``) trained
    the CoPrompt way: this project's construction (no released code), by the rule of the released PromptSRC_BMIP
    (``trainers/promptsrc_bmip.py``): BMIP's prompt learner, the other method's training and config node."""

    DISPLAY_RANK = 121  # place in result tables and benchmarks (trainers/display.py)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.COPROMPT.BMIP_MODE not in MODES:
            raise ValueError(f"TRAINER.COPROMPT.BMIP_MODE must be one of {MODES}, got '{cfg.TRAINER.COPROMPT.BMIP_MODE}'")

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        return CoPromptBMIPLearner(backbone, classnames, m.N_CTX, m.CTX_INIT, m.PROMPT_DEPTH, m.BMIP_MODE,
                                   cfg.SHARE.SHARE_PARAMETER_TEXT, cfg.SHARE.SHARE_PARAMETER_VISUAL)
