"""Tests for dassl.data.transforms: pipelines, printed lines, custom transforms, errors."""

import random

import pytest
import torch
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data.transforms import AVAI_CHOICES, INTERPOLATION_MODES, build_transform
from dassl.data.transforms.randaugment import RANDAUGMENT_OPS, RandAugment
from dassl.data.transforms.transforms import (
    Cutout,
    GaussianNoise,
    InstanceNormalization,
    Random2DTranslation,
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def make_cfg(transforms=("random_resized_crop", "random_flip", "normalize"), size=(6, 6)):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = size
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.TRANSFORMS = transforms
    cfg.INPUT.PIXEL_MEAN = CLIP_MEAN
    cfg.INPUT.PIXEL_STD = CLIP_STD
    return cfg


def solid_image(color=(200, 100, 50), size=(10, 8)):
    return Image.new("RGB", size, color)


def noise_image(size=(10, 8), seed=0):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=gen, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def test_clip_train_pipeline_prints_lines_and_outputs_target_size(capsys):
    tfm = build_transform(make_cfg(), is_train=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "Building transform_train",
        "+ random resized crop (size=(6, 6), scale=(0.08, 1.0))",
        "+ random flip",
        "+ to torch tensor of range [0, 1]",
        f"+ normalization (mean={CLIP_MEAN}, std={CLIP_STD})",
    ]
    out = tfm(noise_image())
    assert out.shape == (3, 6, 6)
    assert out.dtype == torch.float32


def test_test_pipeline_resizes_short_edge_then_center_crops(capsys):
    cfg = make_cfg(size=(4, 4))
    tfm = build_transform(cfg, is_train=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "Building transform_test",
        "+ resize the smaller edge to 4",
        "+ 4x4 center crop",
        "+ to torch tensor of range [0, 1]",
        f"+ normalization (mean={CLIP_MEAN}, std={CLIP_STD})",
    ]
    color = (200, 100, 50)
    out = tfm(solid_image(color))  # [3, 4, 4]
    assert out.shape == (3, 4, 4)
    expected = torch.tensor(
        [(c / 255.0 - m) / s for c, m, s in zip(color, CLIP_MEAN, CLIP_STD)]
    ).view(3, 1, 1)
    assert torch.allclose(out, expected.expand(3, 4, 4), atol=1e-5)


def test_test_pipeline_keeps_aspect_and_crops_the_centre():
    # Left half black, right half white, 16x8: resize to 8x4 (short edge 4), crop centre 4x4
    img = Image.new("RGB", (16, 8), (0, 0, 0))
    img.paste((255, 255, 255), (8, 0, 16, 8))
    cfg = make_cfg(transforms=(), size=(4, 4))
    cfg.INPUT.INTERPOLATION = "nearest"
    out = build_transform(cfg, is_train=False)(img)  # [3, 4, 4]
    assert out.shape == (3, 4, 4)
    assert torch.all(out[:, :, :2] == 0.0)
    assert torch.all(out[:, :, 2:] == 1.0)


def test_no_transform_returns_none(capsys):
    cfg = make_cfg()
    cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(cfg, is_train=True) is None
    assert build_transform(cfg, is_train=False) is None


def test_resize_is_added_only_without_crops(capsys):
    tfm = build_transform(make_cfg(transforms=("random_flip",)), is_train=True)
    assert "+ resize to 6x6" in capsys.readouterr().out
    assert tfm(noise_image(size=(13, 7))).shape == (3, 6, 6)

    build_transform(make_cfg(transforms=("random_crop",)), is_train=True)
    out = capsys.readouterr().out
    assert "+ resize to" not in out
    assert "+ random crop (padding = 4)" in out


def test_every_supported_choice_runs_in_spec_order(capsys):
    supported = [
        "random_flip", "random_resized_crop", "normalize", "instance_norm", "random_crop",
        "random_translation", "center_crop", "cutout", "randaugment", "gaussian_noise",
        "colorjitter", "randomgrayscale", "gaussian_blur",
    ]
    cfg = make_cfg(transforms=tuple(supported), size=(8, 8))
    cfg.INPUT.GB_K = 3
    cfg.INPUT.CUTOUT_LEN = 2
    random.seed(0)
    torch.manual_seed(0)
    tfm = build_transform(cfg, is_train=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("+ ")]
    prefixes = [
        "+ random translation", "+ random crop", "+ random resized crop", "+ 8x8 center crop",
        "+ random flip", "+ randaugment (n=2, m=10)", "+ color jitter", "+ random gray scale",
        "+ gaussian blur (kernel=3)", "+ to torch tensor", "+ cutout (n_holes=1, length=2)",
        "+ normalization", "+ gaussian noise (mean=0.0, std=0.15)", "+ instance normalization",
    ]
    assert len(lines) == len(prefixes)
    for line, prefix in zip(lines, prefixes):
        assert line.startswith(prefix), (line, prefix)
    out = tfm(noise_image(size=(12, 10)))
    assert out.shape == (3, 8, 8)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "choice", ["imagenet_policy", "cifar10_policy", "svhn_policy", "randaugment_fixmatch",
               "randaugment2"]
)
def test_uncarried_choices_raise_not_implemented(choice):
    assert choice in AVAI_CHOICES
    with pytest.raises(NotImplementedError, match=choice) as info:
        build_transform(make_cfg(transforms=(choice,)), is_train=True)
    assert "'random_resized_crop'" in str(info.value)  # lists the supported choices


