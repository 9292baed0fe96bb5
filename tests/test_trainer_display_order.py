"""A trainer appears in the result tables and the benchmark by being registered: a dummy trainer registered here
takes its DISPLAY_RANK's place in the tables' method order (and an unranked one comes after the ranked methods), and
the benchmark measures it with its registered config defaults while the published settings stay for the others."""
import os

import pytest
import yaml

from benchmarks import bench_trainers, measure
from benchmarks.subjects import REPO_ROOT, TrainerSpec, benchmark_subjects, build_cfg
from dassl.config import extend_cfg, get_cfg_default
from dassl.engine import TRAINER_REGISTRY
from results.collect import collect
from results.report import build_report
from tests.test_results_tables import b2n
from trainers.coop import CoOp
from trainers.display import display_order

PUBLISHED_ORDER = ["ZeroshotCLIP", "CoOp", "CoCoOp", "MaPLe", "BMIP", "PromptSRC", "PromptSRC_BMIP"]


@pytest.fixture
def dummy_trainers():
    """``DummyPrompts`` (CoOp's model, ranked between CoCoOp and MaPLe) and ``AUnranked`` (no rank), registered for
    one test (the registry has no removal: the test takes them out again)."""
    @TRAINER_REGISTRY.register()
    class DummyPrompts(CoOp):
        DISPLAY_RANK = 35

    @TRAINER_REGISTRY.register()
    class AUnranked(CoOp):
        DISPLAY_RANK = None

    yield
    for name in ("DummyPrompts", "AUnranked"):
        del TRAINER_REGISTRY._obj_map[name]


def test_a_registered_trainer_takes_its_place_in_the_tables(dummy_trainers, tmp_path):
    order = display_order()
    assert order[:9] == ["ZeroshotCLIP", "CoOp", "CoCoOp", "DummyPrompts", "MaPLe", "BITP", "BMIP", "PromptSRC",
                         "PromptSRC_BMIP"]
    assert order[order.index("MMRLpp") + 1] == "AUnranked"  # unranked: after every ranked one (MMRLpp ranks last)

    root = tmp_path / "output"
    for trainer, (base, new) in {"MaPLe": (80, 70), "AUnranked": (60, 50), "DummyPrompts": (70, 60),
                                 "Other": (50, 40), "CoCoOp": (75, 65)}.items():
        b2n(root, "test_base", "dtd", trainer, "c1", 1, base)
        b2n(root, "test_new", "dtd", trainer, "c1", 1, new)
    markdown = build_report(collect(root).results, tmp_path / "report", make_plots=False)
    average = markdown.split("Average over datasets:")[1].split("Per dataset:")[0]
    rows = [line.split("|")[1].strip() for line in average.splitlines() if line.startswith("| ")][1:]
    assert rows == ["CoCoOp", "DummyPrompts", "MaPLe", "AUnranked", "Other"]  # a name nobody registered: last
    assert "| DummyPrompts | 70.00 | 60.00 | 64.62 | 1 |" in average


def test_the_benchmark_measures_a_registered_trainer_with_its_config_defaults(dummy_trainers):
    subjects = benchmark_subjects()
    names = list(subjects)
    assert names[:3] == ["ZS-CLIP", "CoOp", "CoCoOp"] and names[3] == "DummyPrompts" and names[4] == "MaPLe"
    assert "LinearProbeCLIP" not in names and names[names.index("IVLP") + 7] == "AUnranked"
    assert subjects["DummyPrompts"] == TrainerSpec("DummyPrompts") and subjects["VPT"] == TrainerSpec("VPT")
    assert [s.trainer for s in subjects.values() if s.config_file] == [
        "ZeroshotCLIP", "CoOp", "CoCoOp", "MaPLe", "BITP", "BMIP", "BMIP", "PromptSRC", "PromptSRC_BMIP", "UPT", "ProDA",
        "MultiModalAdapter", "IVLP", "KgCoOp", "TCP", "CoPrompt", "CoPrompt_BMIP", "MMRL", "MMRLpp"]

    defaults = get_cfg_default()
    extend_cfg(defaults)
    dummy = build_cfg("DummyPrompts", "tiny-ViT", "cpu")
    with open(os.path.join(REPO_ROOT, subjects["CoOp"].config_file)) as f:
        published = yaml.safe_load(f)
    coop = build_cfg("CoOp", "tiny-ViT", "cpu")
    assert (dummy.OPTIM.MAX_EPOCH, dummy.OPTIM.LR) == (defaults.OPTIM.MAX_EPOCH, defaults.OPTIM.LR) == (10, 0.0003)
    assert (coop.OPTIM.MAX_EPOCH, coop.OPTIM.LR) == (published["OPTIM"]["MAX_EPOCH"], published["OPTIM"]["LR"])
    assert dummy.TRAINER.NAME == "DummyPrompts" and dummy.TRAINER.COOP.PREC == defaults.TRAINER.COOP.PREC

    args = bench_trainers.resolve_args(bench_trainers.build_parser().parse_args(["--quick"]))
    planned = [(s["kind"], s["straightforward"]) for s in bench_trainers.plan(args)
               if s.get("trainer") == "DummyPrompts"]
    assert sorted(planned) == [("eval", False), ("eval", False), ("eval", True), ("train", False), ("train", True)]
    spec = {"kind": "train", "trainer": "DummyPrompts", "straightforward": False, "backbone": "tiny-ViT",
            "device": "cpu", "prec": "fp32", "threads": 1, "classes": 3, "batch": 2, "repeats": 1, "max_seconds": 0.0}
    step = measure.measure(spec)
    assert step["median_s"] > 0 and step["trainable_params"] == 16 * dummy_width()


def dummy_width():
    """The text width of tiny-ViT (CoOp's context has N_CTX tokens of that width)."""
    from clip_patch import load_clip

    return load_clip("tiny-ViT").ln_final.weight.shape[0]
