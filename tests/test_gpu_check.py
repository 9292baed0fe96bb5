"""The GPU readiness check without a GPU: half-precision parity of every trainer on the CPU (bf16 autocast, fp16
and amp emulated), the error metrics and tolerances, and the whole script end to end with ``--device cpu``."""
import json
import math
import warnings

import pytest
import torch

from benchmarks import gpu_check, parity
from benchmarks.subjects import benchmark_subjects, build_trainer
from clip_patch import Precision

CLASSES = 5
TRAINERS = benchmark_subjects()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


def build(trainer_id, prec):
    torch.manual_seed(0)  # the same learner initialisation whatever ran before
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PREC 'fp16' needs a CUDA device")  # emulated by check_trainer
        return build_trainer(trainer_id, "tiny-ViT", "cpu", prec, CLASSES)


def parity_batch(trainer_id, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = 2 if TRAINERS[trainer_id].per_image_text else 3
    return torch.randn(size, 3, 32, 32, generator=generator), torch.randint(0, CLASSES, (size,), generator=generator)


# -- parity on the CPU ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trainer_id", list(TRAINERS))
def test_fast_path_in_bf16_and_emulated_fp16_agrees_with_fp32_straightforward(trainer_id):
    records = parity.check_trainer(build, trainer_id, *parity_batch(trainer_id), precs=("bf16", "fp16"),
                                   released_in_prec=False)
    assert [(r["prec"], r["effective_prec"], r["emulated"]) for r in records] == [
        ("fp32", "fp32", False), ("bf16", "bf16", False), ("fp16", "fp16", True)]
    for r in records:
        assert r["passed"], r
        for errors in r["errors"].values():
            assert errors["finite"] and 0 <= errors["logits_err"] <= r["tolerances"]["logits"]
    bf16 = records[1]["errors"]["vs_fp32_straightforward"]
    assert bf16["logits_err"] > 0  # bf16 did compute in bf16: its logits are not the fp32 ones
    if TRAINERS[trainer_id].trains:
        assert bf16["grads_err"] > 0 and bf16["worst_family"]


def test_a_half_precision_build_that_computes_something_else_fails():
    def broken_fp16(trainer_id, prec):
        trainer = build(trainer_id, prec)
        if prec == "fp16":  # e.g. a positional embedding lost in the fp16 path
            trainer.model.text_encoder.positional_embedding.data.zero_()
        return trainer

    records = parity.check_trainer(broken_fp16, "MaPLe", *parity_batch("MaPLe"), precs=("fp16",),
                                   released_in_prec=False)
    assert records[0]["passed"] and not records[1]["passed"]
    assert records[1]["errors"]["vs_fp32_fast"]["logits_err"] > records[1]["tolerances"]["logits"]


def test_emulated_fp16_stores_frozen_weights_in_fp16_and_keeps_the_learner_fp32():
    trainer = parity.set_precision(build("BMIP-reference", "fp16"), parity.precision_for("fp16", "cpu"))
    assert trainer.model.text_encoder.blocks[0].attn.in_proj_weight.dtype == torch.float16
    assert trainer.model.image_encoder.conv1.weight.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in parity.learner_of(trainer).parameters())
    assert isinstance(trainer.scaler, torch.amp.GradScaler)


def test_compare_measures_cosine_units_whole_gradient_and_family_errors():
    logits_ref = torch.tensor([[10.0, -5.0], [2.0, 0.0]])
    grads_ref = {"ctx": torch.tensor([3.0, 4.0]),  # norm 5
                 "gates.0.bias": torch.tensor([0.0]), "gates.1.bias": torch.tensor([0.0])}  # a cancelled family
    logits = logits_ref + torch.tensor([[0.0, 0.5], [0.0, 0.0]])
    grads = {"ctx": torch.tensor([3.0, 4.5]), "gates.0.bias": torch.tensor([0.0]), "gates.1.bias": torch.tensor([0.0])}
    errors = parity.compare((logits, grads), (logits_ref, grads_ref), logit_scale=100.0)
    assert errors["logits_err"] == pytest.approx(0.005)  # 0.5 logits at scale 100 = 0.005 in cosine
    assert errors["grads_err"] == pytest.approx(0.1)  # 0.5 / 5 over the whole gradient
    assert errors["family_err"] == pytest.approx(0.1) and errors["worst_family"] == "ctx"
    grads["gates.1.bias"] = torch.tensor([0.6])  # the family's share: 5 * sqrt(2 / 4) = 3.54
    errors = parity.compare((logits, grads), (logits_ref, grads_ref), logit_scale=100.0)
    assert errors["grads_err"] == pytest.approx(math.sqrt((0.5 ** 2 + 0.6 ** 2) / 25))
    assert errors["family_err"] == pytest.approx(0.6 / (5 * math.sqrt(0.5)))
    assert errors["worst_family"] == "gates.*.bias"
    grads["ctx"] = torch.tensor([3.0, float("nan")])
    errors = parity.compare((logits, grads), (logits_ref, grads_ref), logit_scale=100.0)
    assert not errors["finite"] and errors["logits_err"] == errors["grads_err"] == errors["family_err"] == math.inf


