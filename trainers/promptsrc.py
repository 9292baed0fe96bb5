"""PromptSRC (Khattak et al., ICCV 2023): self-regulating prompts, and what PromptSRC_BMIP shares with it.

The prompts are IVLP's (independent shallow + deep prompts in both encoders, ``trainers/ivlp.py``). Training adds
three terms that keep the prompted model close to the frozen CLIP, and deploys a Gaussian-weighted average of the
prompts over the epochs (``trainers/gpa.py``). With prompted features v̂ [B, E], t̂ [n_cls, E] (L2-normalised),
logits s = 100 · v̂ t̂ᵀ, frozen CLIP's unprompted image features z̄ [B, E] and template-averaged class text features
t̄ [n_cls, E] (both normalised), and zero-shot logits s_zs = 100 · z̄ t̄ᵀ:

    L = CE(s, y) + TEXT_LOSS_WEIGHT · mean|t̂ − t̄| + IMAGE_LOSS_WEIGHT · mean|v̂ − z̄|
        + Σ_{i,c} p_zs (log p_zs − log q) / (B · n_cls),     p_zs = softmax(s_zs), q = softmax(s)

exactly as the release computes it (the KL term is KL(zero-shot ‖ prompted), summed and divided by B · n_cls, not
batch-mean). t̄_c is the mean over ImageNet prompt templates of frozen CLIP's *unnormalised* text features,
normalised at use; each trainer's ``TEACHER_TEMPLATES`` names its release's list (``trainers/imagenet_templates.py``:
PromptSRC's 60, the BMIP release's 80). docs/PROMPTSRC.md lists every difference from the releases.
"""
import copy

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_patch.chunked import encode_text
from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer
from .gpa import GaussianPromptAggregation, gpa_weights
from .imagenet_templates import PROMPTSRC_TEMPLATES
from .ivlp import VisionLanguagePrompts, check_side_depths
from .prompting import check_prompt_depth
from .release_formats import IVLP_GROUPS, ReleaseLayout

@register_config
def add_promptsrc_config(cfg):
    cfg.TRAINER.PROMPTSRC = CN()
    cfg.TRAINER.PROMPTSRC.N_CTX_VISION = 4  # PromptSRC: vision prompt tokens per layer; PromptSRC_BMIP: ignored
    cfg.TRAINER.PROMPTSRC.N_CTX_TEXT = 4  # text prompt tokens per layer (PromptSRC_BMIP: of both modalities)
    cfg.TRAINER.PROMPTSRC.CTX_INIT = "a photo of a"  # prompt words; the first N_CTX_TEXT (≤ 4) start the text context
    cfg.TRAINER.PROMPTSRC.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = 9  # PromptSRC: vision layers with prompts (0 = none); PromptSRC_BMIP: ignored
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 9  # PromptSRC: text layers with prompts (≥ 1); PromptSRC_BMIP: ignored
    cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = 25  # weight of the L1 term towards frozen CLIP's template text features
    cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT = 10  # weight of the L1 term towards frozen CLIP's image features
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15  # Gaussian prompt aggregation: mean, in epochs (1-based)
    cfg.TRAINER.PROMPTSRC.GPA_STD = 1  # Gaussian prompt aggregation: standard deviation, in epochs (> 0)
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH = 9  # PromptSRC_BMIP: BMIP's depth J for both modalities; PromptSRC: inert
    cfg.TRAINER.PROMPTSRC.BMIP_MODE = "reference"  # PromptSRC_BMIP: BMIP gates, reference | per_sample; PromptSRC: inert
    cfg.TRAINER.PROMPTSRC.N_CTX = 4  # inert, kept for compatibility (read by neither released trainer)
    cfg.TRAINER.PROMPTSRC.CONNECT_METHOD = "None"  # inert, kept for compatibility (no effect in the release either)


def template_text_features(backbone, classnames, templates):
    """Frozen CLIP's class text features averaged over ``templates``, unnormalised: [n_cls, E] fp32.

    Each template's "{}" is replaced by the class name ("_" -> " "); the mean is over the templates' *unnormalised*
    projected EOT features, as in the release. The frozen text encoder runs in fp32 (a temporary fp32 copy when its
    weights are fp16), outside any autocast.
    """
    names = [name.replace("_", " ") for name in classnames]
    text_encoder = backbone.text_encoder
    device = text_encoder.device
    encoder = text_encoder if text_encoder.dtype == torch.float32 else copy.deepcopy(text_encoder).float()
    per_template = []
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        for template in templates:
            tokens = backbone.tokenize([template.replace("{}", name) for name in names]).to(device)  # [n_cls, L]
            per_template.append(encode_text(encoder, encoder.embed(tokens), tokens).float())  # [n_cls, E], chunked
    return torch.stack(per_template, dim=1).mean(dim=1)  # [n_cls, E]


