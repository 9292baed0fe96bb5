"""Kill-safety, measured: SIGKILL or a full disk at every step of saving (first save, best-model save, pointer,
removal of a superseded resume point, config, curves, result) and at sampled training / validation / test batches;
re-running the same command must end with exactly the uninterrupted run's checkpoints and result, and no temporary
file. The harness (tests/fault_harness.py) forks one process per run from a parent that imported everything once, on
a toy set of 2 training images per class (3 steps an epoch: the same write and removal points, fewer training steps
to sample from), so this costs about a minute of CPU time, two runs at a time."""
import json
import subprocess
import sys

from tests.toy_data import make_toy_dataset


def test_every_interruption_resumes_to_the_uninterrupted_result(tmp_path):
    make_toy_dataset(str(tmp_path / "data"), per_class=(2, 2, 2))  # 3 training steps per epoch
    report_path = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "tests.fault_harness", "--data", str(tmp_path / "data"),
                    "--work", str(tmp_path / "work"), "--report", str(report_path), "--random-points", "1"],
                   check=True, timeout=900)
    report = json.loads(report_path.read_text())
    points = report["points"]

    # The scenarios exercise what they claim: a best-val run that stops early, a last-step run.
    assert report["baseline"]["best_val_early_stop"]["early_stop"]
    assert report["baseline"]["best_val_early_stop"]["epochs_trained"] == 2
    assert report["baseline"]["last_step"]["epochs_trained"] == 2

    labels = {(p["label"], p["action"]) for p in points}
    for needed in [("prompt_learner/model.pth.tar-1:after-write", "kill"),  # the very first save
                   ("prompt_learner/model.pth.tar-1:after-rename", "kill"),  # saved, pointer not yet written
                   ("prompt_learner/checkpoint:after-write", "kill"),
                   ("prompt_learner/model-best.pth.tar:after-write", "kill"),
                   ("prompt_learner/model-best.pth.tar:after-write", "enospc"),
                   ("prompt_learner/model.pth.tar-1:after-write", "enospc"),
                   ("remove:prompt_learner/model.pth.tar-1", "kill"),
                   ("config.yaml:after-write", "kill"), ("curves.csv:after-write", "kill"),
                   ("result.json:after-write", "kill"), ("result.json:after-write", "enospc"),
                   ("train-step", "kill"), ("val-batch", "kill"), ("test-batch", "kill")]:
        assert needed in labels, needed
    assert all(p["interrupted"] == ("signal 9" if p["action"] == "kill" else "exit 1") for p in points)

    failures = [p for p in points if p["rerun"] != "exit 0" or p["differences"] or p["temp_files"]]
    assert not failures, json.dumps(failures, indent=1)
    assert len(points) >= 60
