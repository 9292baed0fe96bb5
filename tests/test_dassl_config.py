"""Tests for dassl.config: the 135 Dassl defaults, clean_cfg, register_config / extend_cfg."""

import pytest
from yacs.config import CfgNode as CN

import dassl
from dassl.config import clean_cfg, extend_cfg, get_cfg_default, register_config, registered_config_names


def _leaves(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, CN):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_version():
    assert dassl.__version__ == "0.6.3"


def test_default_has_exactly_the_135_dassl_leaves():
    leaves = _leaves(get_cfg_default())
    assert len(leaves) == 135
    per_node = {}
    for key in leaves:
        top = key.split(".")[0]
        per_node[top] = per_node.get(top, 0) + 1
    assert per_node == {
        "VERSION": 1, "OUTPUT_DIR": 1, "RESUME": 1, "SEED": 1, "USE_CUDA": 1, "VERBOSE": 1,
        "INPUT": 21, "DATASET": 11, "DATALOADER": 14, "MODEL": 8, "OPTIM": 21,
        "TRAIN": 3, "TEST": 6, "TRAINER": 45,
    }  # fmt: skip


@pytest.mark.parametrize(
    "key, value",
    [
        ("OUTPUT_DIR", "./output"),
        ("SEED", -1),
        ("INPUT.SIZE", (224, 224)),
        ("INPUT.PIXEL_MEAN", [0.485, 0.456, 0.406]),
        ("INPUT.RRCROP_SCALE", (0.08, 1.0)),
        ("INPUT.GB_K", 21),
        ("DATASET.NUM_SHOTS", -1),
        ("DATALOADER.TRAIN_X.SAMPLER", "RandomSampler"),
        ("DATALOADER.TEST.BATCH_SIZE", 32),
        ("MODEL.HEAD.HIDDEN_LAYERS", ()),
        ("OPTIM.NAME", "adam"),
        ("OPTIM.LR", 0.0003),
        ("OPTIM.STEPSIZE", (-1,)),
        ("OPTIM.WARMUP_CONS_LR", 1e-5),
        ("OPTIM.WARMUP_RECOUNT", True),
        ("OPTIM.SGD_DAMPNING", 0),
        ("TRAIN.PRINT_FREQ", 10),
        ("TEST.FINAL_MODEL", "last_step"),
        ("TRAINER.NAME", ""),
        ("TRAINER.MIXMATCH.RAMPUP", 20000),
        ("TRAINER.DDAIG.CLAMP_MIN", -1.0),
        ("TRAINER.FIXMATCH.STRONG_TRANSFORMS", ()),
    ],
)
def test_default_values_and_types(key, value):
    actual = _leaves(get_cfg_default())[key]
    assert actual == value and type(actual) is type(value)


def test_get_cfg_default_returns_independent_copies():
    a = get_cfg_default()
    a.OPTIM.LR = 1.0
    assert get_cfg_default().OPTIM.LR == 0.0003


def test_yacs_merge_semantics_kept(tmp_path):
    cfg = get_cfg_default()
    yaml = tmp_path / "c.yaml"
    yaml.write_text("INPUT:\n  SIZE: (32, 32)\nOPTIM:\n  WARMUP_CONS_LR: 1e-5\n  STEPSIZE: [3, 6]\n")
    cfg.merge_from_file(str(yaml))
    assert cfg.INPUT.SIZE == (32, 32) and cfg.OPTIM.STEPSIZE == (3, 6) and cfg.OPTIM.WARMUP_CONS_LR == 1e-5
    bad = tmp_path / "bad.yaml"
    bad.write_text("DATASET:\n  USE_RATIO: 0.5\n")
    with pytest.raises(KeyError, match="Non-existent config key: DATASET.USE_RATIO"):
        cfg.merge_from_file(str(bad))


def test_clean_cfg_keeps_own_node_case_insensitively():
    cfg = get_cfg_default()
    cfg.TRAINER.CoPrompt = CN({"N_CTX": 2})
    clean_cfg(cfg, "CoPrompt")
    assert sorted(cfg.TRAINER.keys()) == ["CoPrompt", "NAME"]
    cfg = get_cfg_default()
    clean_cfg(cfg, "fixmatch")
    assert sorted(cfg.TRAINER.keys()) == ["FIXMATCH", "NAME"]


def test_engine_extension_keys():
    cfg = extend_cfg(get_cfg_default())
    assert cfg.DEVICE == ""
    assert cfg.TRAIN.EARLY_STOPPING is False and cfg.TRAIN.PATIENT_COUNT == 3
    assert cfg.TEST.NO_TEST_EARLY is False
    assert cfg.OPTIM.ADAM_EPS == 1e-8
    assert "dassl.config._engine_keys" in registered_config_names()
    assert "DEVICE" not in get_cfg_default()  # defaults stay the pure Dassl tree


def test_extend_cfg_is_idempotent_and_picks_up_new_extensions():
    calls = []

    def add_demo(cfg):
        calls.append(1)
        cfg.DEMO_TEST_NODE = CN()
        cfg.DEMO_TEST_NODE.N_CTX = 2  # prompt length

    try:
        cfg = extend_cfg(get_cfg_default())
        register_config(add_demo)
        extend_cfg(cfg)
        cfg.merge_from_list(["DEMO_TEST_NODE.N_CTX", "8", "TRAIN.PATIENT_COUNT", "5"])
        extend_cfg(cfg)  # second application must not reset merged values
        clone = cfg.clone()
        extend_cfg(clone)
        assert calls == [1]
        assert clone.DEMO_TEST_NODE.N_CTX == 8 and clone.TRAIN.PATIENT_COUNT == 5
        cfg.freeze()
        extend_cfg(cfg)  # nothing left to apply: fine on a frozen cfg
    finally:
        from dassl import config as config_module

        config_module._CONFIG_EXTENSIONS.pop(f"{add_demo.__module__}.{add_demo.__qualname__}")

    with pytest.raises(TypeError, match="fn\\(cfg\\)"):
        register_config("not a function")
