"""Zero-shot CLIP with CoOp's hand-crafted per-dataset prompt templates (no training)."""
import torch.nn as nn

from dassl.engine import TRAINER_REGISTRY

from .base import FrozenCLIPTrainer, PromptedCLIP
from .prompting import fill_template

# CoOp's templates; a dataset class may declare its own ``prompt_template`` attribute instead.
CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
DEFAULT_TEMPLATE = "a photo of a {}."


def dataset_template(dataset, dataset_name):
    return getattr(dataset, "prompt_template", None) or CUSTOM_TEMPLATES.get(dataset_name, DEFAULT_TEMPLATE)


class HandcraftedPrompts(nn.Module):
    """Fixed class prompts ``template.format(classname)``; nothing to learn."""

    def __init__(self, backbone, classnames, template):
        super().__init__()
        text_encoder = backbone.text_encoder
        texts = fill_template(template, classnames)
        tokens = backbone.tokenize(texts).to(text_encoder.device)  # [n_cls, L]
        self.register_buffer("tokens", tokens, persistent=False)
        # [n_cls, L, D]; None for a text tower that takes token ids only (docs/BACKBONES.md)
        embeddings = text_encoder.embed(tokens).detach() if backbone.has_prompted_text else None
        self.register_buffer("embeddings", embeddings, persistent=False)
        self.texts = texts

    def text_inputs(self):
        return self.embeddings, self.tokens, None

    def vision_inputs(self):
        return None, None


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(FrozenCLIPTrainer):
    """Evaluation only: class text features are encoded once from the templates. Use with --eval-only."""

    DISPLAY_RANK = 10  # place in result tables and benchmarks (trainers/display.py)
    CONFIG_FOLDER = "CoOp"  # it reads CoOp's configs, as in the ecosystem

    def build_frozen_model(self, backbone):
        template = dataset_template(self.dm.dataset, self.cfg.DATASET.NAME)
        prompts = HandcraftedPrompts(backbone, self.dm.dataset.classnames, template)
        print(f"Prompts: {prompts.texts[:3]}{' ...' if len(prompts.texts) > 3 else ''}")
        return PromptedCLIP(backbone, prompts, **self.model_options())