def test_families_are_judged_in_fp32_only():
    tol = {"logits": 1e-3, "grads": 1e-2}
    ill_conditioned_family = {"finite": True, "logits_err": 1e-4, "grads_err": 5e-3, "family_err": 5e-2}
    assert parity._within(ill_conditioned_family, tol, fp32=False)
    assert not parity._within(ill_conditioned_family, tol, fp32=True)
    assert not parity._within({**ill_conditioned_family, "grads_err": 2e-2}, tol, fp32=False)


def test_tolerances_follow_the_unit_roundoff_depth_and_fp32_width():
    fp16, bf16, fp32 = Precision("fp16", "cuda"), Precision("bf16", "cpu"), Precision("fp32", "cpu")
    assert parity.tolerances(fp16, 12, 768) == {"logits": 4 * math.sqrt(216) * 2 ** -11,
                                                 "grads": 4 * math.sqrt(648) * 2 ** -11}
    assert parity.tolerances(bf16, 12, 768)["logits"] == 8 * parity.tolerances(fp16, 12, 768)["logits"]
    assert parity.tolerances(fp32, 12, 768)["logits"] == 4 * math.sqrt(216 * 3072) * 2 ** -24
    deeper = parity.tolerances(fp16, 24, 1024)["logits"]
    assert deeper == pytest.approx(math.sqrt(2) * parity.tolerances(fp16, 12, 768)["logits"])


# -- the script ---------------------------------------------------------------------------------------------------
def run_script(tmp_path, capsys, *argv):
    """``python -m benchmarks.gpu_check --device cpu --backbone tiny-ViT ...`` in this process: exit status,
    printed output and the JSON it wrote."""
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--device", "cpu", "--backbone", "tiny-ViT", "--threads", "1", "--out", str(out), *argv])
    return code, capsys.readouterr().out, json.loads(out.read_text())


def test_the_whole_script_runs_on_the_cpu(tmp_path, capsys):
    code, stdout, report = run_script(
        tmp_path, capsys, "--trainers", "MaPLe", "BMIP-reference", "--parity-precs", "fp16", "--train-steps", "6",
        "--memory-classes", "20", "--speed-precs", "fp32", "bf16", "--speed-train-classes", "10",
        "--speed-eval-classes", "10", "--speed-eval-batch", "2", "--repeats", "1", "--max-seconds", "0")
    records = report["records"]
    assert code == 0, stdout[-3000:]
    assert all(r["line"] in stdout for r in records)  # one printed verdict line per record
    by_check = {}
    for r in records:
        by_check.setdefault(r["check"], []).append(r)
    assert [r["verdict"] for r in by_check["environment"]] == ["PASS"]
    assert report["environment"]["policy"]["fp16"]["computes"] == "fp32"  # the CPU policy, recorded
    assert sorted(r["name"] for r in by_check["parity"]) == sorted(
        f"{t} {p}" for t in ("MaPLe", "BMIP-reference") for p in ("fp32 (fp32)", "fp16 (fp16, emulated on CPU)"))
    assert all(r["verdict"] == "PASS" for r in by_check["parity"] + by_check["training"])
    training = {r["name"]: r for r in by_check["training"]}
    assert set(training) == {"MaPLe fp16", "BMIP-reference fp16"}
    for r in training.values():
        assert r["batch"] == 4 and r["misplaced"] == []  # the published batch size; everything on the device
        assert len(r["losses"]) == 6 and r["losses"][-1] < r["losses"][0]
        assert all(s is not None and s >= 2 ** 8 for s in r["scales"])  # the emulated fp16 run used a GradScaler
    memory = {r["name"]: r for r in by_check["memory"]}
    assert set(memory) == {f"{t} {p} @20 classes, batch 4, PREC fp16" for t in ("MaPLe", "BMIP-reference")
                           for p in ("fast", "straightforward")}
    assert all(r["verdict"] == "INFO" and r["peak_memory_mb"] is None for r in memory.values())  # CPU: no figure
    speed = [r for r in by_check["speed"] if "median_s" in r]
    assert len(speed) == 2 * (2 + 3)  # 2 precisions x (2 train steps + floor and 2 trainers at 10 classes)
    goals = {r["name"]: r for r in by_check["speed"] if "goal" in r}
    assert set(goals) == {"BMIP-reference fp32: train step / MaPLe's", "BMIP-reference bf16: train step / MaPLe's",
                          "BMIP-reference fp32: eval @10 classes / zero-shot floor",
                          "BMIP-reference bf16: eval @10 classes / zero-shot floor",
                          "MaPLe bf16: train step speed-up over fp32", "MaPLe bf16: eval @10 speed-up over fp32",
                          "BMIP-reference bf16: train step speed-up over fp32",
                          "BMIP-reference bf16: eval @10 speed-up over fp32"}
    assert all(r["verdict"] == "INFO" for r in goals.values())  # goals are judged on CUDA + ViT-B/16 only
    train = {(r["trainer"], r["prec"]): r["median_s"] for r in speed if r["kind"] == "train"}
    assert goals["BMIP-reference bf16: train step / MaPLe's"]["value"] == pytest.approx(
        train[("BMIP-reference", "bf16")] / train[("MaPLe", "bf16")])
    assert set(report["speed_tables"]) == {"fp32", "bf16"} and "| BMIP-reference |" in report["speed_tables"]["bf16"]
    assert report["summary"]["exit_code"] == 0 and report["goals_judged"] is False