def self_regulating_losses(logits, label, image_features, text_features, zs_image_features, teacher_text_features,
                           logit_scale, text_weight, image_weight):
    """The four weighted terms of PromptSRC's loss, in fp32: {"loss_ce", "loss_text", "loss_image", "loss_kl"}.

    logits [B, n_cls] (prompted), label [B]; image_features [B, E] and text_features [n_cls, E] (prompted,
    normalised); zs_image_features [B, E] (frozen CLIP, normalised); teacher_text_features [n_cls, E] (template mean,
    unnormalised); logit_scale: the scale (tensor) applied to cosine similarities (100 for CLIP).
    """
    with torch.autocast(logits.device.type, enabled=False):
        logits = logits.float()
        teacher = teacher_text_features.float()
        teacher = teacher / teacher.norm(dim=-1, keepdim=True)  # t̄ [n_cls, E]
        zs_image = zs_image_features.float()  # z̄ [B, E]
        zs_logits = logit_scale.float() * zs_image @ teacher.t()  # [B, n_cls]
        kl = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1), reduction="sum",
                      log_target=True)  # Σ p_zs (log p_zs − log q)
        return {
            "loss_ce": F.cross_entropy(logits, label),
            "loss_text": text_weight * F.l1_loss(text_features.float(), teacher, reduction="mean"),
            "loss_image": image_weight * F.l1_loss(image_features.float(), zs_image, reduction="mean"),
            "loss_kl": kl / logits.numel(),
        }


class SelfRegulatingTrainer(CLIPPromptTrainer):
    """PromptSRC's training around any prompt learner: the self-regulating loss, teacher features computed once, and
    Gaussian prompt aggregation of the learner (running fp32 sum, saved with each checkpoint, swapped in at the end).
    A subclass sets ``TEACHER_TEMPLATES``, the template list its teacher averages over.
    """

    CFG_NODE = "PROMPTSRC"
    CHECKPOINT_NAME = "VLPromptLearner"  # both released trainers save under this folder
    TEACHER_TEMPLATES: tuple  # set by each trainer (trainers/imagenet_templates.py)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.PROMPTSRC
        gpa_weights(m.GPA_MEAN, m.GPA_STD, cfg.OPTIM.MAX_EPOCH)  # raises on GPA_STD <= 0 before anything is built
        check_range("TRAINER.PROMPTSRC.N_CTX_TEXT", m.N_CTX_TEXT, 1, meaning="text prompt tokens per layer")
        for key in ("TEXT_LOSS_WEIGHT", "IMAGE_LOSS_WEIGHT"):
            check_range(f"TRAINER.PROMPTSRC.{key}", m[key], 0.0, meaning="a loss weight")

    def build_model(self):
        super().build_model()
        m = self.method_cfg
        self.gpa = GaussianPromptAggregation(gpa_weights(m.GPA_MEAN, m.GPA_STD, self.cfg.OPTIM.MAX_EPOCH))
        self.teacher = None  # (class names, template-mean text features [n_cls, E]); computed on first use

    @property
    def learner(self):
        return self.model.prompt_learner

    def teacher_text_features(self):
        """Frozen CLIP's template-averaged features of the training classes, computed once per class set."""
        classnames = tuple(self.dm.dataset.classnames)
        if self.teacher is None or self.teacher[0] != classnames:
            templates = self.TEACHER_TEMPLATES
            print(f"Encoding the {len(classnames)} training classes with {len(templates)} templates "
                  f"(frozen CLIP text targets)")
            self.teacher = (classnames, template_text_features(self.backbone, classnames, templates))
        return self.teacher[1]

    def loss_terms(self, image, label):
        """The four weighted loss terms (tensors, see :func:`self_regulating_losses`) and the prompted logits."""
        model = self.model
        image_features = model.image_features(image)  # [B, E]
        text_features = model.text_features()  # [n_cls, E]
        logit_scale = model.logit_scale.exp()
        logits = logit_scale * image_features @ text_features.t()  # [B, n_cls]
        with torch.no_grad():
            zs_image = model.image_encoder(image, None, None, model.straightforward)  # frozen, unprompted [B, E]
            zs_image = zs_image / zs_image.norm(dim=-1, keepdim=True)
        m = self.method_cfg
        terms = self_regulating_losses(logits, label, image_features, text_features, zs_image,
                                       self.teacher_text_features(), logit_scale.detach(),
                                       m.TEXT_LOSS_WEIGHT, m.IMAGE_LOSS_WEIGHT)
        return terms, logits

    def compute_loss(self, image, label):
        return self.sum_of_terms(*self.loss_terms(image, label))

    # -- Gaussian prompt aggregation -------------------------------------------------------------------------------
    def before_train(self):
        super().before_train()
        if self.cfg.TEST.FINAL_MODEL == "best_val" or self.cfg.TRAIN.get("EARLY_STOPPING", False):
            print("Warning: with Gaussian prompt aggregation, model-best.pth.tar holds the raw prompts of the best "
                  "validated epoch, not the aggregate (which model.pth.tar-N holds); a run stopped early deploys "
                  "the aggregate of its epochs, renormalised by their weights.")

    def run_epoch(self):
        super().run_epoch()
        self.gpa.add(self.epoch + 1, self.learner)  # after the epoch's last optimizer step

    def finalize_weights(self):
        stopped_early = self.epoch + 1 < self.max_epoch
        print(f"Using the Gaussian prompt aggregate of epochs 1..{self.epoch + 1} "
              f"(weights sum {self.gpa.accumulated_weight:.4f}{', renormalised to 1' if stopped_early else ''})")
        self.gpa.load_into(self.learner, renormalise=stopped_early)

    def run_state(self):
        return {**super().run_state(), "gpa": self.gpa.state_dict()}

    def restore_run_state(self, state):
        super().restore_run_state(state)
        gpa = state.get("gpa")
        trained = list(range(1, self.completed_epochs + 1))
        if gpa is None or [int(e) for e in gpa["epochs"]] != trained:
            raise RuntimeError(
                f"The checkpoint in {self.cfg.RESUME or self.output_dir} holds no Gaussian prompt aggregation state "
                f"for its {self.completed_epochs} trained epoch(s) (written by another trainer or version), so the "
                f"aggregate cannot be continued: train into a new --output-dir.")
        self.gpa.load_state_dict(gpa, self.device)


