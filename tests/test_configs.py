"""Every YAML under configs/ merges; the ecosystem's key families merge; every declared key is documented."""
import collections
import glob
import linecache
import os
import re
import sys

import pytest

import datasets  # noqa: F401  (registers dataset keys)
import trainers  # noqa: F401  (registers trainer keys)
from dassl.config import extend_cfg, get_cfg_default
from runs.config import build_parser, setup_cfg
from tests.test_dassl_config import _leaves

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


KEY_ASSIGNMENT = re.compile(r"^\s*\w+(\.\w+)+\s*=(?!\s*(CN|CfgNode)\(\)\s*(#.*)?$)")  # cfg.A.B = / node.B =, not a node


def lines_run_by_the_extensions():
    """{(file, line number): times run} of the repository's source lines that run while every registered extension
    declares its keys on a default config (helpers they call included), and that config."""
    ran = collections.Counter()

    def trace(frame, event, arg):
        if event == "line" and frame.f_code.co_filename.startswith(REPO + os.sep):
            ran[frame.f_code.co_filename, frame.f_lineno] += 1
        return trace

    cfg, previous = get_cfg_default(), sys.gettrace()  # (a coverage tool's tracer, if any, is put back)
    sys.settrace(trace)
    try:
        extend_cfg(cfg)
    finally:
        sys.settrace(previous)
    return ran, cfg


def test_every_declared_key_has_a_one_line_comment():
    ran, cfg = lines_run_by_the_extensions()
    declaring = {where: linecache.getline(*where) for where in ran if KEY_ASSIGNMENT.match(linecache.getline(*where))}
    # every key the extensions add was set by one of these lines (a key declared by a helper is seen too)
    assert sum(ran[where] for where in declaring) == len(_leaves(cfg)) - len(_leaves(get_cfg_default())) > 100
    uncommented = [f"{os.path.relpath(file, REPO)}:{number}: {line.strip()}"
                   for (file, number), line in declaring.items() if "#" not in line]
    assert uncommented == []
