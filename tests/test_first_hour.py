"""What a new user meets in the first hour, from a fresh clone: reusing an output folder, bad config values, a full
disk, the documented commands of the micro world, the analysis tools, the benchmark report and the result tables.
Bad input ends in one line on stderr naming the problem and the fix, exit status 2, with nothing written."""
import errno
import os
import subprocess
import sys

import pytest
import yaml

from dassl.engine.run_dir import read_result
from runs.checks import check_config
from runs.config import build_parser, setup_cfg
from runs.run import cli
from tests.toy_data import toy_opts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def toy_args(data_root, out, seed=1, trainer="CoOp", epochs=1, flags=(), extra=()):
    return ["--root", data_root, "--seed", str(seed), "--trainer", trainer, "--output-dir", str(out), *flags,
            *toy_opts(data_root, epochs=epochs), *extra]


def one_error_line(capsys):
    """The single stderr line of a failed command."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def stored_seed(out):
    with open(os.path.join(out, "config.yaml")) as f:
        return yaml.safe_load(f)["SEED"]


# -- an output folder whose run saved nothing takes a new config; one with checkpoints does not ---------------------

def fail_in_epoch(monkeypatch, failing_epoch):
    """Make training raise in the first step of epoch ``failing_epoch`` (1-based), as a kill would stop it."""
    from trainers.base import CLIPPromptTrainer

    original = CLIPPromptTrainer.forward_backward

    def step(self, batch):
        if self.epoch + 1 == failing_epoch:
            raise RuntimeError("killed")
        return original(self, batch)

    monkeypatch.setattr(CLIPPromptTrainer, "forward_backward", step)


def test_a_folder_whose_run_saved_nothing_takes_a_new_config(data_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()  # a folder that existed before the run stays after it fails
    fail_in_epoch(monkeypatch, 1)
    assert cli(toy_args(data_root, out, seed=1)) == 1
    assert stored_seed(out) == 1 and not (out / "prompt_learner").exists()  # the config of a run that saved nothing
    monkeypatch.undo()
    capsys.readouterr()
    assert cli(toy_args(data_root, out, seed=5)) == 0
    assert stored_seed(out) == 5  # the stale config.yaml is replaced
    assert (out / "result.json").is_file()
    assert "holds another run" not in capsys.readouterr().err


def test_a_folder_with_checkpoints_refuses_a_new_config(data_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    fail_in_epoch(monkeypatch, 2)
    assert cli(toy_args(data_root, out, seed=1, epochs=2)) == 1
    assert (out / "prompt_learner" / "model.pth.tar-1").is_file()
    monkeypatch.undo()
    capsys.readouterr()
    assert cli(toy_args(data_root, out, seed=5, epochs=2)) == 2
    line = one_error_line(capsys)
    assert f"{out} holds another run: its config differs in SEED: 1 -> 5." in line
    assert "--accept-config-change" in line and stored_seed(out) == 1


def test_a_change_of_trainer_is_named_instead_of_its_keys(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(toy_args(data_root, out, extra=["TRAINER.COOP.N_CTX", "2"])) == 0
    capsys.readouterr()
    assert cli(toy_args(data_root, out, trainer="MaPLe", extra=["TRAINER.MAPLE.PROMPT_DEPTH", "1"])) == 2
    line = one_error_line(capsys)
    assert f"{out} holds another run: it holds a CoOp run, this is a MaPLe run. Use another --output-dir" in line
    assert "TRAINER.COOP" not in line and "TRAINER.MAPLE" not in line


def test_describe_mismatch_names_the_trainer_and_the_dataset_that_changed():
    from dassl.engine.run_dir import describe_mismatch

    assert describe_mismatch([("SEED", 1, 2)]) == "its config differs in SEED: 1 -> 2"
    assert describe_mismatch([("DATASET.NAME", "MicroSketch", "MicroClean"), ("SEED", 1, 2)]) == \
        "it holds a run on MicroSketch, this is a run on MicroClean"
    assert describe_mismatch([("DATASET.NAME", "A", "B"), ("TRAINER.COOP.N_CTX", 4, "(absent)"),
                              ("TRAINER.NAME", "CoOp", "BMIP")]) == "it holds a CoOp run on A, this is a BMIP run on B"


# -- bad config values: refused before anything runs, naming the key and its range ----------------------------------

BAD_VALUES = [  # (trainer, KEY VALUE pairs, what the line says)
    ("CoOp", ["OPTIM.MAX_EPOCH", "0"], "OPTIM.MAX_EPOCH = 0 is out of range: use an integer >= 1"),
    ("CoOp", ["OPTIM.MAX_EPOCH", "-3"], "OPTIM.MAX_EPOCH = -3 is out of range: use an integer >= 1"),
    ("CoOp", ["OPTIM.WARMUP_CONS_LR", "1e38"], "OPTIM.WARMUP_CONS_LR = 1e+38 is not a usable learning rate: use a "
                                               "number between 0 and 10"),
    ("CoOp", ["OPTIM.NAME", "adam", "OPTIM.WARMUP_MIN_LR", "-0.5"], "OPTIM.WARMUP_MIN_LR = -0.5 is not a usable"),
    ("CoOp", ["OPTIM.STAGED_LR", "True", "OPTIM.BASE_LR_MULT", "1e6"],
     "OPTIM.LR * OPTIM.BASE_LR_MULT = 2000.0 is not a usable learning rate"),
    ("CoOp", ["TRAIN.PATIENT_COUNT", "-1"], "TRAIN.PATIENT_COUNT = -1 is out of range: use an integer >= 0"),
    ("CoOp", ["TRAIN.EARLY_STOPPING_MIN_EPOCHS", "-1"], "TRAIN.EARLY_STOPPING_MIN_EPOCHS = -1 is out of range"),
    ("CoOp", ["TRAIN.BEST_VAL_MIN_DELTA", "-0.5"], "TRAIN.BEST_VAL_MIN_DELTA = -0.5 is out of range: use a number "
                                                   ">= 0.0"),
    ("CoOp", ["TRAINER.COOP.N_CTX", "0"], "TRAINER.COOP.N_CTX = 0 is out of range: use an integer >= 1 "
                                          "(learnable context tokens)"),
    ("CoCoOp", ["TRAINER.COCOOP.N_CTX", "0"], "TRAINER.COCOOP.N_CTX = 0 is out of range: use an integer >= 1"),
    ("IVLP", ["TRAINER.IVLP.N_CTX_TEXT", "-1"], "TRAINER.IVLP.N_CTX_TEXT = -1 is out of range: use an integer >= 0 "
                                                "(text prompt tokens per layer; 0 switches text prompts off)"),
    ("IVLP", ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "-1"], "TRAINER.IVLP.PROMPT_DEPTH_TEXT = -1 is out of range"),
    ("IVLP", ["TRAINER.IVLP.N_CTX_VISION", "-2"], "TRAINER.IVLP.N_CTX_VISION = -2 is out of range"),
    ("IVLP", ["TRAINER.IVLP.PROMPT_DEPTH_VISION", "-1"], "TRAINER.IVLP.PROMPT_DEPTH_VISION = -1 is out of range"),
    ("IVLP", ["TRAINER.IVLP.N_CTX_TEXT", "0", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "0"],
     "TRAINER.IVLP switches off the prompts of both sides"),
    ("VPT", ["TRAINER.VPT.N_CTX_VISION", "0"], "TRAINER.VPT.N_CTX_VISION = 0 is out of range: use an integer >= 1"),
    ("VPT", ["TRAINER.VPT.PROMPT_DEPTH_VISION", "0"], "TRAINER.VPT.PROMPT_DEPTH_VISION = 0 is out of range"),
    ("MaPLe", ["TRAINER.MAPLE.N_CTX", "0"], "TRAINER.MAPLE.N_CTX = 0 is out of range: use an integer >= 1"),
    ("MaPLe", ["TRAINER.MAPLE.PROMPT_DEPTH", "0"], "TRAINER.MAPLE.PROMPT_DEPTH = 0 is out of range"),
    ("BMIP", ["TRAINER.BMIP.N_CTX", "0"], "TRAINER.BMIP.N_CTX = 0 is out of range: use an integer >= 1"),
    ("BMIP", ["TRAINER.BMIP.PROMPT_DEPTH", "-1"], "TRAINER.BMIP.PROMPT_DEPTH = -1 is out of range"),
    ("PromptSRC", ["TRAINER.PROMPTSRC.N_CTX_TEXT", "0"], "TRAINER.PROMPTSRC.N_CTX_TEXT = 0 is out of range"),
    ("PromptSRC", ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "0"], "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 0 is out of"),
    ("PromptSRC", ["TRAINER.PROMPTSRC.N_CTX_VISION", "-1"], "TRAINER.PROMPTSRC.N_CTX_VISION = -1 is out of range: "
                                                            "use an integer >= 0"),
    ("PromptSRC", ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "-1"], "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = -1 is"),
    ("PromptSRC", ["TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT", "-1"], "TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = -1 is out of"),
    ("PromptSRC_BMIP", ["TRAINER.PROMPTSRC.PROMPT_DEPTH", "0"], "TRAINER.PROMPTSRC.PROMPT_DEPTH = 0 is out of range"),
    ("LinearProbeCLIP", ["TRAINER.LINEAR_PROBE.C", "-1.0"], "TRAINER.LINEAR_PROBE.C = -1.0 is out of range: use a "
                                                            "number >= 0.0"),
    ("LinearProbeCLIP", ["TRAINER.LINEAR_PROBE.SEARCH_STEPS", "-1"], "TRAINER.LINEAR_PROBE.SEARCH_STEPS = -1 is out"),
    ("LinearProbeCLIP", ["TRAINER.LINEAR_PROBE.MAX_ITER", "0"], "TRAINER.LINEAR_PROBE.MAX_ITER = 0 is out of range"),
]


@pytest.mark.parametrize("trainer, extra, expected", BAD_VALUES, ids=[" ".join(c[1][-2:]) for c in BAD_VALUES])
def test_a_bad_config_value_is_refused_before_anything_is_written(trainer, extra, expected, data_root, tmp_path,
                                                                   capsys):
    out = tmp_path / "out"
    assert cli(toy_args(data_root, out, trainer=trainer, extra=extra)) == 2
    assert expected in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("trainer, extra", [
    ("IVLP", ["TRAINER.IVLP.N_CTX_VISION", "0", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "0"]),  # language-only
    ("IVLP", ["TRAINER.IVLP.N_CTX_TEXT", "0"]),  # vision-only
    ("PromptSRC", ["TRAINER.PROMPTSRC.N_CTX_VISION", "0", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "0"]),
    ("CoOp", ["OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.0", "TRAIN.PATIENT_COUNT", "0"]),
])
def test_zero_where_it_means_something_is_accepted(trainer, extra, data_root, tmp_path):
    args = build_parser().parse_args(toy_args(data_root, tmp_path / "out", trainer=trainer, extra=extra))
    check_config(setup_cfg(args), args)  # raises on a refused value


# -- a full disk: one line, nothing half-written or left behind, the run resumable ----------------------------------

FULL_DISK_FIX = "; free space and re-run the same command to resume"


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_while_a_checkpoint_is_written_is_one_line_and_the_run_resumes(data_root, tmp_path, monkeypatch,
                                                                                    capsys):
    import builtins

    import dassl.utils.torchtools as torchtools

    def epoch_2_hits_a_full_disk(path, mode="r"):  # torch's real writer meets ENOSPC, as on a full device
        return builtins.open("/dev/full" if "model.pth.tar-2" in str(path) else path, mode)

    out = tmp_path / "run"
    monkeypatch.setattr(torchtools, "open", epoch_2_hits_a_full_disk, raising=False)
    assert cli(toy_args(data_root, out, epochs=2)) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"error: no space left on the device while writing "
                           f"{out / 'prompt_learner' / 'model.pth.tar-2'}{FULL_DISK_FIX}")
    assert sorted(os.listdir(out / "prompt_learner")) == ["checkpoint", "model.pth.tar-1"]  # no partial file
    monkeypatch.undo()
    assert cli(toy_args(data_root, out, epochs=2)) == 0
    assert "Previous epoch: 1" in capsys.readouterr().out  # resumed from the last complete checkpoint
    assert read_result(str(out))["epochs_trained"] == 2


def test_a_full_disk_at_the_first_write_leaves_nothing_behind(data_root, tmp_path, monkeypatch, capsys):
    import dassl.engine.run_dir as run_dir
    import dassl.utils.tools

    out = tmp_path / "new" / "parents" / "run"
    monkeypatch.setattr(run_dir, "_record_holder", disk_full)  # the lock file's first line
    assert cli(toy_args(data_root, out)) == 1
    assert one_error_line(capsys).startswith(f"error: no space left on the device while writing {out / '.lock'}"
                                             f"{FULL_DISK_FIX}")
    assert os.listdir(tmp_path) == []  # neither the folder nor the parents it created

    monkeypatch.undo()
    real_atomic_write = dassl.utils.tools.atomic_write

    def config_hits_a_full_disk(fpath, write_fn):
        return real_atomic_write(fpath, disk_full if fpath.endswith("config.yaml") else write_fn)

    monkeypatch.setattr(dassl.utils.tools, "atomic_write", config_hits_a_full_disk)
    (tmp_path / "new").mkdir()  # a parent that existed before stays
    assert cli(toy_args(data_root, out)) == 1
    assert one_error_line(capsys).startswith(f"error: no space left on the device while writing "
                                             f"{out / 'config.yaml'}{FULL_DISK_FIX}")
    assert os.listdir(tmp_path) == ["new"] and os.listdir(tmp_path / "new") == []


def test_a_full_disk_while_the_micro_world_is_generated_leaves_no_half_dataset(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from microworld import benchmark

    saved = []

    def save_until_full(image, path, *args, **kwargs):
        if len(saved) == 5:
            disk_full()
        saved.append(path)
        return real_save(image, path, *args, **kwargs)

    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", save_until_full)
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    args = toy_args(str(data), out, extra=["DATASET.NAME", "MicroSketch"])
    assert cli(args) == 1
    images = data / "micro_world" / benchmark.TASKS_BY_NAME["MicroSketch"].folder / "images"
    assert one_error_line(capsys).startswith(f"error: no space left on the device while writing {images}"
                                             f"{FULL_DISK_FIX}")
    assert len(saved) == 5 and os.listdir(images.parent) == []  # the staging folder is gone
    assert not out.exists()


# -- the analysis tools: --help and argument errors at once, bad input exit 2 --------------------------------------

ANALYSIS_TOOLS = ["analysis.gates", "analysis.interpret_prompt", "analysis.draw"]


@pytest.mark.parametrize("tool", ANALYSIS_TOOLS)
def test_analysis_help_answers_at_once(tool):
    done = subprocess.run([sys.executable, "-m", tool, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "--model-dir" in done.stdout
    script = (f"import runpy, sys, time; sys.argv = ['{tool}', '--help']; start = time.perf_counter()\n"
              f"try: runpy.run_module('{tool}', run_name='__main__')\n"
              "except SystemExit: pass\n"
              "print(round(time.perf_counter() - start, 3), [m for m in ('torch', 'clip') if m in sys.modules])")
    timed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    seconds, loaded = timed.stdout.strip().splitlines()[-1].split(" ", 1)
    assert loaded == "[]" and float(seconds) < 3.0  # ~0.03 s of imports: no torch, no CLIP (which take seconds)


NOT_A_RUN = "error: --model-dir no/such/run is not a directory (the training run's --output-dir)"


@pytest.mark.parametrize("argv, expected", [
    (["analysis.gates", "--model-dir", "no/such/run"], NOT_A_RUN),
    (["analysis.gates"], "error: pass --model-dir (the training run's --output-dir) to load the trained model"),
    (["analysis.interpret_prompt", "--topk", "0"], "error: --topk must be >= 1, got 0"),
    (["analysis.draw", "--model-dir", "no/such/run"], NOT_A_RUN),
])
def test_analysis_bad_input_is_one_line_and_exit_2_without_torch(argv, expected):
    script = (f"import runpy, sys; sys.argv = {argv!r}\n"
              "try: runpy.run_module(sys.argv[0], run_name='__main__')\n"
              "except SystemExit as exit_: print(exit_.code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["2", "False"] and done.stderr.splitlines() == [expected]
    command = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert command.returncode == 2 and command.stderr.splitlines() == [expected]


# -- the benchmark report of a missing or foreign file --------------------------------------------------------------

def test_the_benchmark_report_names_a_missing_file_and_the_saved_runs_beside_it(tmp_path, capsys):
    import json

    from benchmarks import report

    folder = tmp_path / "benchmark"
    folder.mkdir()
    full, quick = folder / "bench_trainers.json", folder / "bench_trainers_quick.json"
    assert report.main([str(full)]) == 2
    assert one_error_line(capsys) == (f"error: {full} does not exist: write it with python -m "
                                      "benchmarks.bench_trainers (--quick writes "
                                      "output/benchmark/bench_trainers_quick.json)")
    quick.write_text("{not json")
    assert report.main([str(quick)]) == 2
    assert one_error_line(capsys).startswith(f"error: {quick} is not a run saved by benchmarks.bench_trainers "
                                             "(JSONDecodeError: ")
    quick.write_text(json.dumps({"settings": {"large_only": True, "trainers": []}, "measurements": []}))
    done = subprocess.run([sys.executable, "-m", "benchmarks.report", str(full)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # the documented command after --quick
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"error: {full} does not exist: {folder} holds bench_trainers_quick.json: e.g. python -m benchmarks.report "
        f"{quick}"]
    assert report.main([str(quick)]) == 0  # the file it names is read


# -- result tables after the main job: `python scripts/results.py output` -------------------------------------------

def test_results_of_output_read_the_one_tree_below_it(tmp_path):
    from tests.test_results_tables import b2n

    tree = tmp_path / "output" / "micro_benchmark"  # where the main job puts its 115 runs
    for split, accuracy in (("train_base", 60.0), ("test_base", 61.0), ("test_new", 50.0)):
        b2n(tree, split, "micro_sketch", "BMIP", "micro", 1, accuracy)
    done = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "results.py"), "output", "--no-plots"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # as the README writes it
    assert done.returncode == 0, done.stderr
    assert "reading the runs of output/micro_benchmark (output holds no runs itself)" in done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| BMIP"))
    assert "| 61.00 | 50.00 | 54.95 |" in row  # Base, Novel, HM = 2 * 61 * 50 / 111
    assert (tree / "results" / "results.md").read_text().strip() in done.stdout


def test_results_of_a_folder_with_several_trees_names_them(tmp_path, capsys):
    from results.report import main as results_main
    from tests.test_results_tables import b2n

    for name in ("micro", "micro_benchmark"):
        b2n(tmp_path / "output" / name, "test_base", "micro_sketch", "CoOp", "micro", 1, 50.0)
    assert results_main([str(tmp_path / "output"), "--no-plots"]) == 2
    assert one_error_line(capsys) == (
        f"error: {tmp_path / 'output'} holds no runs itself but 2 output trees: {tmp_path / 'output' / 'micro'}, "
        f"{tmp_path / 'output' / 'micro_benchmark'}; pass one of them, e.g. python scripts/results.py "
        f"{tmp_path / 'output' / 'micro'}")
    b2n(tmp_path / "output", "test_base", "dtd", "CoOp", "c1", 1, 70.0)  # now output is a tree itself
    assert results_main([str(tmp_path / "output"), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert f"note: {tmp_path / 'output' / 'micro_benchmark'} holds other runs: python scripts/results.py" in err