@TRAINER_REGISTRY.register()
class PromptSRC(SelfRegulatingTrainer):
    """PromptSRC: IVLP prompts (``N_CTX_TEXT``/``N_CTX_VISION`` tokens, ``PROMPT_DEPTH_TEXT``/``_VISION`` layers)."""

    DISPLAY_RANK = 60  # place in result tables and benchmarks (trainers/display.py)
    TEACHER_TEMPLATES = PROMPTSRC_TEMPLATES  # the PromptSRC release's 60
    # Release: muzairkhattak/PromptSRC trainers/promptsrc.py: IVLP's prompts; its second frozen image encoder lives in
    # prompt_learner.ZS_image_encoder and is not trained.
    RELEASE_LAYOUT = ReleaseLayout(groups=IVLP_GROUPS, trained=("prompt_learner", "VPT"), dead=("ZS_image_encoder",))

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.PROMPTSRC
        check_range("TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", m.PROMPT_DEPTH_TEXT, 1,
                    meaning="text layers with prompts; 1 = shallow only")
        check_range("TRAINER.PROMPTSRC.N_CTX_VISION", m.N_CTX_VISION, 0,
                    meaning="vision prompt tokens per layer; 0 switches vision prompts off")
        check_range("TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", m.PROMPT_DEPTH_VISION, 0,
                    meaning="vision layers with prompts; 0 switches vision prompts off")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        m = cfg.TRAINER.PROMPTSRC
        check_prompt_depth(m.PROMPT_DEPTH_TEXT, text_layers, "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT")  # (text always on)
        check_side_depths("TRAINER.PROMPTSRC", m.PROMPT_DEPTH_TEXT, m.N_CTX_VISION, m.PROMPT_DEPTH_VISION, text_layers,
                          vision_layers)

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        text_layers = backbone.require_text_encoder("PromptSRC").num_layers
        check_prompt_depth(m.PROMPT_DEPTH_TEXT, text_layers, "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT")
        return VisionLanguagePrompts(backbone, classnames, m.CTX_INIT, m.N_CTX_TEXT, m.PROMPT_DEPTH_TEXT,
                                     m.N_CTX_VISION, m.PROMPT_DEPTH_VISION, node="TRAINER.PROMPTSRC")

