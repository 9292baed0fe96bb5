"""`build_transform(cfg, is_train, choices)`: train/test image pipelines from INPUT.TRANSFORMS.

Train order: resize (only without a crop) -> random_translation -> random_crop ->
random_resized_crop -> center_crop -> random_flip -> randaugment -> colorjitter ->
randomgrayscale -> gaussian_blur -> ToTensor -> cutout -> normalize -> gaussian_noise ->
instance_norm. Test: Resize(max(SIZE)) -> CenterCrop(SIZE) -> ToTensor -> normalize ->
instance_norm. Every step prints a `+ ...` line.
"""

import random

import torch
import torchvision.transforms.functional as F
from torchvision.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    GaussianBlur,
    InterpolationMode,
    Normalize,
    RandomApply,
    RandomCrop,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)

from .randaugment import RandAugment

AVAI_CHOICES = [
    "random_flip",
    "random_resized_crop",
    "normalize",
    "instance_norm",
    "random_crop",
    "random_translation",
    "center_crop",
    "cutout",
    "imagenet_policy",
    "cifar10_policy",
    "svhn_policy",
    "randaugment",
    "randaugment_fixmatch",
    "randaugment2",
    "gaussian_noise",
    "colorjitter",
    "randomgrayscale",
    "gaussian_blur",
]

# Ecosystem choices this engine does not carry (no CoOp-family config uses them).
UNSUPPORTED_CHOICES = [
    "imagenet_policy",
    "cifar10_policy",
    "svhn_policy",
    "randaugment_fixmatch",
    "randaugment2",
]

SUPPORTED_CHOICES = [c for c in AVAI_CHOICES if c not in UNSUPPORTED_CHOICES]

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


class Random2DTranslation:
    """With probability `p`, enlarge the image by 1/8 and take a random (height, width) crop;
    otherwise resize it to (height, width).
    """

    def __init__(self, height, width, p=0.5, interpolation=InterpolationMode.BILINEAR):
        self.height = height
        self.width = width
        self.p = p
        self.interpolation = interpolation

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return F.resize(img, [self.height, self.width], interpolation=self.interpolation)
        new_width = int(round(self.width * 1.125))
        new_height = int(round(self.height * 1.125))
        resized = F.resize(img, [new_height, new_width], interpolation=self.interpolation)
        x1 = int(round(random.uniform(0, new_width - self.width)))
        y1 = int(round(random.uniform(0, new_height - self.height)))
        return F.crop(resized, y1, x1, self.height, self.width)

    def __repr__(self):
        return f"{type(self).__name__}(height={self.height}, width={self.width}, p={self.p})"


class InstanceNormalization:
    """Normalize each channel of a [C, H, W] tensor to zero mean and unit std over its pixels."""

    def __init__(self, eps=1e-8):
        self.eps = eps

    def __call__(self, img):
        channels = img.shape[0]
        flat = img.reshape(channels, -1)  # [C, H*W]
        mean = flat.mean(1).view(channels, 1, 1)  # [C, 1, 1]
        std = flat.std(1).view(channels, 1, 1)  # [C, 1, 1]
        return (img - mean) / (std + self.eps)

    def __repr__(self):
        return f"{type(self).__name__}(eps={self.eps})"


class Cutout:
    """Zero `n_holes` square patches of side `length` (clipped at the border) in a [C, H, W]
    tensor, each centred at a uniformly random pixel.
    """

    def __init__(self, n_holes=1, length=16):
        self.n_holes = n_holes
        self.length = length

    def __call__(self, img):
        height, width = img.shape[1], img.shape[2]
        mask = torch.ones(height, width, dtype=img.dtype)  # [H, W]
        for _ in range(self.n_holes):
            y = random.randrange(height)
            x = random.randrange(width)
            y1, y2 = max(0, y - self.length // 2), min(height, y + self.length // 2)
            x1, x2 = max(0, x - self.length // 2), min(width, x + self.length // 2)
            mask[y1:y2, x1:x2] = 0
        return img * mask  # [C, H, W]

    def __repr__(self):
        return f"{type(self).__name__}(n_holes={self.n_holes}, length={self.length})"


class GaussianNoise:
    """With probability `p`, add N(mean, std^2) noise to a tensor image."""

    def __init__(self, mean=0.0, std=0.15, p=0.5):
        self.mean = mean
        self.std = std
        self.p = p

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return img
        return img + torch.randn(img.size()) * self.std + self.mean

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean}, std={self.std}, p={self.p})"


def _check_choices(choices):
    for choice in choices:
        if choice in UNSUPPORTED_CHOICES:
            raise NotImplementedError(
                f'Transform "{choice}" is not implemented in this engine; '
                f"supported INPUT.TRANSFORMS are {SUPPORTED_CHOICES}"
            )
        if choice not in AVAI_CHOICES:
            raise ValueError(
                f'Unknown transform "{choice}" in INPUT.TRANSFORMS; '
                f"supported ones are {SUPPORTED_CHOICES}"
            )


def _interpolation_mode(cfg):
    name = cfg.INPUT.INTERPOLATION
    if name not in INTERPOLATION_MODES:
        raise ValueError(
            f'Unknown INPUT.INTERPOLATION "{name}"; use one of {list(INTERPOLATION_MODES)}'
        )
    return INTERPOLATION_MODES[name]


