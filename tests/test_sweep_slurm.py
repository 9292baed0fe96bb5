"""The SLURM executor: options, what gets submitted, the chain task on submitit's local executor (preemption,
requeue, resume, failures) and, end to end, a micro sweep on a real single-node SLURM cluster on localhost
(tests/slurm/cluster.sh; needs root and Debian's slurm-wlm + munge, which .ci/run installs)."""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import submitit

from dassl.engine.run_dir import OutputDirLock
from results import layout, logparse
from sweeps import protocols, runner, status, sweep_files
from sweeps.executors import slurm
from sweeps.jobs import RunContext, SetupError, build_command
from tests.test_scripts_runner import env, write_sweep  # noqa: F401  (env is a fixture)

REPO = Path(__file__).resolve().parents[1]


def test_slurm_options_come_from_the_sweep_file_and_flags(env, capsys, monkeypatch):  # noqa: F811
    options = slurm.SlurmOptions.from_mapping({"partition": "gpu", "time_min": 60, "setup": ["module load cuda"]},
                                              "s.yaml")
    assert options.updated(time_min=None, gpus_per_job=2).gpus_per_job == 2
    params = options.updated(mem_gb=32, account="lab").executor_parameters("sweep_x")
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 60 and params["gpus_per_node"] == 1
    assert params["mem_gb"] == 32 and params["slurm_account"] == "lab" and params["slurm_setup"] == ["module load cuda"]
    assert params["slurm_additional_parameters"] == {"chdir": str(REPO)} and "slurm_qos" not in params
    with monkeypatch.context() as login_node:  # srun and sbatch found (all submitit's SLURM executor looks for)
        login_node.setattr(shutil, "which", lambda tool, which=shutil.which: f"/usr/bin/{tool}" if tool in (
            "srun", "sbatch") else which(tool))
        executor = slurm.make_executor(options.updated(mem_gb=32, account="lab", max_timeouts=5), env["tmp"] / "x",
                                       "sweep_x")  # submitit accepts every parameter
    sbatch = executor._executor._make_submission_file_text("python -m task", "uid")  # the file sbatch would read
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=60", "#SBATCH --mem=32GB", "#SBATCH --account=lab",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8", f"#SBATCH --chdir={REPO}",
                 "#SBATCH --job-name=sweep_x", "#SBATCH --signal=USR2@90", "module load cuda"):
        assert line in sbatch.splitlines(), line
    assert executor._executor.max_num_timeout == 5
    monkeypatch.setattr(shutil, "which", lambda tool, which=shutil.which: None if tool == "srun" else which(tool))
    with pytest.raises(SetupError, match="--executor slurm needs SLURM's client commands"):
        slurm.make_executor(options, env["tmp"] / "x", "sweep_x")  # a machine without SLURM: one clear line
    for bad, message in (({"partitions": "gpu"}, "unknown slurm keys \\['partitions'\\]"),
                         ({"gpus_per_job": -1}, "gpus_per_job must be a whole number >= 0"),
                         ({"time_min": "4h"}, "time_min must be a whole number >= 1"),
                         ({"setup": "source venv"}, "setup must be a list")):
        with pytest.raises(SetupError, match=message):
            slurm.SlurmOptions.from_mapping(bad, "s.yaml")
    assert slurm.task_context(env["ctx"], options).device == "cuda"
    cpu = slurm.task_context(env["ctx"], options.updated(gpus_per_job=0, cpus_per_job=4))
    assert cpu.device == "cpu" and cpu.env["OMP_NUM_THREADS"] == "4"

    sweep_file = write_sweep(env["tmp"] / "s.yaml", f"""\
        output: {env["tmp"] / "out"}
        slurm: {{partition: gpu, time_min: 120}}
        experiments:
          - {{protocol: base2new, datasets: [dtd, eurosat], seeds: [1], runs: [{{trainer: CoOp, cfg: c1}}]}}
        """)
    args = [str(sweep_file), "--configs", str(env["configs"]), "--executor", "slurm"]
    assert runner.main([*args, "--dry-run", "--time", "30"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("# would submit 2 chains (6 jobs) as a SLURM array with {'name': 'sweep_s', "
                                 "'timeout_min': 30,")
    assert "'slurm_partition': 'gpu'" in printed[0] and printed[0].endswith(f"folder {env['tmp'] / 'out' / 'slurm'}")
    assert runner.main([*args, "--gpus", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --gpus: flags of the local executor, not of --executor slurm "
                                              "(whose flags are: --partition, --gpus-per-job, ")


def task(state=None, job_id="7_0", log=Path("/nonexistent")):
    return status.Task(slurm.SlurmExecutor.TASK_LABEL, job_id, state, log)


class KnownTasks(slurm.SlurmExecutor):
    """The SLURM executor with its tasks given (instead of read from its folder and squeue)."""

    def __init__(self, tasks):
        self.tasks = tasks

    def states(self, chains):
        return self.tasks


def test_submission_skips_finished_running_and_queued_chains_and_failed_ones_need_retry(env):  # noqa: F811
    root, ctx = env["tmp"] / "out", env["ctx"]
    from sweeps.jobs import run_chain

    chains = [protocols.base2new(root, "CoOp", "c1", d, 1) for d in ("dtd", "eurosat", "imagenet", "caltech101")]
    finished, running, failed, fresh = chains
    run_chain(finished, ctx, report=lambda m: None)
    os.environ["FAKE_FAIL"] = "test_base/imagenet"
    try:
        run_chain(failed, ctx, capture=True, report=lambda m: None)
    finally:
        del os.environ["FAKE_FAIL"]
    queued = protocols.base2new(root, "CoOp", "c1", "dtd", 2)
    with OutputDirLock(str(running[0].output_dir)):
        everything = chains + [queued]
        tasks = {status.chain_key(queued): task("PENDING")}
        planned = KnownTasks(tasks).plan(everything, retry_failed=False)
        assert (planned.chains, planned.held) == (
            [fresh], {"finished": 1, "running or queued": 2, "failed (retry with --retry-failed)": 1})
        assert KnownTasks(tasks).plan(everything, retry_failed=True).chains == [failed]
        statuses = status.chain_status(queued, tasks[status.chain_key(queued)])
        assert [(s.state, s.detail) for s in statuses] == [("pending", "SLURM job 7_0 PENDING")] * 3
    gone = status.chain_status(fresh, task(None, "8_3", env["tmp"] / "8_3_0_log.err"))
    assert gone[0].state == "failed" and gone[0].detail.startswith("SLURM job 8_3 ended before running it")
    assert [s.state for s in gone[1:]] == ["pending"] * 2  # they wait for the training


def test_chain_tasks_on_submitit_local_executor_survive_preemption_and_report_failures(env, monkeypatch):  # noqa
    """Preemption as SLURM does it (SIGTERM, then the USR2 that submitit handles): the task stops train.py, is
    requeued and resumes it; a failing chain ends its task with the failed job's last lines."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the task process imports sweeps.executors.slurm
    monkeypatch.setenv("FAKE_SLEEP", "train_base/dtd")
    monkeypatch.setenv("FAKE_FAIL", "test_new/eurosat")
    root, folder = env["tmp"] / "out", env["tmp"] / "slurm"
    chains = [protocols.base2new(root, "CoOp", "c1", d, 1) for d in ("dtd", "eurosat")]
    executor = submitit.AutoExecutor(folder=folder, cluster="local")
    executor.update_parameters(timeout_min=10)
    preempted, failing = slurm.submit(executor, chains, replace(env["ctx"], device="cpu"), folder, stop_wait_s=60)
    pids = chains[0][0].output_dir / "pids.txt"
    deadline = time.monotonic() + 120
    while not pids.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.1)
    train_pid, _, task_pid = map(int, pids.read_text().split())
    os.kill(task_pid, signal.SIGTERM)
    time.sleep(1)
    os.kill(task_pid, signal.SIGUSR2)
    assert [status for _, status in preempted.result()] == ["ok", "ok", "ok"]
    task_log = Path(preempted.paths.stdout).read_text()
    assert "# stopped: SLURM sent SIGTERM" in task_log and "# requeued" in task_log
    assert f"# resume (unfinished): {chains[0][0].output_dir}" in task_log
    assert "Found checkpoint" in logparse.read_lines(chains[0][0].output_dir / "log.txt")[0]

    with pytest.raises(submitit.core.utils.FailedJobError, match=r"(?s)FAILED .*test_new.*exit status 3.*\| boom"):
        failing.result()
    recorded = slurm.submitted_tasks(folder)
    assert recorded == {status.chain_key(c): j.job_id for c, j in zip(chains, (preempted, failing))}
    tasks = slurm.chain_tasks(folder, states={})  # both left the queue
    assert KnownTasks(tasks).plan(chains, retry_failed=False).held == {"finished": 1,
                                                                       "failed (retry with --retry-failed)": 1}
    assert KnownTasks(tasks).plan(chains, retry_failed=True).chains == [chains[1]]


# -- a real SLURM cluster ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm_cluster(slurm_tools, tmp_path_factory):
    """A single-node SLURM cluster on localhost for this module; yields the environment its clients need (skipped
    where it cannot run: ``slurm_tools`` in tests/conftest.py)."""
    script = str(REPO / "tests" / "slurm" / "cluster.sh")
    folder = tmp_path_factory.mktemp("cluster")
    started = subprocess.run(["bash", script, "start", str(folder)], capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    finally:
        subprocess.run(["bash", script, "stop", str(folder)], capture_output=True, timeout=120)


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def test_a_micro_sweep_on_a_real_slurm_cluster(slurm_cluster, tmp_path):
    """Submit (an array of 3 chains), no double submission, a forced requeue of the training (the USR2 SLURM
    sends before a time limit) that resumes to weights torch.equal to an uninterrupted run, status, tables."""
    import torch

    from scripts.micro_benchmark import generate_datasets

    data, out = tmp_path / "data", tmp_path / "out"
    generate_datasets(["micro_sketch"], data)  # once, before tasks run in parallel
    opts = ["MODEL.BACKBONE.NAME", "tiny-ViT", "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0"]
    sweep_file = write_sweep(tmp_path / "micro_slurm.yaml", f"""\
        output: {out}
        opts: {json.dumps(opts)}
        slurm: {{partition: cpu, gpus_per_job: 0, cpus_per_job: 1, time_min: 10}}
        experiments:
          - protocol: base2new
            datasets: [micro_sketch]
            shots: 2
            seeds: [1]
            runs:
              - {{trainer: CoOp, cfg: micro}}
              - {{trainer: ZeroshotCLIP, cfg: micro}}
        """)
    environ = {**slurm_cluster, "DATA": str(data), "OMP_NUM_THREADS": "1"}

    def run(*args):
        result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=environ,
                                timeout=300, cwd=REPO)
        return result.returncode, result.stdout + result.stderr

    submit = [REPO / "scripts" / "sweep.py", sweep_file, "--executor", "slurm",
              "--train-py", REPO / "tests" / "slurm" / "pausing_train.py"]
    code, printed = run(*submit)
    assert code == 0 and "# submitted 3 chains (5 jobs) as SLURM job " in printed, printed
    train_job = protocols.base2new(out, "CoOp", "micro", "micro_sketch", 1, shots=2)[0]
    reference = replace(train_job, output_dir=tmp_path / "reference")  # the same command, never interrupted
    ctx = RunContext(data_root=data, extra_opts=tuple(opts), device="cpu")
    uninterrupted = subprocess.Popen(build_command(reference, ctx), cwd=REPO, env=environ,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    code, printed = run(*submit)  # everything is queued, running or (a fast chain) finished: nothing submitted twice
    counts = {state: int(n) for n, state in re.findall(r"# not submitted: (\d+) chains (running or queued|finished)",
                                                       printed)}
    assert code == 0 and "nothing to submit" in printed and "# submitted" not in printed, printed
    assert sum(counts.values()) == 3 and counts.get("running or queued", 0) >= 1, printed  # the training is held

    wait_for(lambda: (train_job.output_dir / "paused_once.txt").is_file(), 240, "the first training epoch")
    code, printed = run(REPO / "scripts" / "sweep.py", "status", sweep_file)
    job_id = slurm.submitted_tasks(out / "slurm")[str(train_job.output_dir)]
    assert code == 3 and f"; SLURM job {job_id})" in printed.splitlines()[0], printed
    assert printed.splitlines()[0].startswith(f"RUNNING   {train_job.output_dir}  (pid ")
    subprocess.run(["scancel", "--signal=USR2", job_id], env=environ, check=True)  # as before a time limit

    results = [j.output_dir / "result.json" for c in sweep_files.merge_chains(sweep_files.experiment_chains(
        sweep_files.load_sweep(sweep_file)["experiments"][0], out)) for j in c]
    wait_for(lambda: all(p.is_file() for p in results), 300, "every job's result.json")
    assert uninterrupted.wait(timeout=300) == 0
    task_log = Path(submitit.core.utils.JobPaths(out / "slurm", job_id=job_id, task_id=0).stdout).read_text()
    assert "# requeued" in task_log and f"# resume (unfinished): {train_job.output_dir}" in task_log
    logs = logparse.log_files(train_job.output_dir)
    assert len(logs) == 2 and "Found checkpoint" in logs[1].read_text()  # the requeued attempt resumed
    final = "prompt_learner/model.pth.tar-2"
    resumed = torch.load(train_job.output_dir / final, weights_only=True)["state_dict"]
    straight = torch.load(reference.output_dir / final, weights_only=True)["state_dict"]
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in resumed)

    wait_for(lambda: not subprocess.run(["squeue", "--noheader"], env=environ, capture_output=True,
                                        text=True).stdout.strip(), 60, "the queue to empty")
    code, printed = run(REPO / "scripts" / "sweep.py", "status", sweep_file)
    assert code == 0 and printed.splitlines()[-1] == "=== sweep status: 5 finished, 0 running, 0 failed, 0 pending"
    code, printed = run(*submit)
    assert code == 0 and "# not submitted: 3 chains finished" in printed and "nothing to submit" in printed

    code, printed = run(REPO / "scripts" / "results.py", out, "--no-plots")
    assert code == 0, printed
    with open(out / "results" / "base2new.csv", newline="") as handle:
        rows = {(row["trainer"], row["dataset"]): row for row in csv.DictReader(handle)}
    for trainer in ("CoOp", "ZeroshotCLIP"):
        for split, column in (("test_base", "base_mean"), ("test_new", "novel_mean")):
            run_dir = layout.base2new_dir(out, split, "micro_sketch", 2, trainer, "micro", 1)
            logged = logparse.final_metrics(run_dir, training=False)[0]["accuracy"]
            assert float(rows[trainer, "micro_sketch"][column]) == pytest.approx(logged, abs=1e-4)
