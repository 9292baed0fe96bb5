"""KgCoOp (Yao et al., CVPR 2023): CoOp's context, kept close to hand-crafted prompts by a knowledge term.

The class prompts are CoOp's (shared context, class name at the end). The frozen CLIP also encodes one hand-crafted
prompt per class, ``KNOWLEDGE_TEMPLATES[DATASET.NAME]`` ("a photo of a {}, a type of pet."), once at build time:
the *knowledge* target w [n_cls, E] (L2-normalised). With prompted features t̂ [n_cls, E] and v̂ [B, E] (normalised):

    L = CE(s · v̂ t̂ᵀ, y) + W · (1 − mean_c cos(t̂_c, w_c))

as the release computes it (htyao89/KgCoOp ``KgCoOp/trainers/kgcoop.py`` L232-241, L310): a cosine distance averaged
over classes (half the squared L2 distance of the paper's formula on unit vectors). Evaluation uses the logits only.
The target helpers here are TCP's too (``trainers/tcp.py``). docs/KGCOOP_TCP.md lists every difference from the
release.
"""
import copy

import torch.nn.functional as F
from yacs.config import CfgNode as CN

from dassl.config import check_range, extend_cfg, get_cfg_default, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer
from .coop import CoOpPromptLearner
from .prompting import fill_template, frozen_text_features
from .zsclip import DEFAULT_TEMPLATE


@register_config
def add_kgcoop_config(cfg):
    cfg.TRAINER.KGCOOP = CN()  # the release reads these keys from TRAINER.COOP (docs/KGCOOP_TCP.md)
    cfg.TRAINER.KGCOOP.N_CTX = 16  # context vectors when CTX_INIT is False
    cfg.TRAINER.KGCOOP.CSC = False  # class-specific context (only with CTX_INIT False, as in the release)
    cfg.TRAINER.KGCOOP.CTX_INIT = False  # True: the context starts from "a photo of a" (4 words; N_CTX not read)
    cfg.TRAINER.KGCOOP.W = 1.0  # weight of the knowledge term (the paper and the published scripts: 8.0)
    cfg.TRAINER.KGCOOP.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.KGCOOP.CLASS_TOKEN_POSITION = "end"  # only "end" (the release reads the key and always uses end)
    cfg.TRAINER.KGCOOP.FP16_TARGET = True  # hand-crafted target from fp16 weights in every PREC (release); False: fp32


# The words the release starts the context from whenever CTX_INIT is truthy, whatever its value (kgcoop.py L94-104).
RELEASE_CTX_INIT = "a photo of a"

# One hand-crafted prompt per dataset for the knowledge target (htyao89/KgCoOp ``KgCoOp/trainers/kgcoop.py`` L37-54).
KNOWLEDGE_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "a photo of a {}, a type of texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": DEFAULT_TEMPLATE,
    "Food101": "a photo of {}, a type of food.",
    "SUN397": DEFAULT_TEMPLATE,
    "Caltech101": DEFAULT_TEMPLATE,
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": DEFAULT_TEMPLATE,
    "ImageNetSketch": DEFAULT_TEMPLATE,
    "ImageNetV2": DEFAULT_TEMPLATE,
    "ImageNetA": DEFAULT_TEMPLATE,
    "ImageNetR": DEFAULT_TEMPLATE,
}


def template_for(templates, dataset, dataset_name, default=DEFAULT_TEMPLATE):
    """``templates[dataset_name]``; for a data set the release does not know (it raises KeyError there): the data
    set's own ``prompt_template`` attribute, else ``default``."""
    if dataset_name in templates:
        return templates[dataset_name]
    return getattr(dataset, "prompt_template", None) or default


def fp16_text_encoder(backbone):
    """A copy of ``backbone.text_encoder`` with the family's fp16 cast (``cast_frozen_to_fp16``: OpenAI's
    ``convert_weights``, open_clip's ``convert_weights_to_lp``), i.e. what the release's second, never ``.float()``ed
    CLIP computes with. The cast runs on a copy of the backbone that leaves out the image tower (copied for nothing)."""
    skipped = {id(backbone.image_encoder): None, id(getattr(backbone.model, "visual", None)): None}
    fp16 = copy.deepcopy(backbone, memo=skipped)
    fp16.cast_frozen_to_fp16()
    return fp16.text_encoder


def knowledge_features(backbone, texts, device, fp16):
    """Frozen CLIP's L2-normalised features [n, E] of the hand-crafted prompts ``texts``, fp32 storage, on the CPU.

    ``fp16``: encoded by the family's fp16 cast of the text encoder and normalised in fp16 (the release); else in fp32.
    A temporary copy of the text encoder runs on ``device``.
    """
    encoder = fp16_text_encoder(backbone) if fp16 else copy.deepcopy(backbone.text_encoder).float()
    encoder.to(device)
    return frozen_text_features(encoder, backbone.tokenize(texts).to(device)).cpu()  # [n, E]


