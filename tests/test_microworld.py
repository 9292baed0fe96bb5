"""The micro world: deterministic generator, captions and their agreement, the contrastive
pieces, the micro benchmark datasets on disk, and the shipped micro CLIP checkpoint."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clip
from clip.model import CLIP

from microworld import benchmark
from microworld.captions import captions_agree, caption_scenes, describe
from microworld.contrastive import encode_text_truncated, multi_positive_clip_loss
from microworld.evaluation import held_out_zero_shot, task_zero_shot
from microworld.pretraining import pretraining_batch
from microworld.render import render_scenes
from microworld.scenes import sample_scenes
from microworld.shapes import shape_masks
from microworld.styles import STYLES
from microworld.vocabulary import SHAPES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINT = os.path.join(REPO, "assets", "micro_clip", "MicroViT.pt")
ZERO_SHOT_TOLERANCE = 1.5  # accuracy points allowed for CPU nondeterminism


# ---- generator ------------------------------------------------------------------------------


def _render(seed, style, n=6):
    rng = np.random.default_rng(seed)
    return render_scenes(sample_scenes(rng, n), rng, style, 0.7)


@pytest.mark.parametrize("style", STYLES)
def test_rendering_is_deterministic_per_seed(style):
    first, again, other = _render(5, style), _render(5, style), _render(6, style)
    assert first.shape == (6, 32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_pretraining_batches_are_reproducible_and_distinct():
    a, b, c = pretraining_batch(3, 7, 24), pretraining_batch(3, 7, 24), pretraining_batch(3, 8, 24)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (24, 32, 32, 3) and a.attributes.shape == (24, 5) and len(a.captions) == 24


def test_shape_areas_match_geometry():
    """Pixel areas of silhouettes match the analytic areas of the implicit shapes."""
    grid = (np.arange(400) + 0.5) / 200 - 1.0  # [-1, 1], 400 samples
    v, u = np.meshgrid(grid, grid, indexing="ij")
    ids = np.array([SHAPES.index("circle"), SHAPES.index("square"), SHAPES.index("ring"), SHAPES.index("diamond")])
    areas = shape_masks(ids, np.broadcast_to(u, (4, 400, 400)), np.broadcast_to(v, (4, 400, 400))).mean(axis=(1, 2)) * 4
    expected = [math.pi, (2 * 0.78) ** 2, math.pi * (1 - 0.52 ** 2), 2 * 0.8 * 1.0]
    assert np.allclose(areas, expected, rtol=0.02)


def test_object_colour_and_position_reach_the_pixels():
    scenes = sample_scenes(np.random.default_rng(0), 2, shape=0, colour=[0, 2], size=1, position=[1, 2], pattern=0)
    images = render_scenes(scenes, np.random.default_rng(0), "clean", 0.0).astype(int)
    red_left, blue_right = images[0, 16, 9], images[1, 16, 23]  # centres of the left / right objects
    assert red_left[0] > 170 and red_left[2] < 90
    assert blue_right[2] > 170 and blue_right[0] < 90


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="Unknown scene attribute"):
        sample_scenes(rng, 2, hue=1)
    with pytest.raises(ValueError, match="'shape' must lie in"):
        sample_scenes(rng, 2, shape=len(SHAPES))
    with pytest.raises(ValueError, match="Unknown style"):
        render_scenes(sample_scenes(rng, 1), rng, "watercolour")
    with pytest.raises(ValueError, match="severity must lie in"):
        render_scenes(sample_scenes(rng, 1), rng, "noisy", 1.5)
    with pytest.raises(ValueError, match="Unknown split"):
        benchmark.render_split(benchmark.MICRO_TASKS[0], "dev")


# ---- captions -------------------------------------------------------------------------------


def test_describe_full_and_partial():
    attributes = [SHAPES.index("star"), 4, 0, 1, 1]  # star, orange, small, left, striped
    assert describe(attributes, [True] * 5) == "a small orange star on the left on a striped background"
    assert describe(attributes, [False, True, False, False, False]) == "an orange shape"
    assert describe(attributes, [True, False, False, False, True]) == "a star on a striped background"


def test_sketch_captions_never_name_a_background():
    scenes = sample_scenes(np.random.default_rng(1), 200, pattern=2)
    captions, mentions, _ = caption_scenes(scenes.attributes, np.random.default_rng(1), "sketch")
    assert not mentions[:, 4].any()
    assert not any("background" in caption for caption in captions)


def test_caption_agreement_matches_a_direct_check():
    batch = pretraining_batch(0, 0, 40)
    agree = captions_agree(batch.attributes, batch.mentions, batch.styles, batch.names_style)
    assert agree.diagonal().all()
    for i in range(40):
        for j in range(40):
            named = [k for k in range(5) if batch.mentions[j, k]]
            truthful = all(batch.attributes[i, k] == batch.attributes[j, k] for k in named)
            style_ok = not batch.names_style[j] or batch.styles[i] == batch.styles[j]
            assert agree[i, j] == (truthful and style_ok)


# ---- contrastive pieces ---------------------------------------------------------------------


def _tiny_clip():
    torch.manual_seed(0)
    return CLIP(32, 16, 2, 64, 4, 77, 49408, 64, 1, 2).eval()


def test_truncated_text_encoder_equals_full_context():
    model = _tiny_clip()
    tokens = clip.tokenize(["a red star.", "in this image you can clearly see a large purple heart on the left."])
    with torch.no_grad():
        assert torch.allclose(encode_text_truncated(model, tokens), model.encode_text(tokens), atol=1e-5)


def test_multi_positive_loss_reduces_to_clip_loss_and_counts_extra_positives():
    torch.manual_seed(0)
    image, text = torch.randn(5, 8), torch.randn(5, 8)
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    target = torch.arange(5)
    clip_loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    assert torch.allclose(multi_positive_clip_loss(image, text, scale, torch.eye(5, dtype=torch.bool)), clip_loss)
    agree = torch.eye(5, dtype=torch.bool)
    agree[0, 1] = True  # caption 1 is also true of image 0
    log_p_rows, log_p_cols = F.log_softmax(logits, 1), F.log_softmax(logits, 0)
    rows = [-(log_p_rows[0, 0] + log_p_rows[0, 1]) / 2] + [-log_p_rows[i, i] for i in range(1, 5)]
    cols = [-log_p_cols[0, 0], -(log_p_cols[0, 1] + log_p_cols[1, 1]) / 2] + [-log_p_cols[i, i] for i in range(2, 5)]
    expected = (torch.stack(rows).mean() + torch.stack(cols).mean()) / 2
    assert torch.allclose(multi_positive_clip_loss(image, text, scale, agree), expected)


# ---- micro benchmark datasets ---------------------------------------------------------------


@pytest.fixture
def small_benchmark(monkeypatch):
    monkeypatch.setattr(benchmark, "IMAGES_PER_CLASS", {"train": 3, "val": 1, "test": 2})


def _cfg(root, name, subsample="all", shots=-1):
    from dassl.config import extend_cfg, get_cfg_default

    import datasets.micro_world  # noqa: F401  (registers the micro datasets and the dataset config keys)
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.DATASET.NUM_SHOTS = shots
    cfg.SEED = 1
    return cfg


def test_every_task_has_at_least_20_classes_and_distinct_names():
    assert len({task.name for task in benchmark.MICRO_TASKS}) == len(benchmark.MICRO_TASKS) >= 4
    for task in benchmark.MICRO_TASKS:
        assert len(task.classes) >= 20
        assert len(set(task.classnames)) == len(task.classnames)


def test_dataset_is_generated_on_first_use_in_the_split_json_layout(tmp_path, small_benchmark):
    from dassl.data.datasets import build_dataset

    dataset = build_dataset(_cfg(tmp_path, "MicroNight"))
    task = benchmark.TASKS_BY_NAME["MicroNight"]
    folder = tmp_path / "micro_world" / task.folder
    with open(folder / "split_zhou_MicroNight.json") as f:
        split = json.load(f)
    assert sorted(split) == ["test", "train", "val"]
    assert len(split["train"]) == 3 * len(task.classes) and len(split["test"]) == 2 * len(task.classes)
    relpath, label, classname = split["test"][5]
    assert isinstance(relpath, str) and classname == task.classnames[label]
    # The PNG files are the in-memory renders, pixel for pixel.
    images, labels = benchmark.render_split(task, "test")
    assert np.array_equal(np.asarray(Image.open(folder / "images" / relpath)), images[5]) and labels[5] == label
    assert dataset.classnames == task.classnames and len(dataset.test) == len(split["test"])
    # A second build reads the split instead of regenerating it.
    os.remove(folder / "images" / split["train"][0][0])
    with pytest.raises(FileNotFoundError, match="do not exist"):
        build_dataset(_cfg(tmp_path, "MicroNight"))


def test_base_and_novel_halves_with_few_shot_sampling(tmp_path, small_benchmark):
    from dassl.data.datasets import build_dataset

    task = benchmark.TASKS_BY_NAME["MicroSketch"]
    half = math.ceil(len(task.classes) / 2)
    base = build_dataset(_cfg(tmp_path, "MicroSketch", "base", shots=2))
    novel = build_dataset(_cfg(tmp_path, "MicroSketch", "new", shots=2))
    assert base.classnames == task.classnames[:half] and novel.classnames == task.classnames[half:]
    assert len(base.train_x) == 2 * half and len(base.test) == 2 * half


# ---- the shipped micro CLIP -----------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    state_dict = torch.load(CHECKPOINT, map_location="cpu")
    with open(os.path.splitext(CHECKPOINT)[0] + ".json") as f:
        report = json.load(f)
    return state_dict, report


def test_checkpoint_is_small_fp16_and_rebuilds_through_build_model(shipped):
    state_dict, report = shipped
    assert os.path.getsize(CHECKPOINT) <= 20 * 2 ** 20
    assert all(v.dtype == torch.float16 for v in state_dict.values() if v.is_floating_point())
    rebuilt = clip.model.build_model(dict(state_dict)).float().eval()
    hp = report["hyper_parameters"]
    direct = CLIP(hp["embed_dim"], hp["image_size"], hp["layers"], hp["width"], hp["patch_size"], 77, 49408,
                  hp["width"], hp["width"] // 64, hp["layers"])
    direct.load_state_dict({k: v.float() for k, v in state_dict.items()})
    direct.eval()
    images = torch.randn(3, 3, hp["image_size"], hp["image_size"])
    tokens = clip.tokenize(["a photo of a red star.", "a sketch of a blue ring.", "a dotted background."])
    with torch.no_grad():
        assert torch.allclose(rebuilt.encode_image(images), direct.encode_image(images), atol=1e-4)
        assert torch.allclose(rebuilt.encode_text(tokens), direct.encode_text(tokens), atol=1e-4)
    assert rebuilt.visual.input_resolution == 32 and len(rebuilt.transformer.resblocks) >= 6


def test_checkpoint_reaches_documented_zero_shot_accuracy(shipped):
    state_dict, report = shipped
    torch.set_num_threads(1)
    model = clip.model.build_model(dict(state_dict)).float().eval()
    documented = report["zero_shot"]
    measured = held_out_zero_shot(model, report["seed"], documented["images"])
    for key in ("held_out_all_styles", "held_out_clean", "clean_colour_only", "clean_shape_only"):
        assert abs(measured[key] - documented[key]) <= ZERO_SHOT_TOLERANCE, key
    assert documented["held_out_clean"] > 10.0  # ten times the 1 % chance of 100 classes
    task = benchmark.TASKS_BY_NAME["MicroSketch"]
    documented_task = report["zero_shot_downstream"][task.name]
    measured_task = task_zero_shot(model, task)
    for key in ("all", "base", "novel", "hm"):  # base / novel: each half classified among its own names
        assert abs(measured_task[key] - documented_task[key]) <= ZERO_SHOT_TOLERANCE, key