def test_nothing_starts_after_the_budget_and_the_exit_status_says_so(tmp_path, capsys):
    code, stdout, report = run_script(tmp_path, capsys, "--budget-s", "0", "--trainers", "MaPLe", "--checks",
                                      "parity", "training")
    assert code == 1 and "exit status 1" in stdout
    assert [(r["check"], r["verdict"]) for r in report["records"]] == [("parity", "SKIPPED"), ("training", "SKIPPED")]


def test_a_failing_item_is_reported_and_the_next_one_still_runs(tmp_path):
    report = gpu_check.Report(str(tmp_path / "r.json"), {"command": "test"})
    budget = gpu_check.Budget(60)

    def boom():
        raise ValueError("a broken check")

    gpu_check.guarded(report, "parity", "A", budget, torch.device("cpu"), boom)
    gpu_check.guarded(report, "parity", "B", budget, torch.device("cpu"),
                      lambda: report.add("parity", "B", "PASS", "fine"))
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [(r["name"], r["verdict"]) for r in saved["records"]] == [("A", "ERROR"), ("B", "PASS")]
    assert "ValueError: a broken check" in saved["records"][0]["line"] and saved["summary"]["exit_code"] == 1


def test_memory_is_released_between_items_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(gpu_check.gc, "collect", lambda: calls.append("collect"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    gpu_check.release_memory(torch.device("cpu"))
    assert calls == []  # no memory figure on the CPU, so no full collection (about 1 s each in a test process)
    gpu_check.release_memory(torch.device("cuda"))
    assert calls == ["collect", "empty_cache"]


@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda"], "CUDA is not available here; on a machine without a GPU run --device cpu"),
    (["--device", "cpu", "--backbone", "ViT-H/14"], "Unknown backbone 'ViT-H/14'"),
    (["--device", "cpu", "--memory-classes", "5000"], "class counts must be in 1..1000"),
    (["--device", "cpu", "--train-steps", "0"], "--train-steps must be at least 1"),
])
def test_bad_arguments_stop_with_one_line(argv, message):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match=message):
        gpu_check.resolve_args(argv)


def test_memory_check_judges_bmip_on_the_large_backbone_too(tmp_path, capsys):
    code, stdout, report = run_script(tmp_path, capsys, "--checks", "memory", "--trainers", "MaPLe", "BMIP-per_sample",
                                      "--memory-classes", "12", "--memory-large-backbone", "tiny-ViT")
    names = [r["name"] for r in report["records"]]
    assert code == 0, stdout[-2000:]
    assert names == [f"MaPLe {p} @12 classes, batch 4, PREC fp16" for p in ("fast", "straightforward")] + [
        f"BMIP-per_sample {p} @12 classes, batch 4, PREC fp16" for p in ("fast", "straightforward")] + [
        "BMIP-per_sample fast @12 classes, batch 4, PREC fp16, tiny-ViT"]  # BMIP alone, on the large backbone
    assert gpu_check.resolve_args(["--device", "cpu"]).large_backbone_name == "random-ViT-L/14"  # ViT-B/16's default
    assert gpu_check.resolve_args(["--device", "cpu", "--backbone", "tiny-ViT"]).large_backbone_name is None
    with pytest.raises(SystemExit, match="Unknown backbone 'ViT-X'"):
        gpu_check.resolve_args(["--device", "cpu", "--memory-large-backbone", "ViT-X"])