def mean_cosine_distance(features, target):
    """1 − mean over rows of cos(features [N, E], target [N, E]), in fp32: KgCoOp's knowledge distance (prompted text
    features against the knowledge target), which MMRL and CoPrompt use too."""
    return 1.0 - F.cosine_similarity(features.float(), target.float(), dim=1, eps=1e-7).mean()


def refuse_coop_keys(cfg, trainer, node):
    """Raise ValueError for a key of ``TRAINER.COOP`` changed from its default: the releases read their settings
    there, but here it is CoOp's node, which ``trainer`` ignores (its keys are ``TRAINER.<node>``)."""
    defaults = extend_cfg(get_cfg_default()).TRAINER.COOP
    for key, value in cfg.TRAINER.COOP.items():
        if value == defaults[key]:
            continue
        fix = f"set TRAINER.{node}.{key} instead" if key in cfg.TRAINER[node] else f"{trainer} has no such setting"
        raise ValueError(f"TRAINER.COOP.{key} = {value!r} is CoOp's key, which {trainer} does not read (its release's "
                         f"TRAINER.COOP keys are TRAINER.{node}.* here): {fix}")


def context_init_words(method_cfg):
    return RELEASE_CTX_INIT if method_cfg.CTX_INIT else ""


class KgCoOpPromptLearner(CoOpPromptLearner):
    """CoOp's learner (context before the class name) built from KgCoOp's keys, plus the knowledge target."""

    def __init__(self, method_cfg, classnames, backbone, target):
        coop_cfg = CN({"N_CTX": method_cfg.N_CTX, "CSC": method_cfg.CSC, "CTX_INIT": context_init_words(method_cfg),
                       "CLASS_TOKEN_POSITION": "end"})
        super().__init__(coop_cfg, classnames, backbone)
        self.register_buffer("target", target, persistent=False)  # knowledge w [n_cls, E], from the class names


class KnowledgeGuidedTrainer(CLIPPromptTrainer):
    """KgCoOp's training around a prompt learner that holds the knowledge target as its ``target`` buffer: the loss
    above, with weight ``W`` of the method's config node. A subclass sets ``KNOWLEDGE_TEMPLATES``."""

    RELEASED_AS_LEARNER = True  # the releases save the prompt learner alone, its tensors under our names
    RELEASE_DEAD_KEYS = ()  # released learner keys that never reach the loss: dropped when loading their checkpoints
    KNOWLEDGE_TEMPLATES = {}

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        refuse_coop_keys(cfg, type(self).__name__, self.CFG_NODE)

    def knowledge_target(self, backbone, classnames):
        """The L2-normalised frozen-CLIP features [n_cls, E] of this data set's hand-crafted class prompts."""
        backbone.require_text_encoder(type(self).__name__)
        template = template_for(self.KNOWLEDGE_TEMPLATES, self.dm.dataset, self.cfg.DATASET.NAME)
        print(f'Knowledge target: "{template}" for {len(classnames)} classes')
        return knowledge_features(backbone, fill_template(template, classnames), self.device,
                                  self.method_cfg.FP16_TARGET)

    def loss_terms(self, image, label):
        """{"loss_ce", "loss_kg"} (weighted, tensors) and the prompted logits [B, n_cls]."""
        model = self.model
        text_features = model.text_features()  # [n_cls, E]
        logits = model.logits(model.image_features(image), text_features)  # [B, n_cls]
        distance = mean_cosine_distance(text_features, model.prompt_learner.target)
        return {"loss_ce": F.cross_entropy(logits.float(), label), "loss_kg": self.method_cfg.W * distance}, logits

    def compute_loss(self, image, label):
        return self.sum_of_terms(*self.loss_terms(image, label))

    def convert_checkpoint(self, state_dict):
        return {k: v for k, v in state_dict.items() if not k.startswith(self.RELEASE_DEAD_KEYS)}


@TRAINER_REGISTRY.register()
class KgCoOp(KnowledgeGuidedTrainer):
    DISPLAY_RANK = 110  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "KGCOOP"
    # Registered by the release's prompt learner and saved in its checkpoints, but never used (kgcoop.py L123-125,
    # L148-156).
    RELEASE_DEAD_KEYS = ("bias_vectors", "meta_net.")
    KNOWLEDGE_TEMPLATES = KNOWLEDGE_TEMPLATES

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.KGCOOP
        check_range("TRAINER.KGCOOP.N_CTX", m.N_CTX, 1, meaning="learnable context tokens")
        check_range("TRAINER.KGCOOP.W", m.W, 0.0, meaning="weight of the knowledge term")
        if m.CLASS_TOKEN_POSITION != "end":
            raise ValueError(f"TRAINER.KGCOOP.CLASS_TOKEN_POSITION = '{m.CLASS_TOKEN_POSITION}': KgCoOp places the "
                             f"class name at the end (the release ignores the key); set it to end")

    def build_prompt_learner(self, cfg, classnames, backbone):
        target = self.knowledge_target(backbone, classnames)
        return KgCoOpPromptLearner(self.method_cfg, classnames, backbone, target)
