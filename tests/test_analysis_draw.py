"""analysis.modality and analysis.draw: similarities and the modality gap against a direct computation from the
model's features (PromptedCLIP and CoCoOp), and draw_report on trainers built through train.py."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from analysis.draw import draw_report
from analysis.modality import ModalityRecorder, gap_plane
from analysis.passes import run_pass, split_loader
from clip_patch import load_backbone
from dassl.config import extend_cfg, get_cfg_default
from dassl.engine import build_trainer
from runs.config import build_parser, setup_cfg
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.base import PromptedCLIP
from trainers.cocoop import CoCoOpCLIP, CoCoOpPromptLearner
from trainers.coop import CoOpPromptLearner

CLASSNAMES = ["cat", "dog", "sea lion"]


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


def coop_cfg(node="COOP"):
    cfg = extend_cfg(get_cfg_default())
    cfg.TRAINER[node].N_CTX = 4
    return cfg.TRAINER[node]


def record(model, batches):
    model.eval()
    with torch.no_grad(), ModalityRecorder(model) as recorder:
        for image, labels in batches:
            recorder.batch_done(model(image), labels)
    return recorder.result()


def batches(n=2, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 3, (size,), generator=g)) for _ in range(n)]


def test_similarities_and_gap_equal_a_direct_computation(tiny):
    torch.manual_seed(0)
    model = PromptedCLIP(tiny, CoOpPromptLearner(coop_cfg(), CLASSNAMES, tiny))
    data = batches()
    stats = record(model, data)
    with torch.no_grad():
        images = torch.cat([model.image_features(x) for x, _ in data])  # [8, E]
        texts = model.text_features()  # [3, E]
    labels = torch.cat([y for _, y in data])
    cos = images @ texts.t()  # [8, 3]
    matched = cos[torch.arange(8), labels]
    mask = torch.ones_like(cos, dtype=torch.bool)
    mask[torch.arange(8), labels] = False
    assert torch.allclose(stats.matched, matched, atol=1e-5)
    assert stats.unmatched_mean == pytest.approx(cos[mask].mean().item(), abs=1e-5)
    assert stats.unmatched_std == pytest.approx(cos[mask].std(unbiased=False).item(), abs=1e-4)
    assert stats.unmatched_hist.sum().item() == mask.sum().item()
    assert torch.allclose(stats.text_features, texts, atol=1e-6)
    assert stats.gap == pytest.approx((images.mean(0) - texts.mean(0)).norm().item(), abs=1e-5)
    assert stats.accuracy == pytest.approx(100.0 * (cos.argmax(1) == labels).float().mean().item())


def test_cocoop_text_features_are_averaged_over_images(tiny):
    torch.manual_seed(0)
    learner = CoCoOpPromptLearner(coop_cfg("COCOOP"), CLASSNAMES, tiny)
    model = CoCoOpCLIP(tiny, learner)
    data = batches(n=1, size=3)
    stats = record(model, data)
    with torch.no_grad():
        features = F.normalize(model.image_encoder(data[0][0]), dim=-1)  # [3, E]
        per_image = [F.normalize(model.text_encoder(learner.conditioned_embeddings(f), learner.prompts.tokens), dim=-1)
                     for f in features]  # 3 x [n_cls, E]
    assert torch.allclose(stats.text_features, torch.stack(per_image).mean(0), atol=1e-5)
    matched = torch.stack([t[y] @ f for t, f, y in zip(per_image, features, data[0][1])])
    assert torch.allclose(stats.matched, matched, atol=1e-5)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("drawdata")
    make_toy_dataset(str(root))
    return root


def toy_trainer(root, name, node, extra=()):
    argv = ["--root", str(root), "--trainer", name, "--seed", "1", *toy_opts(str(root)),
            f"TRAINER.{node}.PREC", "fp32", *extra]
    return build_trainer(setup_cfg(build_parser().parse_args(argv)))


def test_draw_report_for_bmip_writes_modality_and_gate_reports_from_one_pass(data_root, tmp_path):
    trainer = toy_trainer(data_root, "BMIP", "BMIP", ["TRAINER.BMIP.PROMPT_DEPTH", "3"])
    paths = draw_report(trainer, tmp_path)
    assert [p.name for p in paths] == ["modality_ImageFolder_test.md", "modality_ImageFolder_test.png",
                                       "gates_ImageFolder_test.csv", "gates_ImageFolder_test.md",
                                       "gates_ImageFolder_test.png"]
    accuracy = trainer.test()
    assert f"| accuracy | {accuracy:.2f}% |" in paths[0].read_text()
    assert f"accuracy {accuracy:.1f}%" in paths[3].read_text()
    recorder = ModalityRecorder(trainer.model)
    assert run_pass(trainer, trainer.test_loader, [recorder]) == pytest.approx(accuracy)
    stats = recorder.result()
    assert f"| modality gap ‖mean image − mean text‖ | {stats.gap:.4f} |" in paths[0].read_text()


def test_draw_report_for_zero_shot_and_nothing_for_the_linear_probe(data_root, tmp_path):
    paths = draw_report(toy_trainer(data_root, "ZeroshotCLIP", "COOP"), tmp_path / "zs")
    assert [p.name for p in paths] == ["modality_ImageFolder_test.md", "modality_ImageFolder_test.png"]
    assert draw_report(toy_trainer(data_root, "LinearProbeCLIP", "LINEAR_PROBE"), tmp_path / "lp") == []


def test_split_loader_names_what_is_missing():
    no_val = SimpleNamespace(val_loader=None, test_loader="test loader", cfg=SimpleNamespace(DATASET=SimpleNamespace(
        NAME="ImageNetA")))
    assert split_loader(no_val, "test") == "test loader"
    with pytest.raises(ValueError, match="ImageNetA has no val split"):
        split_loader(no_val, "val")
    with pytest.raises(ValueError, match="split must be 'test' or 'val', got 'train'"):
        split_loader(no_val, "train")


def test_gap_plane_shows_the_gap_at_its_true_length():
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(50, 8, generator=g), dim=-1)  # [50, 8]
    texts = F.normalize(torch.randn(5, 8, generator=g), dim=-1)  # [5, 8]
    image_centroid, text_centroid = images.mean(0), texts.mean(0)
    plane = gap_plane(torch.cat([images, image_centroid[None], text_centroid[None]]), image_centroid, text_centroid)
    gap = (text_centroid - image_centroid).norm().item()
    assert plane[-2].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert plane[-1].tolist() == pytest.approx([gap, 0.0], abs=1e-6)
    along = (images - image_centroid) @ ((text_centroid - image_centroid) / gap)
    assert torch.allclose(plane[:50, 0], along, atol=1e-6)
