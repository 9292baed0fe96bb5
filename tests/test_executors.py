"""The executor seam: a third executor, defined and registered here (one class), runs a small sweep end to end through
the sweep command line (plan, launch, status, relaunch, --retry-failed) without any other edit; the registry offers
its flags and refuses them with another executor."""
import json
import pickle
from pathlib import Path

import pytest

from sweeps import runner
from sweeps.executors import EXECUTORS, Executor, register_executor
from sweeps.jobs import run_chain
from sweeps.status import Task, chain_key
from tests.test_scripts_runner import env, write_sweep  # noqa: F401  (env is a fixture)


class FolderQueue(Executor):
    """A queue kept in a folder: ``launch`` writes each chain and its run context as a task; ``work`` runs the queued
    tasks, as a scheduler's node would, and takes them off the queue."""

    NAME = "folder_queue"
    TASK_LABEL = "queued task"

    def __init__(self, folder):
        self.folder = folder

    @classmethod
    def add_arguments(cls, group):
        return [group.add_argument("--queue-folder", type=Path, help="the queue's folder")]

    @classmethod
    def from_args(cls, args, sweep):
        section = sweep.sections.get(cls.NAME, {})
        return cls(args.queue_folder or Path(section.get("folder", sweep.roots[0] / "queue")))

    def records(self):
        path = self.folder / "tasks.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def states(self, chains):
        return {r["chain"]: Task(self.TASK_LABEL, str(r["id"]), r["state"], self.folder / f"{r['id']}.log")
                for r in self.records()}

    def launch(self, plan, ctx, dry_run):
        for reason, count in sorted(plan.held.items()):
            print(f"# not queued: {count} chains {reason}")
        if dry_run or not plan.chains:
            print(f"# would queue {len(plan.chains)} chains ({plan.jobs} jobs)")
            return 0
        self.folder.mkdir(parents=True, exist_ok=True)
        records = self.records()
        for chain in plan.chains:
            records.append({"id": len(records) + 1, "chain": chain_key(chain), "state": "QUEUED"})
            (self.folder / f"{records[-1]['id']}.pkl").write_bytes(pickle.dumps((chain, ctx)))
        (self.folder / "tasks.json").write_text(json.dumps(records))
        print(f"# queued {len(plan.chains)} chains ({plan.jobs} jobs)")
        return 0

    def work(self):
        records = self.records()
        for record in (r for r in records if r["state"] == "QUEUED"):
            chain, ctx = pickle.loads((self.folder / f"{record['id']}.pkl").read_bytes())
            with open(self.folder / f"{record['id']}.log", "w") as log:
                run_chain(chain, ctx, capture=True, report=lambda line: print(line, file=log))
            record["state"] = None  # done: it left the queue
        (self.folder / "tasks.json").write_text(json.dumps(records))


@pytest.fixture
def folder_queue():
    register_executor(FolderQueue)
    yield FolderQueue(None)
    del EXECUTORS[FolderQueue.NAME]


def sweep_command(env, *flags):  # noqa: F811
    out, queue = env["tmp"] / "out", env["tmp"] / "queue"
    sweep_file = write_sweep(env["tmp"] / "s.yaml", f"""\
        output: {out}
        folder_queue: {{folder: {queue}}}
        experiments:
          - {{protocol: base2new, datasets: [dtd, eurosat], seeds: [1], runs: [{{trainer: CoOp, cfg: c1}}]}}
        """)
    return [str(sweep_file), "--configs", str(env["configs"]), "--train-py", str(env["fake"]), *flags], out, queue


