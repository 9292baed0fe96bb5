"""Torch pieces of micro-CLIP pre-training: image normalisation, a text encoder pass over a
shortened context, and the multi-positive contrastive loss."""

import numpy as np
import torch
import torch.nn.functional as F

# OpenAI CLIP's input statistics; the micro CLIP uses them too, so the standard CoOp-family
# transform (`normalize` with these values) feeds it correctly.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def images_to_tensor(images):
    """uint8 [N, H, W, 3] (NumPy) -> normalised float32 tensor [N, 3, H, W]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0  # [N, 3, H, W]
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def encode_text_truncated(model, tokens):
    """`model.encode_text(tokens)`, computed on the shortest context that holds every caption.

    The text transformer is causal and reads its output at the end-of-text token (the largest
    token id), so positions after the last end-of-text token cannot change the result; dropping
    them makes pre-training several times faster than running all 77 positions.

    Args:
        model: a `clip.model.CLIP`.
        tokens: int tensor [B, 77] from `clip.tokenize`.
    Returns:
        float tensor [B, embed_dim].
    """
    eot = tokens.argmax(dim=-1)  # [B]
    length = int(eot.max()) + 1
    x = model.token_embedding(tokens[:, :length]) + model.positional_embedding[:length]  # [B, L, D]
    mask = torch.full((length, length), float("-inf"), device=x.device).triu_(1)  # [L, L], causal
    x = x.permute(1, 0, 2)  # [L, B, D]
    for block in model.transformer.resblocks:
        normed = block.ln_1(x)
        x = x + block.attn(normed, normed, normed, need_weights=False, attn_mask=mask)[0]
        x = x + block.mlp(block.ln_2(x))
    x = model.ln_final(x.permute(1, 0, 2))  # [B, L, D]
    return x[torch.arange(x.shape[0]), eot] @ model.text_projection  # [B, E]


def multi_positive_clip_loss(image_features, text_features, logit_scale, agree):
    """Symmetric CLIP loss where every caption that is true of an image counts as a positive.

    Args:
        image_features: [B, E]; text_features: [B, E] (unnormalised).
        logit_scale: scalar tensor, log of the temperature's inverse (clamped at log 100 like CLIP).
        agree: bool tensor [B_images, B_captions], True where caption j is true of image i.
    Returns:
        scalar loss: mean of the image->text and text->image cross-entropies against the uniform
        distribution over each row's (column's) true partners.
    """
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale.clamp(max=np.log(100.0)).exp() * image_features @ text_features.t()  # [B, B]
    targets = agree.float()
    image_to_text = -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_to_image = -(targets / targets.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0).mean()
    return (image_to_text + text_to_image) / 2
