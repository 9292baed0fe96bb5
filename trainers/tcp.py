"""TCP (Yao et al., CVPR 2024): KgCoOp's training with class-aware textual tokens inserted deep in the text encoder.

The knowledge target w [n_cls, E] (frozen CLIP's normalised features of one hand-crafted prompt per class, as in
KgCoOp, with TCP's templates) also feeds ``meta_net`` (Linear E -> E/4, QuickGELU, Linear -> 4·D), giving 4
class-aware tokens [n_cls, 4, D] per class. The class prompt is a per-dataset template ("X X X X {}, a type of
pet.") whose first N_CTX words are the learnable context; before text block ``CLASS_TOKEN_LAYER`` (0-based; the
release: 8) the class-aware tokens replace positions 1..4. The loss is KgCoOp's with weight W (the release: 8.0):

    L = CE(s · v̂ t̂ᵀ, y) + W · (1 − mean_c cos(t̂_c, w_c))

(htyao89/Textual-based_Class-aware_prompt_tuning ``trainers/tcp.py`` L240-257, ``trainers/clip_text/model.py``
L262-282). docs/KGCOOP_TCP.md lists every difference from the release.
"""
from collections import OrderedDict

import torch.nn as nn
from yacs.config import CfgNode as CN

from clip_patch import DeepPrompts
from clip_patch.openai_clip import openai_clip
from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .kgcoop import KNOWLEDGE_TEMPLATES, KnowledgeGuidedTrainer, context_init_words, template_for
from .prompting import ClassPrompts, check_prompt_depth, fill_template, init_context, text_prompt_slots
from .zsclip import DEFAULT_TEMPLATE


@register_config
def add_tcp_config(cfg):
    cfg.TRAINER.TCP = CN()  # the release reads these keys from TRAINER.COOP (docs/KGCOOP_TCP.md)
    cfg.TRAINER.TCP.N_CTX = 4  # learnable context words: the first N_CTX (≤ 4) words of the class template
    cfg.TRAINER.TCP.CTX_INIT = False  # True: the context starts from "a photo of a" (4 words; N_CTX not read)
    cfg.TRAINER.TCP.W = 8.0  # weight of the knowledge term (hard-coded 8.0 in the release, whose COOP.W is unused)
    cfg.TRAINER.TCP.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.TCP.CLASS_TOKEN_LAYER = 8  # text block (0-based) before which the class-aware tokens enter
    cfg.TRAINER.TCP.FP16_TARGET = True  # hand-crafted target from fp16 weights in every PREC (release); False: fp32


CLASS_TOKENS = 4  # class-aware tokens per class: the release's meta_net output 4·D (tcp.py L172, L195)
TCP_PROMPT_DEFAULT = "X X X X {}."  # the class prompt for a data set the release does not know

# The knowledge target's templates (htyao89/Textual-based_Class-aware_prompt_tuning ``trainers/tcp.py`` L42-58):
# KgCoOp's but for FGVCAircraft and Food101.
TCP_KNOWLEDGE_TEMPLATES = {**KNOWLEDGE_TEMPLATES, "FGVCAircraft": "a photo of an aircraft {}.",
                           "Food101": "a photo of a {}, a type of food."}

# The learnable class prompts; words 1..N_CTX become the context (``trainers/tcp.py`` L60-76).
TCP_PROMPT_TEMPLATES = {
    "OxfordPets": "X X X X {}, a type of pet.",
    "OxfordFlowers": "X X X X {}, a type of flower.",
    "FGVCAircraft": "X X X X {}, a type of aircraft.",
    "DescribableTextures": "X X X X {} texture.",
    "EuroSAT": "X X X X {}.",
    "StanfordCars": "X X X X {}, a type of car",
    "Food101": "X X X X {}, a type of food.",
    "SUN397": "X X X X {}.",
    "Caltech101": "X X X X {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": DEFAULT_TEMPLATE,
    "ImageNetSketch": DEFAULT_TEMPLATE,
    "ImageNetV2": DEFAULT_TEMPLATE,
    "ImageNetA": DEFAULT_TEMPLATE,
    "ImageNetR": DEFAULT_TEMPLATE,
}


