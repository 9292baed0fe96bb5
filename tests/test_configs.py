"""Every YAML under configs/ merges; the ecosystem's key families merge; every declared key is documented."""
import glob
import inspect
import os
import re

import pytest

import datasets  # noqa: F401  (registers dataset keys)
import trainers  # noqa: F401  (registers trainer keys)
from dassl.config import _CONFIG_EXTENSIONS, extend_cfg, get_cfg_default
from runs.config import build_parser, setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YAMLS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def full_cfg():
    cfg = get_cfg_default()
    extend_cfg(cfg)
    return cfg


@pytest.mark.parametrize("path", YAMLS, ids=[os.path.relpath(p, REPO) for p in YAMLS])
def test_every_shipped_yaml_merges(path):
    cfg = full_cfg()
    cfg.merge_from_file(path)


def test_published_key_families_merge(tmp_path):
    """Keys the CoOp, MaPLe, PromptSRC and BMIP repositories put in their YAML files."""
    published = tmp_path / "published.yaml"
    published.write_text("""
DATASET:
  SUBSAMPLE_CLASSES: "base"
  USE_RATIO: True
  SUBSAMPLE_RATIO: 50
MODEL:
  INIT_SEED: 48
TRAIN:
  EARLY_STOPPING: True
  PATIENT_COUNT: 4
TEST:
  NO_TEST_EARLY: False
  FINAL_MODEL: "best_val"
SHARE:
  SHARE_PARAMETER_VISUAL: False
  SHARE_PARAMETER_TEXT: False
TRAINER:
  COOP: {N_CTX: 16, CSC: True, CTX_INIT: "", PREC: "amp", CLASS_TOKEN_POSITION: "middle"}
  COCOOP: {N_CTX: 4, CTX_INIT: "a photo of a", PREC: "fp16"}
  MAPLE: {N_CTX: 2, CTX_INIT: "a photo of a", PREC: "fp16", PROMPT_DEPTH: 9, CONNECT_METHOD: "add"}
  IVLP: {N_CTX_VISION: 2, N_CTX_TEXT: 2, CTX_INIT: "a photo of a", PREC: "fp16", PROMPT_DEPTH_VISION: 9, PROMPT_DEPTH_TEXT: 9}
  VPT: {N_CTX_VISION: 8, CTX_INIT: "a photo of a", PREC: "fp16", PROMPT_DEPTH_VISION: 12}
  PROMPTSRC: {N_CTX_VISION: 4, N_CTX_TEXT: 4, CTX_INIT: "a photo of a", PREC: "fp16", PROMPT_DEPTH_VISION: 9,
              PROMPT_DEPTH_TEXT: 9, TEXT_LOSS_WEIGHT: 25, IMAGE_LOSS_WEIGHT: 10, GPA_MEAN: 15, GPA_STD: 1}
  BMIP: {N_CTX: 2, CTX_INIT: "a photo of a", PREC: "fp16", PROMPT_DEPTH: 9, CONNECT_METHOD: "None",
         WEIGHT_THRESHOLD: 0.0025}
""")
    cfg = full_cfg()
    cfg.merge_from_file(str(published))
    assert cfg.SHARE.SHARE_PARAMETER_TEXT is False and cfg.DATASET.SUBSAMPLE_RATIO == 50
    assert cfg.TRAINER.COOP.CLASS_TOKEN_POSITION == "middle" and cfg.MODEL.INIT_SEED == 48


def test_unknown_key_in_a_file_names_the_key_and_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAINER:\n  BMIP:\n    PROMPT_DEPHT: 3\n")
    args = build_parser().parse_args(["--config-file", str(bad)])
    with pytest.raises(KeyError, match=r"TRAINER\.BMIP\.PROMPT_DEPHT.*bad\.yaml.*TRAINER\.BMIP\.PROMPT_DEPTH"):
        setup_cfg(args)


def test_cli_merge_order_file_then_flags_then_opts(tmp_path):
    yaml = tmp_path / "seeded.yaml"
    yaml.write_text("SEED: 7\nOPTIM:\n  LR: 0.5\n")
    args = build_parser().parse_args(["--config-file", str(yaml), "OPTIM.LR", "0.25"])
    cfg = setup_cfg(args)
    assert cfg.SEED == 7  # a YAML seed is not overwritten by the CLI default
    assert cfg.OPTIM.LR == 0.25
    args = build_parser().parse_args(["--config-file", str(yaml), "--seed", "0", "--device", "cpu"])
    cfg = setup_cfg(args)
    assert cfg.SEED == 0 and cfg.DEVICE == "cpu"


ASSIGNMENT = re.compile(r"^\s*(cfg|node)(\.\w+)+\s*=(?!\s*(CN|CfgNode)\(\)\s*$)")  # a key, not a new node


def key_declaring_functions():
    """{name: function} of every registered config extension and of the ``add_*_keys(node)`` helpers of their
    modules (keys several nodes share, e.g. MMRL's and MMRL++'s)."""
    functions = dict(_CONFIG_EXTENSIONS)
    for fn in _CONFIG_EXTENSIONS.values():
        module = inspect.getmodule(fn)
        for name, helper in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("add_") and name.endswith("_keys"):
                functions[f"{helper.__module__}.{name}"] = helper
    return functions


def test_every_declared_key_has_a_one_line_comment():
    functions = key_declaring_functions()
    assert {"trainers.mmrl.add_representation_keys", "trainers.maple.add_coupled_prompt_keys"} <= set(functions)
    for name, fn in functions.items():
        for line in inspect.getsource(fn).splitlines():
            if ASSIGNMENT.match(line):
                assert "#" in line, f"{name}: config key without a comment: {line.strip()}"
