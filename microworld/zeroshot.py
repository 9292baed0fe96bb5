"""Zero-shot classification with a CLIP model on micro-world images."""

import clip
import torch
import torch.nn.functional as F

from .contrastive import images_to_tensor

DEFAULT_TEMPLATE = "a photo of a {}."


@torch.no_grad()
def class_text_features(model, classnames, template=DEFAULT_TEMPLATE):
    """Normalised text features [C, E] of `template.format(name)` for every class name."""
    tokens = clip.tokenize([template.format(name.replace("_", " ")) for name in classnames])  # [C, 77]
    return F.normalize(model.encode_text(tokens.to(model.positional_embedding.device)).float(), dim=-1)


@torch.no_grad()
def image_features(model, images, batch_size=500):
    """Normalised image features [N, E] for uint8 images [N, H, W, 3]."""
    weight = model.visual.conv1.weight
    chunks = []
    for start in range(0, len(images), batch_size):
        x = images_to_tensor(images[start:start + batch_size]).to(weight.device, weight.dtype)  # [n, 3, H, W]
        chunks.append(F.normalize(model.encode_image(x).float(), dim=-1))
    return torch.cat(chunks)


def zero_shot_accuracy(model, images, labels, classnames, template=DEFAULT_TEMPLATE):
    """Top-1 accuracy (%) of nearest-prompt classification.

    Args:
        model: a `clip.model.CLIP` (any dtype; put it in eval mode).
        images: uint8 [N, H, W, 3] at the model's input resolution.
        labels: int sequence [N], indices into `classnames`.
        classnames: list of C class names.
    """
    if images.shape[1] != model.visual.input_resolution:
        raise ValueError(f"Images are {images.shape[1]} px but the model expects {model.visual.input_resolution} px; "
                         "render them at the model's resolution.")
    predictions = (image_features(model, images) @ class_text_features(model, classnames, template).t()).argmax(1)
    return 100.0 * (predictions.cpu() == torch.as_tensor(labels)).float().mean().item()
