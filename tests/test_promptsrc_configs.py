"""Every published PromptSRC / PromptSRC_BMIP config ships under its name with its published values, merges with every
dataset config in both orders, and builds its trainer; the release's key quirks (depth from PROMPT_DEPTH, prompt
length from N_CTX_TEXT) hold for the cross-dataset config."""
import glob
import os
import warnings

import pytest
import torch
import yaml

import datasets  # noqa: F401  (registers dataset keys)
import trainers  # noqa: F401  (registers trainer keys)
from benchmarks.subjects import build_trainer_without_data
from runs.config import build_parser, setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "published_configs.yaml")  # tests/test_published_configs.py
FAMILIES = ("PromptSRC", "PromptSRC_BMIP")
DATASET_YAMLS = sorted(glob.glob(os.path.join(REPO, "configs", "datasets", "*.yaml")))


def published():
    """``{(family, file name): {key: value as published}}`` of the pinned PromptSRC / PromptSRC_BMIP files."""
    with open(FIXTURE) as f:
        files = yaml.safe_load(f)["files"]
    return {tuple(name.split("/")): entry["values"] for name, entry in files.items() if name.split("/")[0] in FAMILIES}


PUBLISHED = sorted(published())


def config_path(family, name):
    return os.path.join(REPO, "configs", "trainers", family, name)


def value_at(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def test_every_published_file_is_pinned_and_shipped():
    shipped = {f: sorted(n for n in os.listdir(os.path.join(REPO, "configs", "trainers", f))
                         if n.endswith(".yaml") and not n.startswith("micro")) for f in FAMILIES}
    assert shipped == {f: sorted(n for family, n in PUBLISHED if family == f) for f in FAMILIES}
    assert len(shipped["PromptSRC"]) == 3 and len(shipped["PromptSRC_BMIP"]) == 19
    assert "vit_bitp_ctx2_ep20TT_PromptSRC_seed40adam dtd.yaml" in shipped["PromptSRC_BMIP"]


def base_cfg(family, name, extra=()):
    argv = ["--trainer", family, "--config-file", config_path(family, name), *extra]
    return setup_cfg(build_parser().parse_args(argv))


@pytest.mark.parametrize("family, name", PUBLISHED, ids=[f"{f}/{n}" for f, n in PUBLISHED])
def test_every_dataset_merge_order_keeps_the_published_values(family, name):
    cfg = base_cfg(family, name)  # the values themselves: tests/test_published_configs.py
    keys = list(published()[(family, name)])
    expected = {key: value_at(cfg, key) for key in keys}
    if "MODEL.INIT_SEED" not in keys:
        assert cfg.MODEL.INIT_SEED == -1  # the project default (the release's 48 seeded its whole run)
    for dataset_yaml in DATASET_YAMLS:  # train.py merges the dataset file first; the other order must work too
        dataset_first = cfg.clone()
        dataset_first.defrost()
        dataset_first.merge_from_file(dataset_yaml)
        dataset_first.merge_from_file(config_path(family, name))
        trainer_first = cfg.clone()
        trainer_first.defrost()
        trainer_first.merge_from_file(dataset_yaml)
        for merged in (dataset_first, trainer_first):
            assert {key: value_at(merged, key) for key in keys} == expected, dataset_yaml


@pytest.mark.parametrize("family, name", PUBLISHED, ids=[f"{f}/{n}" for f, n in PUBLISHED])
def test_published_config_builds_its_trainer(family, name):
    cfg = base_cfg(family, name, ["--backbone", "tiny-ViT", "--device", "cpu", "MODEL.BACKBONE.NAME", "tiny-ViT",
                                  "INPUT.SIZE", "(32, 32)"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PREC fp16 on a CPU; PromptSRC_BMIP's ignored depth keys (tested below)
        trainer = build_trainer_without_data(cfg, ["cat", "dog", "sea_lion"])
    learner = trainer.model.prompt_learner
    assert trainer.get_model_names() == ["VLPromptLearner"]
    assert all(p.dtype == torch.float32 and p.requires_grad for p in learner.parameters())
    m = cfg.TRAINER.PROMPTSRC
    if family == "PromptSRC":
        assert learner.ctx.shape[0] == m.N_CTX_TEXT and len(learner.deep_text) == m.PROMPT_DEPTH_TEXT - 1
        assert learner.ctx_vision.shape[0] == m.N_CTX_VISION and len(learner.deep_vision) == m.PROMPT_DEPTH_VISION - 1
    else:
        assert learner.ctx_t.shape[0] == m.N_CTX_TEXT and len(learner.compound_prompts_visual) == 8
    weights = trainer.gpa.weights
    assert len(weights) == cfg.OPTIM.MAX_EPOCH and int(weights.argmax()) + 1 == min(m.GPA_MEAN, cfg.OPTIM.MAX_EPOCH)


def test_cross_dataset_configs_run_what_the_releases_ran():
    extra = ["--backbone", "tiny-ViT", "--device", "cpu", "INPUT.SIZE", "(32, 32)", "TRAINER.PROMPTSRC.PREC", "fp32"]
    name = "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml"
    with pytest.warns(UserWarning, match="ignores TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION/PROMPT_DEPTH_TEXT.*= 9"):
        bmip = build_trainer_without_data(base_cfg("PromptSRC_BMIP", name, extra), ["cat", "dog"])
    learner = bmip.model.prompt_learner  # "depth 3" in the file: depth 9 ran (8 deep sets), 2 tokens per modality
    assert len(learner.compound_prompts_text) == len(learner.compound_prompts_visual) == 8
    assert learner.ctx_t.shape[0] == 2 and learner.vision_slots.stop - learner.vision_slots.start == 2
    src = build_trainer_without_data(base_cfg("PromptSRC", name, extra), ["cat", "dog"]).model.prompt_learner
    assert len(src.deep_text) == len(src.deep_vision) == 2  # PromptSRC reads its depth keys: 3 layers per side
