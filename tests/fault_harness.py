"""Kill-safety harness: run train.py, kill it (SIGKILL) or fail a write (full disk) at one chosen point, re-run the
same command, and compare the result with an uninterrupted run.

    python -m tests.fault_harness --data DIR --work DIR --report REPORT.json [--scenario NAME ...] [--random-points N]

Fault points are counted in the order a run reaches them:

* every step of every file write (``atomic_write``): ``<file>:before-write``, ``<file>:after-write`` (the temporary
  file is complete, not yet renamed), ``<file>:after-rename`` — checkpoints, the ``checkpoint`` pointer,
  ``model-best.pth.tar``, ``config.yaml``, ``curves.csv``, ``result.json``;
* the removal of a superseded epoch checkpoint: ``remove:<file>``;
* every training step (``train-step``) and every evaluated batch (``val-batch`` / ``test-batch``).

A census run records the sequence. Then, for every write/remove point and a fixed-seed sample of the step/batch
points, a child process runs the command with the fault injected, and a second child runs the unchanged command in
the same folder. Full-disk faults (``OSError(ENOSPC)`` raised while the temporary file is written) are injected at
every ``after-write`` point. The final checkpoints (weights, optimizer and scheduler state, epoch, val result, run
state), ``result.json`` metrics and ``curves.csv`` must equal the uninterrupted run's, and no temporary file may
remain. The parent imports torch but computes nothing; each run is a fork, so no interpreter start-up and no import
(tests/warm_python.py's ``preload``: tensorboard's writer and the tokenizer too) is paid per run.
"""
import argparse
import errno
import json
import os
import random
import re
import signal
import sys
from pathlib import Path

SCENARIOS = {
    # Dassl's default: last-step model, only the last checkpoint kept (exercises the first save, the pointer, the
    # removal of superseded resume points).
    "last_step": ["OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.01"],
    # BMIP's recipe: per-epoch validation, model-best, early stopping (a tiny LR keeps val accuracy flat, so the run
    # stops after epoch 2 of 4 with patience 1).
    "best_val_early_stop": ["OPTIM.MAX_EPOCH", "4", "OPTIM.LR", "1e-6", "TEST.FINAL_MODEL", "best_val",
                            "TRAIN.EARLY_STOPPING", "True", "TRAIN.PATIENT_COUNT", "1",
                            "TRAIN.EARLY_STOPPING_MIN_EPOCHS", "0"],
}
WRITE_STEPS = ("before-write", "after-write", "after-rename")


class InjectedFault:
    """Counts fault points; at the chosen index kills the process or raises a full-disk error."""

    def __init__(self, index=None, action="kill", census_path=None):
        self.index, self.action, self.census_path, self.count = index, action, census_path, 0

    def point(self, label):
        if self.census_path is not None:  # the census runs in a forked child: record to a file
            with open(self.census_path, "a") as f:
                f.write(label + "\n")
        if self.count == self.index:
            if self.action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        self.count += 1


def install(fault, output_dir):
    """Patch the write, remove, training-step and inference paths of the engine to report fault points."""
    import dassl.engine.run_dir as run_dir
    import dassl.utils as utils
    import dassl.utils.curves as curves
    import dassl.utils.tools as tools
    import dassl.utils.torchtools as torchtools
    from dassl.engine.trainer import SimpleTrainer
    from trainers.base import CLIPPromptTrainer

    original_atomic_write, original_remove = tools.atomic_write, os.remove

    def name(path):
        return os.path.relpath(path, output_dir)

    def atomic_write(fpath, write_fn):
        label = name(fpath)
        fault.point(f"{label}:before-write")

        def write(tmp_path):
            write_fn(tmp_path)
            fault.point(f"{label}:after-write")

        original_atomic_write(fpath, write)
        fault.point(f"{label}:after-rename")

    for module in (tools, torchtools, curves, run_dir, utils):
        module.atomic_write = atomic_write

    def remove(path, *args, **kwargs):
        if str(path).startswith(str(output_dir)) and ".pth.tar" in str(path):
            fault.point(f"remove:{name(path)}")
        return original_remove(path, *args, **kwargs)

    os.remove = remove

    original_step = CLIPPromptTrainer.forward_backward
    original_inference = CLIPPromptTrainer.model_inference
    original_test = SimpleTrainer.test
    current = {"split": "test"}

    def forward_backward(self, batch):
        fault.point("train-step")
        return original_step(self, batch)

    def model_inference(self, image):
        fault.point(f"{current['split']}-batch")
        return original_inference(self, image)

    def test(self, split=None):
        current["split"] = "val" if split == "val" and self.val_loader is not None else "test"
        return original_test(self, split)

    CLIPPromptTrainer.forward_backward = forward_backward
    CLIPPromptTrainer.model_inference = model_inference
    SimpleTrainer.test = test


