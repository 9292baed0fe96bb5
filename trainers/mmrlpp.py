"""MMRL++ (Guo & Gu, IJCV 2026): MMRL with fewer trainable values and tokens that carry over between layers.

Everything is MMRL's (``trainers/mmrl.py``: the tokens, both heads, the loss, the test head, the frozen-CLIP targets)
but three things (yunncheng/MMRL ``trainers/mmrlpp.py`` L138-211, ``clip/model_mmrlpp.py`` L213-247, L295-331):

* the per-layer projections share one weight per modality, each layer adding a low-rank residual and its own bias:
  tokens_i = R (W + A_i B_i)ᵀ + b_i, A_i [D, RES_LORA_DIM] (Kaiming-uniform), B_i [RES_LORA_DIM, REP_DIM] (zeros);
* before each representation layer after the first, the tokens entering are BETA · new + (1 − BETA) · the previous
  block's outputs at their positions (MMRL replaces them);
* the rep head projects with the frozen CLIP's ``proj`` plus a low-rank residual A [D_v, PROJ_LORA_DIM] (Kaiming)
  @ B [PROJ_LORA_DIM, E] (zeros), so it starts at CLIP's projection.

The release's PREC fp16 fails here (fp32 ``A @ B`` against fp16 activations); the residual projection is cast to the
activations' dtype, so every PREC runs (docs/MMRL.md).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import setting_opts
from .mmrl import MMRL, RepresentationLearner, add_representation_keys, check_fraction
from .release_formats import ReleaseLayout


@register_config
def add_mmrlpp_config(cfg):
    cfg.TRAINER.MMRLpp = CN()
    add_representation_keys(cfg.TRAINER.MMRLpp)
    cfg.TRAINER.MMRLpp.BETA = 0.9  # weight of the new tokens against the previous layer's outputs (per data set)
    cfg.TRAINER.MMRLpp.PROJ_LORA_DIM = 64  # rank of the rep head's residual on CLIP's proj
    cfg.TRAINER.MMRLpp.RES_LORA_DIM = 4  # rank of each layer's residual on the shared aligner weight


# Per-dataset settings of MMRL++ by TASK (yunncheng/MMRL ``trainers/config.py`` L45-140): BETA and REG_WEIGHT for
# base-to-novel and few-shot, BETA alone for cross-dataset (on the source and on each target data set).
_B2N_FS = {
    "ImageNet": {"BETA": 0.9, "REG_WEIGHT": 0.2},
    "FGVCAircraft": {"BETA": 0.9, "REG_WEIGHT": 2.0},
    "UCF101": {"BETA": 0.9, "REG_WEIGHT": 3.0},
    "DescribableTextures": {"BETA": 0.9, "REG_WEIGHT": 7.0},
    "OxfordPets": {"BETA": 0.7, "REG_WEIGHT": 0.01},
    "StanfordCars": {"BETA": 0.7, "REG_WEIGHT": 6.0},
    "Caltech101": {"BETA": 0.6, "REG_WEIGHT": 3.0},
    "SUN397": {"BETA": 0.5, "REG_WEIGHT": 3.0},
    "OxfordFlowers": {"BETA": 0.4, "REG_WEIGHT": 7.0},
    "EuroSAT": {"BETA": 0.2, "REG_WEIGHT": 0.01},
    "Food101": {"BETA": 0.1, "REG_WEIGHT": 1.0},
}
MMRLPP_DATASET_SETTINGS = {
    "B2N": _B2N_FS,
    "FS": _B2N_FS,
    "CD": {
        "ImageNet": {"BETA": 0.9, "REG_WEIGHT": 0.1},
        "ImageNetV2": {"BETA": 0.9},
        "ImageNetR": {"BETA": 0.9},
        "ImageNetA": {"BETA": 0.8},
        "ImageNetSketch": {"BETA": 0.7},
        "FGVCAircraft": {"BETA": 0.9},
        "UCF101": {"BETA": 0.9},
        "SUN397": {"BETA": 0.7},
        "OxfordPets": {"BETA": 0.6},
        "Caltech101": {"BETA": 0.6},
        "DescribableTextures": {"BETA": 0.5},
        "OxfordFlowers": {"BETA": 0.4},
        "StanfordCars": {"BETA": 0.3},
        "EuroSAT": {"BETA": 0.3},
        "Food101": {"BETA": 0.3},
    },
}


def kaiming_matrix(rows, cols):
    """[rows, cols] drawn as the release draws its low-rank factors A (Kaiming-uniform, a = sqrt(5))."""
    matrix = torch.zeros(rows, cols)
    nn.init.kaiming_uniform_(matrix, a=math.sqrt(5))
    return nn.Parameter(matrix)


class ResidualAligner(nn.Module):
    """One layer's aligner: the shared weight [out, in] plus A [out, r] @ B [r, in], and the layer's own bias."""

    def __init__(self, weight, bias, rank):
        super().__init__()
        self.A = kaiming_matrix(weight.shape[0], rank)
        self.B = nn.Parameter(torch.zeros(rank, weight.shape[1]))
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x, weight):
        return F.linear(x, weight + self.A @ self.B, self.bias)  # [N, out]


class SharedResidualAligner(nn.Module):
    """Per modality: one weight shared by every representation layer (a fresh Linear's), and per layer a residual."""

    def __init__(self, linear, layers, rank):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone())  # [out, in]
        self.srra = nn.ModuleList([ResidualAligner(self.weight, linear.bias, rank) for _ in range(layers)])

    def forward(self, x, index):
        return self.srra[index](x, self.weight)  # [N, in] -> [N, out]


