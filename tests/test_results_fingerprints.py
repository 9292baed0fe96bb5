"""Run fingerprints: written into result.json by real (tiny) runs and read back against independent computations;
``scripts/results.py --diff`` on runs and sweeps that differ in known ways; the sweep table of shared parts."""
import hashlib
import importlib.metadata
import json
import shutil
import subprocess

import pytest
import torch

from dassl.engine import fingerprint
from results import layout
from results.collect import collect
from results.fingerprints import part_differences
from results.report import build_report, main as results_main
from tests.test_linear_probe import run_args, run_train
from tests.toy_data import make_toy_dataset, toy_opts

REPO = fingerprint.CODE_ROOT


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished runs on the toy tree: CoOp A (seed 1, all images) and B (seed 2, a 2-shot sample), and a
    LinearProbeCLIP run (lp)."""
    root = tmp_path_factory.mktemp("fingerprints")
    data = str(root / "data")
    make_toy_dataset(data)
    for name, seed, extra in (("a", 1, []), ("b", 2, ["DATASET.NUM_SHOTS", "2"])):
        run_train(["--root", data, "--seed", str(seed), "--trainer", "CoOp", "--output-dir", str(root / name),
                   *toy_opts(data, epochs=1), "TRAINER.COOP.N_CTX", "4", *extra])
    run_train(run_args(data, root / "lp"))
    return root


def stored(run_dir):
    return json.loads((run_dir / "result.json").read_text())


def git(*args):
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, check=True).stdout


def test_result_json_carries_every_part_and_each_agrees_with_an_independent_computation(runs):
    fp = stored(runs / "a")["fingerprint"]
    assert tuple(fp) == fingerprint.FINGERPRINT_PARTS
    dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    assert fp["code"]["commit"] == git("rev-parse", "HEAD").decode().strip() and fp["code"]["dirty"] == dirty
    assert fp["packages"]["torch"] == importlib.metadata.version("torch") and torch.__version__.startswith(
        fp["packages"]["torch"])
    assert fp["packages"]["numpy"] == importlib.metadata.version("numpy") and "python" in fp["packages"]
    assert fp["device"]["device"] == "cpu" and fp["device"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert fp["precision"] == "fp32"  # CoOp's PREC fp16 falls back to fp32 on a CPU: what ran is recorded
    split_file = runs / "data" / "toy" / "split.json"
    assert fp["data"]["split_file_sha256"] == hashlib.sha256(split_file.read_bytes()).hexdigest()
    split = json.loads(split_file.read_text())
    for name, part in (("train_x", "train"), ("val", "val"), ("test", "test")):
        lines = "".join(f"{path}\t{label}\n" for path, label, _ in split[part])
        assert fp["data"][name] == {"n": len(split[part]), "sha256": hashlib.sha256(lines.encode()).hexdigest()}
    assert "RandomHorizontalFlip" in fp["transforms"]["train"] and "CenterCrop" in fp["transforms"]["test"]
    assert fp["config"]["SEED"] == 1 and fp["config"]["TRAINER"]["COOP"]["N_CTX"] == 4
    assert fp["config"]["INPUT"]["SIZE"] == [32, 32]
    b = stored(runs / "b")["fingerprint"]["data"]
    assert b["train_x"]["n"] == 2 * 6 and b["split_file_sha256"] == fp["data"]["split_file_sha256"]


def test_the_linear_probe_records_the_test_transform_it_extracts_training_features_under(runs):
    fp = stored(runs / "lp")["fingerprint"]
    coop = stored(runs / "a")["fingerprint"]
    assert fp["transforms"] == {"train": coop["transforms"]["test"], "test": coop["transforms"]["test"]}
    assert fp["precision"] == "fp32" and fp["data"] == coop["data"]


def test_code_version_hashes_uncommitted_changes_and_says_when_there_is_no_git(tmp_path, monkeypatch):
    repo = tmp_path / "code"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True, check=True).stdout  # noqa
    run("init", "-q")
    (repo / "f.py").write_text("x = 1\n")
    run("add", "f.py")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    monkeypatch.setattr(fingerprint, "CODE_ROOT", str(repo))
    clean = fingerprint.code_version()
    assert clean == {"commit": run("rev-parse", "HEAD").decode().strip(), "dirty": False, "diff_sha256": None}
    (repo / "f.py").write_text("x = 2\n")
    dirty = fingerprint.code_version()
    assert dirty["dirty"] and dirty["diff_sha256"] == hashlib.sha256(run("diff", "HEAD", "--binary")).hexdigest()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(fingerprint, "CODE_ROOT", str(elsewhere))
    none = fingerprint.code_version()
    assert none["commit"] is None and none["note"].startswith(f"git cannot read {elsewhere}: fatal: not a git repo")
    monkeypatch.setenv("PATH", str(tmp_path / "no_bin"))
    assert fingerprint.code_version() == {"commit": None, "note": "git is not installed"}


def test_diff_of_two_runs_names_each_differing_part_with_its_values(runs, capsys):
    assert results_main(["--diff", str(runs / "a"), str(runs / "b")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"A: {runs / 'a'} (CoOp on ImageFolder, accuracy ")
    assert out[2] == "differ in 2 of 7 fingerprint parts:"
    a, b = (stored(runs / n)["fingerprint"]["data"] for n in "ab")
    assert out[3] == (f"  data: train_x 36 items {a['train_x']['sha256'][:8]} vs 12 items "
                      f"{b['train_x']['sha256'][:8]}; val 12 items {a['val']['sha256'][:8]} vs 12 items "
                      f"{b['val']['sha256'][:8]}")  # 2 shots: min(2, 4) val images per class, sampled too
    assert out[4] == "  config: DATASET.NUM_SHOTS: -1 -> 2; SEED: 1 -> 2"  # OUTPUT_DIR is no difference
    assert out[5] == "same: code, packages, device, precision, transforms" and len(out) == 6
    assert results_main(["--diff", str(runs / "a"), str(runs / "a")]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("same fingerprint: all 7 parts agree")


def place(run_dir, tree, seed, edit=None):
    """Copy a finished run into ``tree`` as few-shot seed ``seed``; ``edit(fingerprint)`` changes its record."""
    target = layout.few_shot_dir(tree, "toy", "CoOp", "c4", 16, seed)
    shutil.copytree(run_dir, target)
    if edit is not None:
        record = stored(target)
        edit(record["fingerprint"])
        (target / "result.json").write_text(json.dumps(record))
    return target


def test_diff_of_two_sweeps_counts_the_runs_per_differing_part(runs, tmp_path, capsys):
    def older_torch(fp):
        fp["packages"]["torch"] = "2.0.0"

    def no_fingerprint(fp):
        fp.clear()

    place(runs / "a", tmp_path / "one", 1)
    place(runs / "a", tmp_path / "two", 1, older_torch)
    place(runs / "b", tmp_path / "two", 2)
    place(runs / "a", tmp_path / "one", 3)
    place(runs / "a", tmp_path / "two", 3, no_fingerprint)
    assert results_main(["--diff", str(tmp_path / "one"), str(tmp_path / "two")]) == 0
    out = capsys.readouterr().out.splitlines()
    rel = "few_shot/toy/CoOp/c4_16shots/seed1"
    assert out[2:] == [
        "2 runs in both",
        "  1 of them not compared: no fingerprint on one side (written by an older train.py), e.g. "
        "few_shot/toy/CoOp/c4_16shots/seed3",
        f"  packages differs in 1 of 1 runs, e.g. {rel}: torch {torch_version()} vs 2.0.0",
        "same in every run: code, device, precision, data, transforms, config",
        "only in B: 1 runs, e.g. few_shot/toy/CoOp/c4_16shots/seed2"]


def torch_version():
    return importlib.metadata.version("torch")


def test_the_report_states_shared_parts_and_flags_mixed_ones(runs, tmp_path):
    def bf16(fp):
        fp["precision"] = "bf16"

    place(runs / "a", tmp_path / "tree", 1)
    place(runs / "b", tmp_path / "tree", 2, bf16)
    markdown = build_report(collect(tmp_path / "tree").results, tmp_path / "report", make_plots=False)
    commit = stored(runs / "a")["fingerprint"]["code"]["commit"][:8]
    assert "## Run fingerprints" in markdown
    code_row = next(line for line in markdown.splitlines() if line.startswith("| code |"))
    assert code_row.startswith(f"| code | 2 | commit {commit}")
    assert "| packages | 2 | python " in markdown and f"torch {torch_version()}" in markdown
    assert "| precision | 2 | **MIXED** (2 values): " in markdown
    assert "fp32 (1 runs)" in markdown and "bf16 (1 runs)" in markdown
    rows = (tmp_path / "report" / "fingerprints.csv").read_text().splitlines()
    assert rows[0] == "part,value,runs" and "precision,bf16,1" in rows and "precision,fp32,1" in rows


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist or is not a folder: pass two run folders or two output trees"),
    ("run_and_tree", "is a run and"),
    ("no_fingerprint", "has no fingerprint (written by an older version of train.py)"),
    ("no_common_runs", "hold no finished run at the same relative path"),
    ("unfinished_and_run", "sigint has no result.json: the run did not finish (re-run its command to resume it); "
                           "--diff compares finished runs"),
    ("run_and_unfinished", "sigint has no result.json: the run did not finish"),
])
def test_bad_diff_input_is_one_line_and_exit_status_2(runs, tmp_path, capsys, case, message):
    old = tmp_path / "old"
    shutil.copytree(runs / "a", old)
    record = stored(old)
    del record["fingerprint"]
    (old / "result.json").write_text(json.dumps(record))
    (tmp_path / "t1").mkdir()
    (tmp_path / "t2").mkdir()
    unfinished = tmp_path / "sigint"  # interrupted: config.yaml and logs, no result.json
    shutil.copytree(runs / "a", unfinished)
    (unfinished / "result.json").unlink()
    pairs = {"unfinished_and_run": (unfinished, runs / "a"), "run_and_unfinished": (runs / "a", unfinished),
             "missing": (runs / "a", tmp_path / "nowhere"), "run_and_tree": (runs / "a", tmp_path / "t1"),
             "no_fingerprint": (runs / "a", old), "no_common_runs": (tmp_path / "t1", tmp_path / "t2")}
    assert results_main(["--diff", *map(str, pairs[case])]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and len(captured.err.strip().splitlines()) == 1


def test_each_part_is_described_by_the_values_that_differ():
    a = {"code": {"commit": "a" * 40, "dirty": False, "diff_sha256": None},
         "packages": {"python": "3.11.7", "torch": "2.14.1"},
         "device": {"device": "cpu", "cpu_capability": "AVX512", "cuda": None},
         "precision": "fp32",
         "data": {"split_file": "/x/split.json", "split_file_sha256": "1" * 64,
                  "train_x": {"n": 2, "sha256": "2" * 64}},
         "transforms": {"train": "Compose(\n    Resize(size=224)\n    ToTensor()\n)", "test": "T"},
         "config": {"SEED": 1, "OUTPUT_DIR": "a", "OPTIM": {"LR": 0.002}}}
    b = {"code": {"commit": "b" * 40, "dirty": True, "diff_sha256": "c" * 64},
         "packages": {"python": "3.11.7", "torch": "2.13.0", "clip": "1.0"},
         "device": {"device": "cuda:0", "cpu_capability": "AVX2", "cuda": "12.4"},
         "precision": "fp16",
         "data": {"split_file": "/elsewhere/split.json", "split_file_sha256": "1" * 64,
                  "train_x": {"n": 2, "sha256": "2" * 64}},
         "transforms": {"train": "Compose(\n    Resize(size=336)\n    ToTensor()\n)", "test": "T"},
         "config": {"SEED": 1, "OUTPUT_DIR": "b", "OPTIM": {"LR": 0.002}, "NEW": 3}}
    assert part_differences(a, b) == {
        "code": ["commit aaaaaaaa vs commit bbbbbbbb + uncommitted changes (diff cccccccc)"],
        "packages": ["clip absent vs 1.0", "torch 2.14.1 vs 2.13.0"],
        "device": ["cpu_capability AVX512 vs AVX2", "cuda none vs 12.4", "device cpu vs cuda:0"],
        "precision": ["fp32 vs fp16"],
        "transforms": ["train: - Resize(size=224) + Resize(size=336)"],
        "config": ["NEW: '(absent)' -> 3"],
    }  # the split file moved but holds the same bytes: no data difference; OUTPUT_DIR is none either
    assert part_differences(a, a) == {}