def check_class_token_layer(layer, text_layers):
    """The class-aware tokens enter before a text block (0-based) after the first one: 1..``text_layers - 1`` (None:
    the text encoder's depth is not known yet)."""
    check_prompt_depth(layer, None if text_layers is None else text_layers - 1, "TRAINER.TCP.CLASS_TOKEN_LAYER")


class TCPPromptLearner(nn.Module):
    """Context ``ctx`` [b, D] in the class template; ``meta_net``: knowledge target [n_cls, E] -> class-aware tokens
    [n_cls, 4, D], put into positions 1..4 before text block ``layer``."""

    def __init__(self, method_cfg, classnames, backbone, prompt_template, target):
        super().__init__()
        text_encoder = backbone.require_text_encoder("TCP")
        check_class_token_layer(method_cfg.CLASS_TOKEN_LAYER, text_encoder.num_layers)
        n_ctx, _, vectors = init_context(backbone, method_cfg.N_CTX, context_init_words(method_cfg), True)
        print(f'Class prompts: "{prompt_template}", words 1..{n_ctx} learnable')
        self.ctx = nn.Parameter(vectors)  # [b, D]
        embed_dim, width = backbone.embed_dim, text_encoder.width
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(embed_dim, embed_dim // 4)),
            ("gelu", openai_clip().model.QuickGELU()),
            ("linear2", nn.Linear(embed_dim // 4, CLASS_TOKENS * width)),
        ]))
        texts = fill_template(prompt_template, classnames)
        self.prompts = ClassPrompts(backbone, classnames, None, n_ctx, texts=texts)
        self.register_buffer("target", target, persistent=False)  # knowledge w [n_cls, E], from the class names
        self.layer, self.width = method_cfg.CLASS_TOKEN_LAYER, width

    def class_tokens(self):
        return self.meta_net(self.target).reshape(self.target.shape[0], CLASS_TOKENS, self.width)  # [n_cls, 4, D]

    def text_inputs(self):
        return self.prompts.assemble(self.ctx), self.prompts.tokens, self.class_token_prompts(self.class_tokens())

    def class_token_prompts(self, tokens):
        """Deep text prompts that put ``tokens`` [n, 4, D] (one set per class prompt) in at block ``self.layer``;
        restricted to a chunk of classes, their rows of ``tokens`` (clip_patch/chunked.py)."""
        def replace(layer, probe):
            return tokens if layer == self.layer else None
        return DeepPrompts(text_prompt_slots(CLASS_TOKENS), replace,
                           restrict=lambda classes: self.class_token_prompts(tokens[classes]))

    def vision_inputs(self):
        return None, None


@TRAINER_REGISTRY.register()
class TCP(KnowledgeGuidedTrainer):
    DISPLAY_RANK = 115  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "TCP"
    KNOWLEDGE_TEMPLATES = TCP_KNOWLEDGE_TEMPLATES

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.TCP
        check_range("TRAINER.TCP.N_CTX", m.N_CTX, 1, meaning="learnable context words")
        if m.N_CTX > CLASS_TOKENS:
            raise ValueError(f"TRAINER.TCP.N_CTX = {m.N_CTX}: TCP's class templates start with {CLASS_TOKENS} context "
                             f"words (more would cut off the class name); use 1..{CLASS_TOKENS}")
        check_range("TRAINER.TCP.W", m.W, 0.0, meaning="weight of the knowledge term")
        check_range("TRAINER.TCP.CLASS_TOKEN_LAYER", m.CLASS_TOKEN_LAYER, 1,
                    meaning="text block before which the class-aware tokens enter")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        check_class_token_layer(cfg.TRAINER.TCP.CLASS_TOKEN_LAYER, text_layers)

    def build_prompt_learner(self, cfg, classnames, backbone):
        prompt_template = template_for(TCP_PROMPT_TEMPLATES, self.dm.dataset, cfg.DATASET.NAME, TCP_PROMPT_DEFAULT)
        target = self.knowledge_target(backbone, classnames)
        return TCPPromptLearner(self.method_cfg, classnames, backbone, prompt_template, target)