class ResidualRepresentationLearner(RepresentationLearner):
    """MMRL++'s trainable tensors under the release's names (``representation_learner.srra_*`` and the visual
    encoder's ``A``, ``B``)."""

    METHOD = "MMRLpp"

    def __init__(self, backbone, classnames, template, rep_layers, n_tokens, rep_dim, beta, proj_rank, res_rank):
        self.beta, self.proj_rank, self.res_rank = float(beta), proj_rank, res_rank
        super().__init__(backbone, classnames, template, rep_layers, n_tokens, rep_dim)

    def build_aligners(self, rep_dim, vision_width, text_width):
        layers = len(self.rep_layers)
        self.srra_r2vproj = SharedResidualAligner(nn.Linear(rep_dim, vision_width), layers, self.res_rank)
        self.srra_r2tproj = SharedResidualAligner(nn.Linear(rep_dim, text_width), layers, self.res_rank)

    def build_rep_projection(self, image_encoder):
        width, embed = image_encoder.proj.shape  # [D_v, E]
        self.A = kaiming_matrix(width, self.proj_rank)
        self.B = nn.Parameter(torch.zeros(self.proj_rank, embed))

    def layer_tokens(self, side, index):
        aligner = self.srra_r2tproj if side == "text" else self.srra_r2vproj
        return aligner(self.compound_rep_tokens, index)  # [N, D]

    ENTERING_READS_OUTPUTS = True

    def entering(self, new, probe):
        """BETA · new tokens [N, D] + (1 − BETA) · the previous block's outputs at their positions [B, N, D]."""
        return self.beta * new + (1 - self.beta) * probe.incoming()

    def rep_projection(self, proj):
        return proj + (self.A @ self.B).to(proj.dtype)  # [D_v, E]


@TRAINER_REGISTRY.register()
class MMRLpp(MMRL):
    DISPLAY_RANK = 126  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "MMRLpp"
    LEARNER = ResidualRepresentationLearner
    # The release also lists ``image_encoder.proj_rep`` as trainable, which names nothing in MMRL++ (mmrlpp.py L314).
    RELEASE_LAYOUT = ReleaseLayout(
        groups={"compound_rep_tokens": "representation_learner.{key}",
                "srra_r2vproj": "representation_learner.{key}",
                "srra_r2tproj": "representation_learner.{key}",
                "A": "image_encoder.A", "B": "image_encoder.B"},
        trained=("representation_learner", "image_encoder.A", "image_encoder.B"))

    @staticmethod
    def dataset_overrides(cfg):
        task = cfg.TRAINER.MMRLpp.TASK
        settings = MMRLPP_DATASET_SETTINGS.get(task, {}).get(cfg.DATASET.NAME, {})
        return setting_opts("MMRLpp", settings)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.MMRLpp
        check_fraction("TRAINER.MMRLpp.BETA", m.BETA,
                       meaning="weight of the new tokens against the previous layer's outputs")
        check_range("TRAINER.MMRLpp.PROJ_LORA_DIM", m.PROJ_LORA_DIM, 1, meaning="rank of the rep head's residual")
        check_range("TRAINER.MMRLpp.RES_LORA_DIM", m.RES_LORA_DIM, 1, meaning="rank of each aligner's residual")

    def build_learner(self, backbone, classnames, template):
        m = self.method_cfg
        return self.LEARNER(backbone, classnames, template, m.REP_LAYERS, m.N_REP_TOKENS, m.REP_DIM, m.BETA,
                            m.PROJ_LORA_DIM, m.RES_LORA_DIM)