def run(argv, capsys):
    code = runner.main(argv)
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_a_third_executor_plans_launches_and_reports_through_the_interface(env, folder_queue, capsys,  # noqa: F811
                                                                          monkeypatch):
    argv, out, queue = sweep_command(env, "--executor", "folder_queue")
    folder_queue.folder = queue
    dirs = {(split, dataset): out / "base2new" / split / dataset / "shots_16" / "CoOp" / "c1" / "seed1"
            for split in ("train_base", "test_base", "test_new") for dataset in ("dtd", "eurosat")}

    assert run([*argv, "--dry-run"], capsys)[:2] == (0, ["# would queue 2 chains (6 jobs)"])
    assert not queue.exists()
    assert run(argv, capsys)[:2] == (0, ["# queued 2 chains (6 jobs)"])
    assert [(r["id"], r["chain"], r["state"]) for r in folder_queue.records()] == [
        (1, str(dirs["train_base", "dtd"]), "QUEUED"), (2, str(dirs["train_base", "eurosat"]), "QUEUED")]

    code, lines, _ = run(["status", *argv[:1], "--queue-folder", str(queue)], capsys)  # its flag, or its section
    assert code == 3 and lines[0] == f"PENDING   {dirs['train_base', 'dtd']}  (queued task 1 QUEUED)"
    assert lines[-1] == "=== sweep status: 0 finished, 0 running, 0 failed, 6 pending"
    assert not any("SLURM" in line for line in lines)
    assert run(argv, capsys)[:2] == (0, ["# not queued: 2 chains running or queued",
                                         "# would queue 0 chains (0 jobs)"])  # never launched twice

    monkeypatch.setenv("FAKE_FAIL", "test_new/eurosat")
    folder_queue.work()
    monkeypatch.delenv("FAKE_FAIL")
    code, lines, _ = run(["status", *argv[:1]], capsys)
    failed = [line for line in lines if line.startswith("FAILED")]
    assert code == 1 and failed == [f"FAILED    {dirs['test_new', 'eurosat']}  (stopped without a result)"]
    assert lines[-1] == "=== sweep status: 5 finished, 0 running, 1 failed, 0 pending"
    assert f"# FAILED (exit status 3): {dirs['test_new', 'eurosat']}" in (queue / "2.log").read_text()

    assert run(argv, capsys)[1] == ["# not queued: 1 chains failed (retry with --retry-failed)",
                                    "# not queued: 1 chains finished", "# would queue 0 chains (0 jobs)"]
    assert run([*argv, "--retry-failed"], capsys)[:2] == (0, ["# not queued: 1 chains finished",
                                                              "# queued 1 chains (3 jobs)"])
    assert folder_queue.records()[-1] == {"id": 3, "chain": str(dirs["train_base", "eurosat"]), "state": "QUEUED"}
    folder_queue.work()
    code, lines, _ = run(["status", *argv[:1]], capsys)
    assert code == 0 and lines[-1] == "=== sweep status: 6 finished, 0 running, 0 failed, 0 pending"
    calls = (dirs["test_new", "eurosat"] / "calls.txt").read_text().splitlines()
    assert len(calls) == 2 and len((dirs["train_base", "eurosat"] / "calls.txt").read_text().splitlines()) == 1


def test_a_task_that_left_the_queue_before_its_jobs_ran_is_a_failure_with_its_log(env, folder_queue,  # noqa: F811
                                                                                  capsys):
    argv, out, queue = sweep_command(env, "--executor", "folder_queue")
    folder_queue.folder = queue
    assert run(argv, capsys)[0] == 0
    records = folder_queue.records()
    (queue / "1.log").write_text("the node went away\n")
    (queue / "tasks.json").write_text(json.dumps([{**records[0], "state": None}, records[1]]))
    code, lines, _ = run(["status", *argv[:1]], capsys)
    train_dtd = out / "base2new" / "train_base" / "dtd" / "shots_16" / "CoOp" / "c1" / "seed1"
    assert code == 1 and lines[:2] == [
        f"FAILED    {train_dtd}  (queued task 1 ended before running it; log: {queue / '1.log'})",
        "          | the node went away"]
    assert sum(line.startswith("PENDING") for line in lines) == 5  # its evaluations wait; the other task is queued


def test_executor_flags_belong_to_their_executor(env, folder_queue, capsys):  # noqa: F811
    argv, out, queue = sweep_command(env, "--queue-folder", str(env["tmp"] / "q"))
    code, lines, err = run(argv, capsys)
    assert (code, lines) == (2, [])
    assert err == ("error: --queue-folder: flags of the folder_queue executor, not of --executor local (whose flags "
                   "are: --gpus, --workers)\n")
    code, _, err = run([*argv[:-2], "--executor", "folder_queue", "--workers", "2"], capsys)
    assert code == 2 and err.startswith("error: --workers: flags of the local executor, not of --executor "
                                        "folder_queue (whose flags are: --queue-folder)")
    assert not out.exists() and not queue.exists()


def test_an_unregistered_executor_is_refused_and_its_section_is_unknown(env, capsys):  # noqa: F811
    argv, _, _ = sweep_command(env, "--executor", "folder_queue")
    with pytest.raises(SystemExit) as stop:
        runner.main(argv)
    assert stop.value.code == 2 and "invalid choice: 'folder_queue'" in capsys.readouterr().err
    code, _, err = run(argv[:-2], capsys)
    assert code == 2 and "(unknown keys: ['folder_queue'])" in err