def test_unknown_choice_raises_value_error():
    with pytest.raises(ValueError, match="random_flipp"):
        build_transform(make_cfg(transforms=("random_flipp",)), is_train=True)


def test_unknown_interpolation_raises_value_error():
    cfg = make_cfg()
    cfg.INPUT.INTERPOLATION = "lanczos"
    with pytest.raises(ValueError, match="lanczos"):
        build_transform(cfg, is_train=False)


def test_interpolation_modes_map_names_to_torchvision():
    assert set(INTERPOLATION_MODES) == {"bilinear", "bicubic", "nearest"}
    assert INTERPOLATION_MODES["bicubic"].value == "bicubic"


def test_choices_argument_overrides_cfg(capsys):
    tfm = build_transform(make_cfg(), is_train=True, choices=["center_crop"])
    out = capsys.readouterr().out
    assert "+ random flip" not in out and "+ 6x6 center crop" in out
    assert tfm(noise_image()).shape == (3, 6, 6)


def test_instance_normalization_gives_zero_mean_unit_std_per_channel():
    img = torch.rand(3, 5, 7) * 4 + 2  # [3, 5, 7]
    out = InstanceNormalization()(img)
    flat = out.reshape(3, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(flat.std(1), torch.ones(3), atol=1e-5)


def test_cutout_zeroes_a_square_and_keeps_the_rest():
    random.seed(3)
    img = torch.ones(3, 20, 20)
    out = Cutout(n_holes=1, length=4)(img)  # [3, 20, 20]
    zero_px = (out[0] == 0).sum().item()
    assert 4 <= zero_px <= 16  # a 4x4 square, clipped at the border
    assert torch.equal(out[0] == 0, out[2] == 0)  # same mask on every channel
    assert torch.all(out[out != 0] == 1)


def test_gaussian_noise_probability():
    img = torch.zeros(3, 4, 4)
    assert torch.equal(GaussianNoise(p=0.0)(img), img)
    torch.manual_seed(0)
    noisy = GaussianNoise(mean=1.0, std=0.0, p=1.0)(img)
    assert torch.allclose(noisy, torch.ones(3, 4, 4))


def test_random_2d_translation_outputs_requested_size():
    random.seed(0)
    tfm = Random2DTranslation(5, 7, p=1.0)
    for _ in range(3):
        assert tfm(noise_image(size=(12, 9))).size == (7, 5)


def test_randaugment_keeps_size_is_seeded_and_validates_magnitude():
    img = noise_image(size=(12, 12))
    for op in RANDAUGMENT_OPS:
        out = op(img, 1.0)
        assert out.size == img.size and out.mode == "RGB", op.__name__

    aug = RandAugment(n=3, m=20)
    random.seed(7)
    first = aug(img).tobytes()
    random.seed(7)
    second = aug(img).tobytes()
    assert first == second

    assert RandAugment(n=0, m=10)(img).tobytes() == img.tobytes()
    with pytest.raises(ValueError, match="RANDAUGMENT_M"):
        RandAugment(n=2, m=31)
    with pytest.raises(ValueError, match="RANDAUGMENT_N"):
        RandAugment(n=-1, m=5)
