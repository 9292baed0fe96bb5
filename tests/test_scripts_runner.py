"""Protocol chains, skip/resume decisions, dry runs, the shell entry points and the sweep runner, driven by a fake
train.py that keeps train.py's output-folder contract (lock, ecosystem logs, checkpoints, result.json)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dassl.engine.run_dir import NoDeployedModel, deployed_epoch
from results import layout
from results.logparse import final_metrics
from runs.config import build_parser, setup_cfg
from sweeps import jobs, protocols, sweep_files
from sweeps import runner as sweep_runner
from sweeps.jobs import RunContext, SetupError, run_chain

REPO = Path(__file__).resolve().parents[1]

FAKE_TRAIN = textwrap.dedent('''\
    """Stand-in for train.py with its output-folder contract (scripts/ must not depend on real training here):
    holds OUTPUT_DIR/.lock while it runs, records its call, writes a log (and a checkpoint when training) and,
    after the final test, result.json. Failure injection through environment variables (substring of the
    output directory): FAKE_FAIL exits at once, FAKE_FAIL_TEST crashes in the final test (after "Finish
    training"), FAKE_SLEEP makes the first attempt of a training sleep after its epoch-1 checkpoint (with a
    grandchild in its process group; pids.txt: both pids and the parent's); a later attempt resumes."""
    import argparse, fcntl, hashlib, json, os, subprocess, sys, time
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
    lock = open(out / ".lock", "a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.truncate(0)
    lock.write(f"pid {os.getpid()} on fakehost since now")
    lock.flush()
    with open(out / "calls.txt", "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\\n")
    def injected(name):
        return os.environ.get(name) and os.environ[name] in str(out)
    if injected("FAKE_FAIL"):
        print("boom", file=sys.stderr)
        sys.exit(3)
    n_logs = len(list(out.glob("log.txt*")))
    log = out / ("log.txt" if n_logs == 0 else f"log.txt-2024-01-01-00-00-0{n_logs}")
    acc = 50 + int(hashlib.md5(str(out).encode()).hexdigest(), 16) % 4000 / 100
    lines = []
    if not a.eval_only:
        checkpoints = out / "prompt_learner"
        if (checkpoints / "model.pth.tar-1").exists():
            lines.append(f"Found checkpoint at {out} (will resume training)")
        checkpoints.mkdir(exist_ok=True)
        (checkpoints / "model.pth.tar-1").write_text("weights")
        if injected("FAKE_SLEEP") and not (out / "pids.txt").exists():
            helper = subprocess.Popen(["sleep", "300"])
            (out / "pids.txt").write_text(f"{os.getpid()} {helper.pid} {os.getppid()}")
            time.sleep(300)
        (checkpoints / "model.pth.tar-2").write_text("weights")
        lines += ["epoch [2/2] batch [1/1] loss 1.0", "Finish training"]
    if injected("FAKE_FAIL_TEST"):
        log.write_text("\\n".join(lines) + "\\n")
        raise RuntimeError("the final test crashed")
    lines += ["=> result", f"* accuracy: {acc:.2f}%"]
    log.write_text("\\n".join(lines) + "\\n")
    (out / "result.json").write_text(json.dumps({
        "mode": "eval" if a.eval_only else "train", "metrics": {"accuracy": acc},
        "deployed": None if a.eval_only else "last_step"}))
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


def write_result(run_dir, **record):
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "result.json").write_text(json.dumps({"mode": "train", "metrics": {"accuracy": 50.0},
                                                           **record}))


def test_checkpoint_choice_follows_what_the_finished_training_deployed(tmp_path):
    folder = tmp_path / "MultiModalPromptLearner"
    folder.mkdir()
    for epoch in (2, 10, 5):
        (folder / f"model.pth.tar-{epoch}").write_text("x")
    (folder / "checkpoint").write_text("model.pth.tar-5")
    (folder / "model-best.pth.tar").write_text("x")
    with pytest.raises(NoDeployedModel, match="has not finished"):  # checkpoints alone: training may still run
        deployed_epoch(tmp_path)
    write_result(tmp_path, deployed="last_step")  # e.g. best_val refused on ImageNet: the last epoch is used
    assert deployed_epoch(tmp_path) == 10
    write_result(tmp_path, deployed="best_val")
    assert deployed_epoch(tmp_path) is None
    for path in folder.iterdir():
        path.unlink()
    write_result(tmp_path, deployed="last_step")
    with pytest.raises(NoDeployedModel, match="no checkpoint"):
        deployed_epoch(tmp_path)


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

    # an interrupted training run: no result.json -> re-run the same command (resume)
    interrupted = protocols.base2new(root, "CoOp", "c1", "eurosat", 1)
    interrupted[0].output_dir.mkdir(parents=True)
    (interrupted[0].output_dir / "log.txt").write_text("epoch [1/2] batch [1/1] loss 2.0\n")
    (interrupted[0].output_dir / "config.yaml").write_text("SEED: 1\n")  # written by train.py at its start
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


@pytest.fixture
def run_script(warm_python):
    """``run_script(NAME, *ARGS, env_vars=...)``: ``bash scripts/NAME ARGS`` with ``$PYTHON`` = the warm Python of
    tests/warm_python.py (each ``$PYTHON scripts/run_protocol.py ...`` a fork of one interpreter that imported it all
    once, not a fresh one)."""
    def run(name, *args, env_vars):
        return subprocess.run(["bash", str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                              env={**os.environ, "PYTHON": warm_python, **env_vars}, timeout=60)
    return run


def test_shell_scripts_dry_run_print_commands_and_check_data(env, run_script):
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


def test_promptsrc_wrappers_pick_the_published_configs(env, run_script):
    out = env["tmp"] / "out"
    common = ["--output", str(out), "--train-py", str(env["fake"]), "--dry-run"]  # the repository's configs/
    data = {"DATA": str(env["data"])}
    result = run_script("promptsrc/base2new.sh", "dtd", "1", *common, env_vars=data)
    assert result.returncode == 0, result.stderr
    assert "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml" in result.stdout
    assert f"{out}/base2new/train_base/dtd/shots_16/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx/seed1" in result.stdout
    result = run_script("promptsrc/base2new.sh", "dtd", "1", *common, env_vars={**data, "TRAINER": "PromptSRC_BMIP"})
    assert "configs/trainers/PromptSRC_BMIP/vit_bitp_ctx4_ep20TT_adam_PromptSRC.yaml" in result.stdout
    # the few-shot config's comment: these datasets aggregate with GPA mean 45 / std 5
    result = run_script("promptsrc/few_shot.sh", "eurosat", "1", *common, "--shots", "1", env_vars=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("TRAINER.PROMPTSRC.GPA_MEAN 45 TRAINER.PROMPTSRC.GPA_STD 5") == 1
    result = run_script("promptsrc/few_shot.sh", "dtd", "1", *common, "--shots", "1", env_vars=data)
    assert "GPA_MEAN 45" in result.stdout
    result = run_script("promptsrc/few_shot.sh", "imagenet", "1", *common, "--shots", "1", env_vars=data)
    assert result.returncode == 0 and "GPA_MEAN" not in result.stdout
    result = run_script("promptsrc/cross_dataset.sh", "1", *common, "--targets", "dtd", env_vars=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml") == 2
    for script, args in (("base2new.sh", ["dtd", "1"]), ("domain_generalization.sh", ["1"])):
        bad = run_script(f"promptsrc/{script}", *args, *common, env_vars={**data, "TRAINER": "CoOp"})
        assert bad.returncode == 2 and bad.stdout == ""
        assert bad.stderr == "error: TRAINER must be PromptSRC or PromptSRC_BMIP, got 'CoOp'\n"


def test_shell_script_runs_skips_and_reports_failures(env, run_script):
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
        sweep_files.load_sweep(tmp_path / "none.yaml")
    bad = write_sweep(tmp_path / "bad.yaml", """\
        experiments:
          - {protocol: base2novel, datasets: [dtd], seeds: [1], runs: [{trainer: CoOp, cfg: c1}]}
        """)
    with pytest.raises(SetupError, match="protocol 'base2novel'"):
        sweep_files.load_sweep(bad)
    bad.write_text("experiments:\n  - {protocol: few_shot, datasets: [dtd], seeds: [1], ratios: [1], "
                   "runs: [{trainer: CoOp, cfg: c1}]}\n")
    with pytest.raises(SetupError, match="unknown keys \\['ratios'\\]"):
        sweep_files.load_sweep(bad)
    bad.write_text("experiments:\n  - {protocol: base2new, datasets: [], seeds: [1], runs: [{trainer: CoOp}]}\n")
    with pytest.raises(SetupError, match="non-empty 'datasets'"):
        sweep_files.load_sweep(bad)


def test_sweep_merges_shared_training_and_dedups_jobs(tmp_path):
    experiments = [
        {"protocol": "base2new", "datasets": ["dtd"], "seeds": [1], "runs": [{"trainer": "CoOp", "cfg": "c1"}]},
        {"protocol": "open_world", "datasets": ["dtd"], "seeds": [1], "ratios": [50],
         "runs": [{"trainer": "CoOp", "cfg": "c1"}]},
        {"protocol": "cross_dataset", "targets": ["dtd"], "seeds": [1], "runs": [{"trainer": "CoOp", "cfg": "c1"}]},
        {"protocol": "domain_generalization", "seeds": [1], "targets": ["imagenetv2"],
         "runs": [{"trainer": "CoOp", "cfg": "c1"}, {"trainer": "ZeroshotCLIP", "cfg": "c1"}]},
    ]
    chains = sweep_files.merge_chains([c for e in experiments for c in sweep_files.experiment_chains(e, tmp_path)])
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
    assert sweep_runner.main([*common, "--workers", "2", "--", "TRAIN.PRINT_FREQ", "5"]) == 1
    out = env["tmp"] / "out"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "# 16 jobs in 8 chains"
    summary = printed.index("=== sweep summary: 2 blocked, 1 failed, 13 ok")
    assert {line[:6] for line in printed[1:summary]} == {"[cpu0]", "[cpu1]"}  # both workers ran jobs
    failed_dir = layout.base2new_dir(out, "train_base", "eurosat", 16, "CoOp", "c1", 2)
    assert printed[summary + 1] == f"FAILED {failed_dir}: exit status 3; logs: {failed_dir / 'stdout.txt'}"
    assert printed[summary + 2] == "    | boom"  # the last lines of the failed job's output
    assert len(printed) == summary + 5
    assert all(line.startswith("BLOCKED ") and "seed2" in line for line in printed[-2:])
    done = layout.base2new_dir(out, "test_new", "eurosat", 16, "CoOp", "c1", 1)
    assert "OPTIM.MAX_EPOCH 1 TRAIN.PRINT_FREQ 5" in calls(done)[0] and "--device cpu" in calls(done)[0]
    assert (layout.base2new_dir(out, "test_base", "dtd", 16, "ZeroshotCLIP", "c1", 1) / "log.txt").is_file()

    monkeypatch.delenv("FAKE_FAIL")  # the sweep continues where it stopped: only the failed chain runs
    assert sweep_runner.main(common) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "=== sweep summary: 3 ok, 13 skipped"
    assert len(calls(failed_dir)) == 2 and len(calls(done)) == 1


def test_sweep_dry_run_and_checked_in_definitions(env, capsys):
    out = env["tmp"] / "out"
    assert sweep_runner.main([str(REPO / "scripts" / "sweeps" / "base2new.yaml"), "--output", str(out), "--dry-run",
                       "--configs", str(env["configs"])]) == 2
    assert "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml" in capsys.readouterr().err
    # ZeroshotCLIP: one seed; every other trainer: 3 seeds
    expected = {"base2new.yaml": 11 * (2 + 17 * 3 * 3), "cross_dataset.yaml": 11 + 16 * 3 * 11,
                "domain_generalization.yaml": 5 + 16 * 3 * 5, "few_shot.yaml": 11 * 15 * 3 * 5,
                "open_world.yaml": 11 * 12 + 3 * 3 * 11 * 13}
    for name, count in expected.items():
        spec = sweep_files.load_sweep(REPO / "scripts" / "sweeps" / name)
        chains = sweep_files.merge_chains([c for e in spec["experiments"] for c in sweep_files.experiment_chains(e, out)])
        assert sum(len(c) for c in chains) == count, name
    micro = write_sweep(env["tmp"] / "m.yaml", """\
        experiments:
          - {protocol: few_shot, datasets: [dtd], seeds: [1], shots: [2], runs: [{trainer: CoOp, cfg: c1}]}
        """)
    assert sweep_runner.main([str(micro), "--output", str(out), "--dry-run", "--configs", str(env["configs"]),
                       "--train-py", str(env["fake"])]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "# 1 jobs in 1 chains"
    assert printed[1] == f"# run: {out}/few_shot/dtd/CoOp/c1_2shots/seed1"
    assert printed[2].endswith("DATASET.NUM_SHOTS 2") and printed[-1] == "=== sweep summary: 1 planned"
    assert not out.exists()


def test_paper_sweeps_name_existing_configs_and_zeroshot_uses_coop_configs(tmp_path):
    ctx = RunContext(data_root=tmp_path)  # the repository's configs/
    for name in ("base2new", "cross_dataset", "domain_generalization", "few_shot", "open_world"):
        spec = sweep_files.load_sweep(REPO / "scripts" / "sweeps" / f"{name}.yaml")
        jobs.check_config_files([j for e in spec["experiments"] for c in sweep_files.experiment_chains(e, tmp_path)
                                 for j in c], ctx)
    zs = protocols.base2new(tmp_path, "ZeroshotCLIP", "vit_b16", "dtd", 1)[0]
    assert jobs.config_files(zs, ctx)[1] == REPO / "configs" / "trainers" / "CoOp" / "vit_b16.yaml"


def test_a_crash_in_the_final_test_leaves_the_job_unfinished_and_it_runs_again(env, monkeypatch):
    root, ctx = env["tmp"] / "out", env["ctx"]
    chain = protocols.base2new(root, "CoOp", "c1", "dtd", 1)
    monkeypatch.setenv("FAKE_FAIL_TEST", "train_base/dtd")
    outcomes = run_chain(chain, ctx, capture=True, report=lambda m: None)
    assert [o.status for o in outcomes] == ["failed", "blocked", "blocked"]
    assert outcomes[0].message == "exit status 1"
    assert outcomes[0].tail[-1] == "RuntimeError: the final test crashed"  # the traceback's last line
    assert "Finish training" in (chain[0].output_dir / "log.txt").read_text()  # the line alone is no result
    assert not (chain[0].output_dir / "result.json").exists()

    monkeypatch.delenv("FAKE_FAIL_TEST")
    log = []
    assert [o.status for o in run_chain(chain, ctx, capture=True, report=log.append)] == ["ok", "ok", "ok"]
    assert log[0] == f"# resume (unfinished): {chain[0].output_dir}"
    assert len(calls(chain[0].output_dir)) == 2


def test_a_job_whose_folder_lock_is_held_runs_elsewhere_and_is_not_started(env, capsys):
    from dassl.engine.run_dir import OutputDirLock

    out = env["tmp"] / "out"
    chain = protocols.base2new(out, "CoOp", "c1", "dtd", 1)
    log = []
    with OutputDirLock(str(chain[0].output_dir)):  # e.g. a train.py left running by a killed runner
        outcomes = run_chain(chain, env["ctx"], report=log.append)
        assert [o.status for o in outcomes] == ["running", "blocked", "blocked"]
        assert log[0].startswith("# running elsewhere (pid ") and "not started" in log[0]
        assert calls(chain[0].output_dir) == []

        sweep_file = write_sweep(env["tmp"] / "s.yaml", f"""\
            output: {out}
            experiments:
              - {{protocol: base2new, datasets: [dtd], seeds: [1], runs: [{{trainer: CoOp, cfg: c1}}]}}
            """)
        args = [str(sweep_file), "--configs", str(env["configs"]), "--train-py", str(env["fake"])]
        assert sweep_runner.main(args) == 3  # nothing failed, something runs elsewhere
        assert "=== sweep summary: 2 blocked, 1 running" in capsys.readouterr().out
        assert sweep_runner.main(["status", *args]) == 3
        printed = capsys.readouterr().out.splitlines()
        assert printed[0].startswith("RUNNING") and f"(pid {os.getpid()} on " in printed[0]
        assert printed[1].startswith("PENDING") and printed[1].endswith("(waiting for its training (running))")
    assert sweep_runner.main(args) == 0  # lock released: the job runs


def pid_alive(pid):
    """Whether ``pid`` is a live process (zombies count as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_stopping_the_runner_ends_its_jobs_and_a_rerun_resumes(env, signum):
    """SIGTERM / SIGINT (Ctrl-C) to the runner: its train.py (own process group, with a grandchild) ends too."""
    sweep_file = write_sweep(env["tmp"] / "s.yaml", f"""\
        output: {env["tmp"] / "out"}
        experiments:
          - {{protocol: base2new, datasets: [dtd, eurosat], seeds: [1], runs: [{{trainer: CoOp, cfg: c1}}]}}
        """)
    cmd = [sys.executable, str(REPO / "scripts" / "sweep.py"), str(sweep_file), "--workers", "1",
           "--configs", str(env["configs"]), "--train-py", str(env["fake"])]
    train_dir = layout.base2new_dir(env["tmp"] / "out", "train_base", "dtd", 16, "CoOp", "c1", 1)
    runner = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "DATA": str(env["data"]), "FAKE_SLEEP": "train_base/dtd"})
    try:
        deadline = time.monotonic() + 60
        while not (train_dir / "pids.txt").is_file() and time.monotonic() < deadline and runner.poll() is None:
            time.sleep(0.05)
        time.sleep(0.1)  # pids.txt is written; the job sleeps
        pids = [int(p) for p in (train_dir / "pids.txt").read_text().split()[:2]]
        assert all(pid_alive(p) for p in pids)
        runner.send_signal(signum)
        stdout, _ = runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert runner.returncode == 128 + signum
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids)  # train.py and what it started
    assert "=== sweep summary: 6 interrupted" in stdout  # the running job, and nothing started after the stop
    assert f"# stopped (the runner received {signum.name})" in stdout
    rerun = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DATA": str(env["data"])},
                           timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"# resume (unfinished): {train_dir}" in rerun.stdout
    assert "Found checkpoint" in (train_dir / "log.txt").read_text()
    assert rerun.stdout.splitlines()[-1] == "=== sweep summary: 6 ok"


def test_a_rerun_after_the_runner_was_killed_sees_its_orphan_and_starts_no_twin(env, capsys):
    """kill -9 cannot be handled: the orphaned train.py keeps its folder lock, so a re-run does not start a twin."""
    sweep_file = write_sweep(env["tmp"] / "s.yaml", f"""\
        output: {env["tmp"] / "out"}
        experiments:
          - {{protocol: base2new, datasets: [dtd], seeds: [1], runs: [{{trainer: CoOp, cfg: c1}}]}}
        """)
    args = [str(sweep_file), "--configs", str(env["configs"]), "--train-py", str(env["fake"])]
    train_dir = layout.base2new_dir(env["tmp"] / "out", "train_base", "dtd", 16, "CoOp", "c1", 1)
    runner = subprocess.Popen([sys.executable, str(REPO / "scripts" / "sweep.py"), *args], stdout=subprocess.DEVNULL,
                              env={**os.environ, "DATA": str(env["data"]), "FAKE_SLEEP": "train_base/dtd"})
    orphan = None
    try:
        deadline = time.monotonic() + 60
        while not (train_dir / "pids.txt").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
        orphan = int((train_dir / "pids.txt").read_text().split()[0])
        runner.kill()
        runner.wait(timeout=30)
        assert pid_alive(orphan)
        assert sweep_runner.main(args) == 3
        printed = capsys.readouterr().out
        assert f"# running elsewhere (pid {orphan} on fakehost since now), not started: {train_dir}" in printed
        assert len(calls(train_dir)) == 1  # no second train.py in the folder
    finally:
        runner.kill()
        if orphan is not None:
            os.killpg(orphan, signal.SIGKILL)


def test_status_shows_each_job_and_retry_failed_runs_only_failed_chains(env, monkeypatch, capsys):
    out = env["tmp"] / "out"
    body = """\
        output: {out}
        experiments:
          - {{protocol: base2new, datasets: [{datasets}], seeds: [1], runs: [{{trainer: CoOp, cfg: c1}}]}}
        """
    small = write_sweep(env["tmp"] / "small.yaml", body.format(out=out, datasets="dtd, eurosat"))
    large = write_sweep(env["tmp"] / "large.yaml", body.format(out=out, datasets="dtd, eurosat, caltech101"))
    common = ["--configs", str(env["configs"]), "--train-py", str(env["fake"])]
    monkeypatch.setenv("FAKE_FAIL", "test_new/eurosat")
    assert sweep_runner.main([str(small), *common]) == 1
    capsys.readouterr()
    monkeypatch.delenv("FAKE_FAIL")

    assert sweep_runner.main(["status", str(large), *common]) == 1
    printed = capsys.readouterr().out.splitlines()
    rows = {line.split()[1]: line.split()[0] for line in printed if not line.startswith(("  ", "==="))}
    finished_accuracy = json.loads((layout.base2new_dir(out, "test_base", "dtd", 16, "CoOp", "c1", 1)
                                    / "result.json").read_text())["metrics"]["accuracy"]
    assert f"(accuracy {finished_accuracy:.2f}%)" in printed[1]
    failed = layout.base2new_dir(out, "test_new", "eurosat", 16, "CoOp", "c1", 1)
    assert rows[str(failed)] == "FAILED"
    assert printed[printed.index(next(l for l in printed if l.startswith(f"FAILED    {failed}"))) + 1] == \
        "          | boom"
    assert [rows[str(layout.base2new_dir(out, s, "caltech101", 16, "CoOp", "c1", 1))]
            for s in ("train_base", "test_base", "test_new")] == ["PENDING"] * 3
    assert printed[-1] == "=== sweep status: 5 finished, 0 running, 1 failed, 3 pending"

    assert sweep_runner.main([str(large), *common, "--retry-failed"]) == 0  # the eurosat chain only
    assert capsys.readouterr().out.splitlines()[0] == "# 3 jobs in 1 chains"
    assert len(calls(failed)) == 2 and not layout.base2new_dir(out, "train_base", "caltech101", 16, "CoOp", "c1",
                                                                1).exists()
    assert sweep_runner.main(["status", str(small), *common]) == 0


def test_runs_take_opts_per_run_and_per_dataset_and_a_folder_name(tmp_path, env):
    experiment = {"protocol": "base2new", "datasets": ["dtd", "imagenet"], "seeds": [1], "runs": [
        {"trainer": "CoOp", "cfg": "c1"},
        {"trainer": "CoOp", "cfg": "c1", "name": "c1_init7", "opts": ["MODEL.INIT_SEED", 7],
         "dataset_opts": {"imagenet": ["TEST.FINAL_MODEL", "last_step"]}}]}
    chains = sweep_files.merge_chains(sweep_files.experiment_chains(experiment, tmp_path))
    plain, dtd, imagenet = chains[0], chains[2], chains[3]
    assert plain[0].opts == ("DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base")
    assert dtd[0].output_dir == layout.base2new_dir(tmp_path, "train_base", "dtd", 16, "CoOp", "c1_init7", 1)
    assert all(j.opts[-2:] == ("MODEL.INIT_SEED", "7") and j.cfg == "c1" for j in dtd)  # evaluations too
    assert all(j.opts[-4:] == ("MODEL.INIT_SEED", "7", "TEST.FINAL_MODEL", "last_step") for j in imagenet)
    ctx = replace(env["ctx"], extra_opts=("OPTIM.MAX_EPOCH", "1"))  # sweep-wide opts come last and win
    assert jobs.build_command(imagenet[0], ctx)[-6:] == ["MODEL.INIT_SEED", "7", "TEST.FINAL_MODEL", "last_step",
                                                         "OPTIM.MAX_EPOCH", "1"]

    unnamed = dict(experiment["runs"][1], name="c1")  # same folder as the plain run, other options
    with pytest.raises(SetupError, match="two different jobs write to .*give one of the runs its own `name:`"):
        sweep_files.merge_chains(sweep_files.experiment_chains(dict(experiment, runs=[experiment["runs"][0], unnamed]),
                                                   tmp_path))
    for bad, message in (({"opts": ["DATASET.NUM_SHOTS", 4]}, "may not set \\['DATASET.NUM_SHOTS'\\]"),
                         ({"opts": ["OPTIM.LR"]}, "KEY VALUE pairs"),
                         ({"dataset_opts": ["x"]}, "dataset_opts must map"),
                         ({"name": "a/b"}, "must be a folder name"),
                         ({"tag": "x"}, "must be \\{trainer: X")):
        path = write_sweep(tmp_path / "bad.yaml", "experiments:\n  - " + json.dumps(
            dict(experiment, runs=[{"trainer": "CoOp", "cfg": "c1", **bad}])) + "\n")
        with pytest.raises(SetupError, match=message):
            sweep_files.load_sweep(path)


# ImageNet's val split is its test split (datasets/imagenet.py): selecting a model on it selects on the test set.
VAL_IS_TEST = ("imagenet",)


def test_no_shipped_sweep_selects_a_model_on_imagenet_val(tmp_path):
    ctx = RunContext(data_root=tmp_path)  # the repository's configs/
    checked = set()
    for path in sorted((REPO / "scripts" / "sweeps").glob("*.yaml")):
        spec = sweep_files.load_sweep(path)
        ctx = replace(ctx, extra_opts=tuple(map(str, spec.get("opts") or [])))
        for chain in sweep_files.merge_chains([c for e in spec["experiments"] for c in sweep_files.experiment_chains(e, tmp_path)]):
            job = chain[0]
            if not job.training or job.dataset not in VAL_IS_TEST or (job.cfg, job.opts) in checked:
                continue
            checked.add((job.cfg, job.opts))
            cfg = setup_cfg(build_parser().parse_args(jobs.build_command(job, ctx)[2:]))
            assert cfg.TEST.FINAL_MODEL != "best_val" and not cfg.TRAIN.EARLY_STOPPING, (path.name, job)
    assert any(cfg == "BMIP_ctx2_dp9_lr2" for cfg, _ in checked)  # a best-val config was checked on ImageNet:
    plain = setup_cfg(build_parser().parse_args(  # alone, it selects on val (the sweeps' opts stop it)
        ["--config-file", str(REPO / "configs" / "trainers" / "BMIP" / "BMIP_ctx2_dp9_lr2.yaml")]))
    assert plain.TEST.FINAL_MODEL == "best_val" and plain.TRAIN.EARLY_STOPPING