def build_transform(cfg, is_train=True, choices=None):
    """Build the train or test transform from `cfg.INPUT`.

    Args:
        cfg (CfgNode): config.
        is_train (bool): build the training (augmenting) pipeline, else the test pipeline.
        choices (list, optional): transform names; defaults to cfg.INPUT.TRANSFORMS.

    Returns:
        torchvision Compose, or None when INPUT.NO_TRANSFORM is set.
    """
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None

    if choices is None:
        choices = cfg.INPUT.TRANSFORMS
    _check_choices(choices)

    target_size = f"{cfg.INPUT.SIZE[0]}x{cfg.INPUT.SIZE[1]}"
    normalize = Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)

    if is_train:
        return _build_transform_train(cfg, choices, target_size, normalize)
    return _build_transform_test(cfg, choices, target_size, normalize)


def _build_transform_train(cfg, choices, target_size, normalize):
    print("Building transform_train")
    tfm_train = []
    interp_mode = _interpolation_mode(cfg)
    input_size = tuple(cfg.INPUT.SIZE)

    # Make sure the image size matches the target size when no crop does it
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        print(f"+ resize to {target_size}")
        tfm_train += [Resize(input_size, interpolation=interp_mode)]

    if "random_translation" in choices:
        print("+ random translation")
        tfm_train += [Random2DTranslation(input_size[0], input_size[1], interpolation=interp_mode)]

    if "random_crop" in choices:
        crop_padding = cfg.INPUT.CROP_PADDING
        print(f"+ random crop (padding = {crop_padding})")
        tfm_train += [RandomCrop(input_size, padding=crop_padding)]

    if "random_resized_crop" in choices:
        scale = tuple(cfg.INPUT.RRCROP_SCALE)
        print(f"+ random resized crop (size={input_size}, scale={scale})")
        tfm_train += [RandomResizedCrop(input_size, scale=scale, interpolation=interp_mode)]

    if "center_crop" in choices:
        print(f"+ {target_size} center crop")
        tfm_train += [CenterCrop(input_size)]

    if "random_flip" in choices:
        print("+ random flip")
        tfm_train += [RandomHorizontalFlip()]

    if "randaugment" in choices:
        n_ = cfg.INPUT.RANDAUGMENT_N
        m_ = cfg.INPUT.RANDAUGMENT_M
        print(f"+ randaugment (n={n_}, m={m_})")
        tfm_train += [RandAugment(n_, m_)]

    if "colorjitter" in choices:
        b_ = cfg.INPUT.COLORJITTER_B
        c_ = cfg.INPUT.COLORJITTER_C
        s_ = cfg.INPUT.COLORJITTER_S
        h_ = cfg.INPUT.COLORJITTER_H
        print(f"+ color jitter (brightness={b_}, contrast={c_}, saturation={s_}, hue={h_})")
        tfm_train += [ColorJitter(brightness=b_, contrast=c_, saturation=s_, hue=h_)]

    if "randomgrayscale" in choices:
        print("+ random gray scale")
        tfm_train += [RandomGrayscale(p=cfg.INPUT.RGS_P)]

    if "gaussian_blur" in choices:
        gb_k, gb_p = cfg.INPUT.GB_K, cfg.INPUT.GB_P
        print(f"+ gaussian blur (kernel={gb_k})")
        tfm_train += [RandomApply([GaussianBlur(gb_k)], p=gb_p)]

    print("+ to torch tensor of range [0, 1]")
    tfm_train += [ToTensor()]

    if "cutout" in choices:
        cutout_n = cfg.INPUT.CUTOUT_N
        cutout_len = cfg.INPUT.CUTOUT_LEN
        print(f"+ cutout (n_holes={cutout_n}, length={cutout_len})")
        tfm_train += [Cutout(cutout_n, cutout_len)]

    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        tfm_train += [normalize]

    if "gaussian_noise" in choices:
        print(f"+ gaussian noise (mean={cfg.INPUT.GN_MEAN}, std={cfg.INPUT.GN_STD})")
        tfm_train += [GaussianNoise(cfg.INPUT.GN_MEAN, cfg.INPUT.GN_STD)]

    if "instance_norm" in choices:
        print("+ instance normalization")
        tfm_train += [InstanceNormalization()]

    return Compose(tfm_train)


def _build_transform_test(cfg, choices, target_size, normalize):
    print("Building transform_test")
    tfm_test = []
    interp_mode = _interpolation_mode(cfg)
    input_size = tuple(cfg.INPUT.SIZE)

    print(f"+ resize the smaller edge to {max(input_size)}")
    tfm_test += [Resize(max(input_size), interpolation=interp_mode)]

    print(f"+ {target_size} center crop")
    tfm_test += [CenterCrop(input_size)]

    print("+ to torch tensor of range [0, 1]")
    tfm_test += [ToTensor()]

    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        tfm_test += [normalize]

    if "instance_norm" in choices:
        print("+ instance normalization")
        tfm_test += [InstanceNormalization()]

    return Compose(tfm_test)