def run_child(argv, output_dir, fault, log_path):
    """Fork; the child runs ``runs.run.main(argv)`` (what train.py runs) with ``fault`` installed. Returns the child's
    exit status or signal."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            import torch

            torch.set_num_threads(1)
            install(fault, output_dir)
            from runs.run import main

            main(argv)
            code = 0
        except BaseException as err:  # noqa: BLE001 (the child reports and exits; the parent judges)
            print(f"child failed: {type(err).__name__}: {err}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def command(data, output_dir, extra):
    from tests.toy_data import toy_opts

    return ["--root", str(data), "--seed", "1", "--trainer", "CoOp", "--output-dir", str(output_dir),
            *toy_opts(str(data), epochs=3), "TRAINER.COOP.N_CTX", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            *extra]


def first_and_last_of_each_kind(census, indices):
    """The first and last occurrence of each kind of point (epoch numbers ignored), in run order."""
    kinds = {}
    for i in indices:
        kinds.setdefault(re.sub(r"\d+", "N", census[i]), []).append(i)
    return sorted({i for occurrences in kinds.values() for i in (occurrences[0], occurrences[-1])})


def final_state(output_dir):
    """Everything a finished run leaves that must not depend on interruptions, as comparable Python values."""
    import torch

    state = {"files": sorted(str(p.relative_to(output_dir)) for p in Path(output_dir).rglob("*")
                             if p.is_file() and not p.name.startswith("log.txt") and "tensorboard" not in p.parts
                             and not p.name.endswith(".superseded") and p.name != ".lock")}
    for path in sorted(Path(output_dir).glob("*/*.pth.tar*")):
        state[str(path.relative_to(output_dir))] = torch.load(path, weights_only=True)
    result = json.loads((Path(output_dir) / "result.json").read_text())
    state["result"] = {k: result[k] for k in ("metrics", "epochs_trained", "split", "mode")}
    state["curves"] = (Path(output_dir) / "curves.csv").read_text()
    return state


def same(a, b):
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def differences(a, b):
    return sorted(k for k in set(a) | set(b) if k not in a or k not in b or not same(a[k], b[k]))


def interrupt_and_rerun(argv, run_dir, point, baseline):
    """Run with the fault injected, run again unchanged, compare with the uninterrupted run; returns ``point`` + outcome."""
    log = run_dir.with_suffix(".log")
    first = run_child(argv, run_dir, InjectedFault(point["index"], point["action"]), log)
    second = run_child(argv, run_dir, InjectedFault(), log)
    diff = differences(baseline, final_state(run_dir)) if second == "exit 0" else ["(re-run failed)"]
    return dict(point, interrupted=first, rerun=second, differences=diff,
                temp_files=sorted(str(p) for p in run_dir.rglob("*.tmp-*")))


def run_parallel(jobs, work, n_parallel):
    """Run ``work(*job)`` for every job in up to ``n_parallel`` forked processes; return the results in order."""
    results, running, queue = {}, {}, list(enumerate(jobs))
    while queue or running:
        while queue and len(running) < n_parallel:
            position, job = queue.pop(0)
            out_path = job[0].with_suffix(".json")
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    out_path.write_text(json.dumps(work(*job)))
                    code = 0
                finally:
                    os._exit(code)
            running[pid] = (position, out_path)
        pid, _ = os.wait()
        position, out_path = running.pop(pid)
        results[position] = json.loads(out_path.read_text()) if out_path.exists() else {"error": str(out_path)}
    return [results[i] for i in range(len(jobs))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--scenario", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--random-points", type=int, default=2, help="sampled points per step/batch kind")
    parser.add_argument("--jobs", type=int, default=2, help="interruptions tested in parallel")
    parser.add_argument("--every-occurrence", action="store_true",
                        help="inject at every write/remove point (default: the first and the last occurrence of "
                             "each kind of step, e.g. the first save and the final save of a checkpoint)")
    args = parser.parse_args(argv)

    from tests.warm_python import preload

    preload()  # what every run would otherwise import for itself, once, before forking; compute nothing here

    args.work.mkdir(parents=True, exist_ok=True)

    report = {"points": [], "baseline": {}}
    for scenario in args.scenario:
        extra = SCENARIOS[scenario]
        base_dir = args.work / scenario / "uninterrupted"
        census_path = args.work / f"{scenario}-census.txt"
        status = run_child(command(args.data, base_dir, extra), base_dir, InjectedFault(census_path=census_path),
                           args.work / f"{scenario}-baseline.log")
        if status != "exit 0":
            raise SystemExit(f"{scenario}: the uninterrupted run failed ({status}); see {args.work}")
        census = census_path.read_text().splitlines()
        baseline = final_state(base_dir)
        log_text = "".join(p.read_text() for p in sorted(base_dir.glob("log.txt*")))
        report["baseline"][scenario] = {"points": len(census), "early_stop": "Early stopping after" in log_text,
                                        "epochs_trained": baseline["result"]["epochs_trained"]}

        rng = random.Random(0)
        writes = [i for i, label in enumerate(census) if ":" in label]
        if not args.every_occurrence:
            writes = first_and_last_of_each_kind(census, writes)
        chosen = [(i, "kill") for i in writes]
        chosen += [(i, "enospc") for i in writes if census[i].endswith(":after-write")]
        for kind in ("train-step", "val-batch", "test-batch"):
            indices = [i for i, label in enumerate(census) if label == kind]
            chosen += [(i, "kill") for i in sorted(rng.sample(indices, min(args.random_points, len(indices))))]

        (args.work / scenario).mkdir(exist_ok=True)
        jobs = []
        for n, (index, action) in enumerate(chosen):
            run_dir = args.work / scenario / f"p{n:03d}"
            jobs.append((run_dir, {"scenario": scenario, "index": index, "label": census[index], "action": action}))
        report["points"] += run_parallel(jobs, lambda run_dir, point: interrupt_and_rerun(
            command(args.data, run_dir, extra), run_dir, point, baseline), args.jobs)
    args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
