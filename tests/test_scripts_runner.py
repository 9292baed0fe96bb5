"""Protocol chains, skip/resume decisions, dry runs, the shell entry points and the sweep runner,
driven by a fake train.py that writes ecosystem logs and checkpoints."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scripts import jobs, layout, protocols, sweep
from scripts.jobs import RunContext, SetupError, checkpoint_epoch, run_chain
from scripts.logparse import final_metrics

REPO = Path(__file__).resolve().parents[1]

FAKE_TRAIN = textwrap.dedent('''\
    """Stand-in for train.py: records its call, writes a log (and a checkpoint when training)."""
    import argparse, hashlib, os, sys
    from pathlib import Path
    p = argparse.ArgumentParser()
    for flag in ("--root", "--seed", "--trainer", "--dataset-config-file", "--config-file",
                 "--output-dir", "--device", "--model-dir", "--load-epoch"):
        p.add_argument(flag)
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    a = p.parse_args()
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "calls.txt", "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\\n")
    if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in str(out):
        print("boom", file=sys.stderr)
        sys.exit(3)
    n_logs = len(list(out.glob("log.txt*")))
    log = out / ("log.txt" if n_logs == 0 else f"log.txt-2024-01-01-00-00-0{n_logs}")
    acc = 50 + int(hashlib.md5(str(out).encode()).hexdigest(), 16) % 4000 / 100
    lines = []
    if not a.eval_only:
        (out / "prompt_learner").mkdir(exist_ok=True)
        (out / "prompt_learner" / "model.pth.tar-2").write_text("weights")
        lines += ["epoch [2/2] batch [1/1] loss 1.0", "Finish training"]
    lines += ["=> result", f"* accuracy: {acc:.2f}%"]
    log.write_text("\\n".join(lines) + "\\n")
''')


@pytest.fixture
def env(tmp_path, monkeypatch):
    """$DATA, a config tree, the fake train.py, and a RunContext using them."""
    data = tmp_path / "data"
    data.mkdir()
    configs = tmp_path / "configs"
    for dataset in ("dtd", "eurosat", "imagenet", "caltech101"):
        (configs / "datasets").mkdir(parents=True, exist_ok=True)
        (configs / "datasets" / f"{dataset}.yaml").write_text("DATASET:\n  NAME: X\n")
    for trainer in ("CoOp", "ZeroshotCLIP"):
        (configs / "trainers" / trainer).mkdir(parents=True)
        (configs / "trainers" / trainer / "c1.yaml").write_text("OPTIM:\n  MAX_EPOCH: 2\n")
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    monkeypatch.setenv("DATA", str(data))
    ctx = RunContext(data_root=data, train_py=fake, config_root=configs)
    return {"tmp": tmp_path, "data": data, "configs": configs, "fake": fake, "ctx": ctx}


def calls(directory):
    path = Path(directory) / "calls.txt"
    return path.read_text().splitlines() if path.is_file() else []


def test_protocol_directories_follow_the_ecosystem_trees(tmp_path):
    root = tmp_path / "output"
    chain = protocols.base2new(root, "CoOp", "c1", "dtd", 2)
    assert [j.output_dir.relative_to(root).as_posix() for j in chain] == [
        "base2new/train_base/dtd/shots_16/CoOp/c1/seed2",
        "base2new/test_base/dtd/shots_16/CoOp/c1/seed2",
        "base2new/test_new/dtd/shots_16/CoOp/c1/seed2"]
    assert chain[0].training and chain[2].model_dir == chain[0].output_dir
    assert chain[2].opts == ("DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "new")
    zs = protocols.base2new(root, "ZeroshotCLIP", "c1", "dtd", 1)
    assert len(zs) == 2 and all(not j.training and j.model_dir is None for j in zs)
    xd = protocols.cross_dataset(root, "CoOp", "c1", 1, ["dtd"])
    assert [j.output_dir.relative_to(root).as_posix() for j in xd] == [
        "imagenet/CoOp/c1_16shots/seed1", "evaluation/CoOp/c1_16shots/dtd/seed1"]
    other = protocols.cross_dataset(root, "CoOp", "c1", 1, ["dtd"], source="eurosat")
    assert other[1].output_dir.relative_to(root).as_posix() == "evaluation/CoOp/c1_16shots_from_eurosat/dtd/seed1"
    few = protocols.few_shot(root, "CoOp", "c1", "dtd", 3, [1, 4])
    assert [c[0].output_dir.relative_to(root).as_posix() for c in few] == [
        "few_shot/dtd/CoOp/c1_1shots/seed3", "few_shot/dtd/CoOp/c1_4shots/seed3"]
    ow = protocols.open_world(root, "CoOp", "c1", "dtd", 1, [100, 0])
    assert [j.output_dir.parts[-6] for j in ow] == ["train_base", "test_ratio_100", "test_ratio_0", "test_all"]
    assert ow[2].opts[-2:] == ("DATASET.SUBSAMPLE_RATIO", "0")
    assert ow[3].opts[-2:] == ("TEST.EVALUATOR", "BaseNovelClassification")
    with pytest.raises(ValueError, match="outside 0..100"):
        protocols.open_world(root, "CoOp", "c1", "dtd", 1, [150])


def test_checkpoint_choice_prefers_model_best_then_the_newest_epoch(tmp_path):
    with pytest.raises(SetupError, match="no checkpoint"):
        checkpoint_epoch(tmp_path)
    folder = tmp_path / "MultiModalPromptLearner"
    folder.mkdir()
    for epoch in (2, 10, 5):
        (folder / f"model.pth.tar-{epoch}").write_text("x")
    (folder / "checkpoint").write_text("model.pth.tar-5")
    assert checkpoint_epoch(tmp_path) == 10
    (folder / "model-best.pth.tar").write_text("x")
    assert checkpoint_epoch(tmp_path) is None


def test_data_root_errors_name_the_problem(tmp_path):
    with pytest.raises(SetupError, match=r"\$DATA is not set"):
        jobs.data_root_from_env({})
    with pytest.raises(SetupError, match="is not a directory"):
        jobs.data_root_from_env({"DATA": str(tmp_path / "nope")})
    assert jobs.data_root_from_env({"DATA": str(tmp_path)}) == tmp_path


def test_run_then_skip_then_resume(env):
    root, ctx = env["tmp"] / "out", env["ctx"]
    chain = protocols.base2new(root, "CoOp", "c1", "dtd", 1)
    log = []
    outcomes = run_chain(chain, ctx, report=log.append)
    assert [o.status for o in outcomes] == ["ok", "ok", "ok"]
    test_new_call = calls(chain[2].output_dir)[0].split()
    assert test_new_call[test_new_call.index("--load-epoch") + 1] == "2"
    assert test_new_call[test_new_call.index("--model-dir") + 1] == str(chain[0].output_dir)
    assert "--eval-only" in test_new_call and test_new_call[-2:] == ["DATASET.SUBSAMPLE_CLASSES", "new"]
    assert "--eval-only" not in calls(chain[0].output_dir)[0].split()

    log.clear()
    outcomes = run_chain(chain, ctx, report=log.append)
    assert [o.status for o in outcomes] == ["skipped"] * 3
    assert all(line.startswith("# skip (finished)") for line in log)
    assert all(len(calls(j.output_dir)) == 1 for j in chain)  # nothing re-ran

    # an interrupted training run: its log has no "Finish training" -> re-run the same command (resume)
    interrupted = protocols.base2new(root, "CoOp", "c1", "eurosat", 1)
    interrupted[0].output_dir.mkdir(parents=True)
    (interrupted[0].output_dir / "log.txt").write_text("epoch [1/2] batch [1/1] loss 2.0\n")
    log.clear()
    outcomes = run_chain(interrupted, ctx, report=log.append)
    assert log[0] == f"# resume (unfinished): {interrupted[0].output_dir}"
    assert [o.status for o in outcomes] == ["ok", "ok", "ok"]
    assert (interrupted[0].output_dir / "log.txt").read_text().startswith("epoch [1/2]")  # old log kept
    metrics, newest = final_metrics(interrupted[0].output_dir, training=True)
    assert newest.name.startswith("log.txt-") and "accuracy" in metrics


def test_a_failed_training_blocks_its_evaluations_only(env, monkeypatch):
    root, ctx = env["tmp"] / "out", env["ctx"]
    monkeypatch.setenv("FAKE_FAIL", "train_base/dtd")
    failed = run_chain(protocols.base2new(root, "CoOp", "c1", "dtd", 1), ctx, capture=True, report=lambda m: None)
    assert [o.status for o in failed] == ["failed", "blocked", "blocked"]
    assert "exit status 3" in failed[0].message
    captured = failed[0].logs[0]
    assert captured.name == "stdout.txt" and "boom" in captured.read_text()
    assert [o.status for o in run_chain(protocols.base2new(root, "CoOp", "c1", "eurosat", 1), ctx,
                                        report=lambda m: None)] == ["ok", "ok", "ok"]


def run_script(name, *args, env_vars):
    return subprocess.run(["bash", str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, **env_vars}, timeout=60)


def test_shell_scripts_dry_run_print_commands_and_check_data(env):
    out = env["tmp"] / "out"
    common = ["--output", str(out), "--configs", str(env["configs"]), "--train-py", str(env["fake"]), "--dry-run"]
    result = run_script("base2new.sh", "CoOp", "c1", "dtd", "1", *common, "--device", "cpu",
                        "--", "OPTIM.MAX_EPOCH", "1", env_vars={"DATA": str(env["data"])})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"# run: {out}/base2new/train_base/dtd/shots_16/CoOp/c1/seed1"
    assert "--device cpu" in lines[1] and lines[1].endswith(
        "DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base OPTIM.MAX_EPOCH 1")
    assert f"--output-dir {out}/base2new/test_new/dtd/shots_16/CoOp/c1/seed1" in result.stdout
    assert "--load-epoch LAST" in result.stdout and jobs.PENDING_NOTE in result.stdout
    assert not out.exists()  # a dry run creates nothing

    result = run_script("domain_generalization.sh", "CoOp", "c1", "1", *common, "--source", "dtd",
                        env_vars={"DATA": str(env["data"])})
    assert result.returncode == 2 and "configs/datasets/imagenetv2.yaml" in result.stderr
    result = run_script("few_shot.sh", "CoOp", "c1", "dtd", "1", *common, env_vars={"DATA": ""})
    assert result.returncode == 2 and "$DATA is not set" in result.stderr
    result = run_script("open_world.sh", "CoOp", "c1", "dtd", "1", *common,
                        env_vars={"DATA": str(env["tmp"] / "missing")})
    assert result.returncode == 2 and "is not a directory" in result.stderr


def test_shell_script_runs_skips_and_reports_failures(env):
    out = env["tmp"] / "out"
    common = ["--output", str(out), "--configs", str(env["configs"]), "--train-py", str(env["fake"])]
    args = ["cross_dataset.sh", "CoOp", "c1", "1", "--targets", "dtd", "eurosat", *common]
    first = run_script(*args, env_vars={"DATA": str(env["data"])})
    assert first.returncode == 0, first.stderr
    for target in ("dtd", "eurosat"):
        assert (out / "evaluation" / "CoOp" / "c1_16shots" / target / "seed1" / "log.txt").is_file()
    again = run_script(*args, env_vars={"DATA": str(env["data"])})
    assert again.returncode == 0 and again.stdout.count("# skip (finished)") == 3
    failing = run_script("base2new.sh", "CoOp", "c1", "dtd", "1", *common,
                         env_vars={"DATA": str(env["data"]), "FAKE_FAIL": "test_new"})
    assert failing.returncode == 1 and "FAILED" in failing.stderr and "test_new" in failing.stderr


def write_sweep(path, body):
    path.write_text(textwrap.dedent(body))
    return path


def test_sweep_file_validation_errors(tmp_path):
    with pytest.raises(SetupError, match="does not exist"):
        sweep.load_sweep(tmp_path / "none.yaml")
    bad = write_sweep(tmp_path / "bad.yaml", """\
        experiments:
          - {protocol: base2novel, datasets: [dtd], seeds: [1], runs: [{trainer: CoOp, cfg: c1}]}
        """)
    with pytest.raises(SetupError, match="protocol 'base2novel'"):
        sweep.load_sweep(bad)
    bad.write_text("experiments:\n  - {protocol: few_shot, datasets: [dtd], seeds: [1], ratios: [1], "
                   "runs: [{trainer: CoOp, cfg: c1}]}\n")
    with pytest.raises(SetupError, match="unknown keys \\['ratios'\\]"):
        sweep.load_sweep(bad)
    bad.write_text("experiments:\n  - {protocol: base2new, datasets: [], seeds: [1], runs: [{trainer: CoOp}]}\n")
    with pytest.raises(SetupError, match="non-empty 'datasets'"):
        sweep.load_sweep(bad)


def test_sweep_merges_shared_training_and_dedups_jobs(tmp_path):
    experiments = [
        {"protocol": "base2new", "datasets": ["dtd"], "seeds": [1], "runs": [{"trainer": "CoOp", "cfg": "c1"}]},
        {"protocol": "open_world", "datasets": ["dtd"], "seeds": [1], "ratios": [50],
         "runs": [{"trainer": "CoOp", "cfg": "c1"}]},
        {"protocol": "cross_dataset", "targets": ["dtd"], "seeds": [1], "runs": [{"trainer": "CoOp", "cfg": "c1"}]},
        {"protocol": "domain_generalization", "seeds": [1], "targets": ["imagenetv2"],
         "runs": [{"trainer": "CoOp", "cfg": "c1"}, {"trainer": "ZeroshotCLIP", "cfg": "c1"}]},
    ]
    chains = sweep.merge_chains([c for e in experiments for c in sweep.experiment_chains(e, tmp_path)])
    names = [[j.output_dir.relative_to(tmp_path).as_posix() for j in c] for c in chains]
    assert names[0] == ["base2new/train_base/dtd/shots_16/CoOp/c1/seed1",
                        "base2new/test_base/dtd/shots_16/CoOp/c1/seed1",
                        "base2new/test_new/dtd/shots_16/CoOp/c1/seed1",
                        "base2new/test_ratio_50/dtd/shots_16/CoOp/c1/seed1",
                        "base2new/test_all/dtd/shots_16/CoOp/c1/seed1"]
    assert names[1] == ["imagenet/CoOp/c1_16shots/seed1", "evaluation/CoOp/c1_16shots/dtd/seed1",
                        "evaluation/CoOp/c1_16shots/imagenetv2/seed1"]
    assert names[2:] == [["imagenet/ZeroshotCLIP/c1_16shots/seed1"],
                         ["evaluation/ZeroshotCLIP/c1_16shots/imagenetv2/seed1"]]


def test_sweep_runs_in_parallel_keeps_going_and_summarizes_failures(env, monkeypatch, capsys):
    sweep_file = write_sweep(env["tmp"] / "s.yaml", f"""\
        output: {env["tmp"] / "out"}
        opts: [OPTIM.MAX_EPOCH, 1]
        experiments:
          - protocol: base2new
            datasets: [dtd, eurosat]
            seeds: [1, 2]
            runs:
              - {{trainer: CoOp, cfg: c1}}
              - {{trainer: ZeroshotCLIP, cfg: c1, seeds: [1]}}
        """)
    common = [str(sweep_file), "--configs", str(env["configs"]), "--train-py", str(env["fake"])]
    monkeypatch.setenv("FAKE_FAIL", "train_base/eurosat/shots_16/CoOp/c1/seed2")
    assert sweep.main([*common, "--workers", "2", "--", "TRAIN.PRINT_FREQ", "5"]) == 1
    out = env["tmp"] / "out"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "# 16 jobs in 8 chains"
    assert {line[:6] for line in printed[1:-4]} == {"[cpu0]", "[cpu1]"}  # both workers ran jobs
    failed_dir = layout.base2new_dir(out, "train_base", "eurosat", 16, "CoOp", "c1", 2)
    assert printed[-4:-2] == ["=== sweep summary: 2 blocked, 1 failed, 13 ok",
                              f"FAILED {failed_dir}: exit status 3; logs: {failed_dir / 'stdout.txt'}"]
    assert all(line.startswith("BLOCKED ") and "seed2" in line for line in printed[-2:])
    done = layout.base2new_dir(out, "test_new", "eurosat", 16, "CoOp", "c1", 1)
    assert "OPTIM.MAX_EPOCH 1 TRAIN.PRINT_FREQ 5" in calls(done)[0] and "--device cpu" in calls(done)[0]
    assert (layout.base2new_dir(out, "test_base", "dtd", 16, "ZeroshotCLIP", "c1", 1) / "log.txt").is_file()

    monkeypatch.delenv("FAKE_FAIL")  # the sweep continues where it stopped: only the failed chain runs
    assert sweep.main(common) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "=== sweep summary: 3 ok, 13 skipped"
    assert len(calls(failed_dir)) == 2 and len(calls(done)) == 1


def test_sweep_dry_run_and_checked_in_definitions(env, capsys):
    out = env["tmp"] / "out"
    assert sweep.main([str(REPO / "scripts" / "sweeps" / "base2new.yaml"), "--output", str(out), "--dry-run",
                       "--configs", str(env["configs"])]) == 2
    assert "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml" in capsys.readouterr().err
    expected = {"base2new.yaml": 11 * (2 + 4 * 3 * 3), "cross_dataset.yaml": 11 + 4 * 3 * 11,
                "domain_generalization.yaml": 5 + 4 * 3 * 5, "few_shot.yaml": 4 * 11 * 3 * 5,
                "open_world.yaml": 11 * 12 + 2 * 3 * 11 * 13}
    for name, count in expected.items():
        spec = sweep.load_sweep(REPO / "scripts" / "sweeps" / name)
        chains = sweep.merge_chains([c for e in spec["experiments"] for c in sweep.experiment_chains(e, out)])
        assert sum(len(c) for c in chains) == count, name
    micro = write_sweep(env["tmp"] / "m.yaml", """\
        experiments:
          - {protocol: few_shot, datasets: [dtd], seeds: [1], shots: [2], runs: [{trainer: CoOp, cfg: c1}]}
        """)
    assert sweep.main([str(micro), "--output", str(out), "--dry-run", "--configs", str(env["configs"]),
                       "--train-py", str(env["fake"])]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "# 1 jobs in 1 chains"
    assert printed[1] == f"# run: {out}/few_shot/dtd/CoOp/c1_2shots/seed1"
    assert printed[2].endswith("DATASET.NUM_SHOTS 2") and printed[-1] == "=== sweep summary: 1 planned"
    assert not out.exists()


def test_paper_sweeps_name_existing_configs_and_zeroshot_uses_coop_configs(tmp_path):
    ctx = RunContext(data_root=tmp_path)  # the repository's configs/
    for name in ("base2new", "cross_dataset", "domain_generalization", "few_shot", "open_world"):
        spec = sweep.load_sweep(REPO / "scripts" / "sweeps" / f"{name}.yaml")
        jobs.check_config_files([j for e in spec["experiments"] for c in sweep.experiment_chains(e, tmp_path)
                                 for j in c], ctx)
    zs = protocols.base2new(tmp_path, "ZeroshotCLIP", "vit_b16", "dtd", 1)[0]
    assert jobs.config_files(zs, ctx)[1] == REPO / "configs" / "trainers" / "CoOp" / "vit_b16.yaml"
