"""Every bad input of train.py ends in one actionable line on stderr, exit status 2, before anything is written
(the table in docs/ENGINE.md, "Bad input", lists the same cases)."""
import os
import shutil
import subprocess
import sys
import urllib.error

import pytest
import torch

from runs.checks import check_config
from runs.config import build_parser, setup_cfg
from runs.run import cli
from tests.toy_data import toy_opts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """A finished 1-epoch CoOp run (N_CTX 4) to evaluate."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert cli(toy_args(data_root, out, extra=["TRAINER.COOP.N_CTX", "4"])) == 0
    return str(out)


def toy_args(data_root, out, flags=(), extra=(), trainer="CoOp"):
    return ["--root", data_root, "--seed", "1", "--trainer", trainer, "--output-dir", str(out), *flags,
            *toy_opts(data_root, epochs=1), *extra]


def fails(argv, capsys, out=None):
    """Run the CLI; return its one stderr line after checking exit status 2 and that nothing was written."""
    code = cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    if out is not None:
        assert not os.path.exists(out), os.listdir(out)
    return err[0]


def test_argument_errors_answer_without_importing_torch(tmp_path):
    script = ("import runpy, sys\n"  # python train.py ..., then: its exit status, and whether torch was imported
              "sys.argv = ['train.py', '--trainer', 'CoOp', 'OPTIM.LR', '0.1', '--eval-only']\n"
              "try:\n    runpy.run_path('train.py', run_name='__main__')\n"
              "except SystemExit as done:\n    print(done.code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["2", "False"]
    assert done.stderr.strip() == ("error: --eval-only comes after the KEY VALUE options: put every --flag before "
                                   "the first KEY VALUE pair (here before OPTIM.LR)")
    helped = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0 and "--accept-config-change" in helped.stdout


def loaded_after(code, modules):
    """Which of ``modules`` a fresh interpreter has imported after running ``code`` in the repository root."""
    script = f"import sys; {code}; print(sorted(m for m in {tuple(modules)!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_config_errors_need_only_torch():
    """Building the config (every trainer's and dataset's keys) imports torch but none of the slow packages that
    only model building, data loading or the linear probe need: a config error answers in about 2 s."""
    code = "from runs.config import build_parser, setup_cfg; setup_cfg(build_parser().parse_args(['--trainer', 'CoOp']))"
    assert loaded_after(code, ["torchvision", "clip", "sklearn", "matplotlib", "tensorboard"]) == "[]"
    assert loaded_after(code, ["torch"]) == "['torch']"  # the check itself sees imports


def test_result_readers_and_local_runners_import_neither_torch_nor_submitit():
    """parse_test_res.py, results, sweep status and local sweeps read output folders with the standard library (and
    run train.py as a child): they answer in a fraction of a second, and submitit is needed only for SLURM."""
    code = ("import parse_test_res, scripts.results, scripts.sweep, sweeps.status, scripts.micro_benchmark, "
            "scripts.run_protocol")
    assert loaded_after(code, ["torch", "submitit"]) == "[]"


@pytest.mark.parametrize("case, expected", [
    (lambda d, o, t: ["--root", d, "--output-dir", o, "OPTIM.LR"], "must be KEY VALUE pairs"),
    (lambda d, o, t: ["--root", d, "--output-dir", o, "optim.lr", "0.1"], "is not a config key"),
    (lambda d, o, t: ["--root", os.path.join(d, "nope"), "--output-dir", o], "--root"),
    (lambda d, o, t: ["--root", d, "--output-dir", o, "--config-file", "configs/trainers/CoOp/nope.yaml"],
     "--config-file configs/trainers/CoOp/nope.yaml does not exist"),
    (lambda d, o, t: toy_args(d, o, flags=["--best"]), "--best applies to evaluations: add --eval-only"),
    (lambda d, o, t: toy_args(d, o, flags=["--eval-only", "--model-dir", os.path.join(d, "nope")]),
     "--model-dir"),
    (lambda d, o, t: toy_args(d, o, flags=["--eval-only", "--model-dir", t, "--load-epoch", "7"]),
     "holds no model.pth.tar-7 (it holds ['model.pth.tar-1'])"),
])
def test_errors_seen_in_the_arguments(case, expected, data_root, trained, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert expected in fails(case(data_root, out, trained), capsys, out)


@pytest.mark.parametrize("extra, flags, expected", [
    (["TRAINER.COOP.N_CTXX", "4"], [], "Non-existent key: TRAINER.COOP.N_CTXX (in the command-line "
                                       "options). Did you mean TRAINER.COOP.N_CTX"),
    (["OPTIM.LR", "1e9"], [], "OPTIM.LR = 1000000000.0 is not a usable learning rate"),
    ([], ["--eval-only"], "--eval-only needs --model-dir"),
    (["DATASET.IMAGE_FOLDER.DIR", "absent"], [], "ImageFolder: folder"),
    (["MODEL.BACKBONE.NAME", "ViT-B/17"], [], "Unknown CLIP backbone 'ViT-B/17'"),
])
def test_errors_seen_in_the_config(extra, flags, expected, data_root, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert expected in fails(toy_args(data_root, out, flags=flags, extra=extra), capsys, out)


def test_a_value_outside_a_methods_choices(data_root, tmp_path, capsys):
    out = str(tmp_path / "out")
    line = fails(toy_args(data_root, out, trainer="BITP", extra=["TRAINER.BITP.CONNECT_METHOD", "concat"]), capsys, out)
    assert line == "error: TRAINER.BITP.CONNECT_METHOD is 'concat'; use one of add, atten, joint, exchange."


DEPTH = "; use 1..12 for this backbone."  # tiny-ViT: 12 text and 12 vision layers
OPEN_CLIP_RANDOM = ["MODEL.BACKBONE.FAMILY", "open_clip", "MODEL.BACKBONE.NAME", "ViT-B-32",
                    "MODEL.BACKBONE.PRETRAINED_TAG", "random"]


@pytest.mark.parametrize("trainer, extra, expected", [
    ("MaPLe", ["TRAINER.MAPLE.PROMPT_DEPTH", "13"], "TRAINER.MAPLE.PROMPT_DEPTH = 13" + DEPTH),
    ("MaPLe", [*OPEN_CLIP_RANDOM, "TRAINER.MAPLE.PROMPT_DEPTH", "13"], "TRAINER.MAPLE.PROMPT_DEPTH = 13" + DEPTH),
    ("BMIP", ["TRAINER.BMIP.PROMPT_DEPTH", "13"], "TRAINER.BMIP.PROMPT_DEPTH = 13" + DEPTH),
    ("BITP", ["TRAINER.BITP.PROMPT_DEPTH", "13"], "TRAINER.BITP.PROMPT_DEPTH = 13" + DEPTH),
    ("UPT", ["TRAINER.UPT.PROMPT_DEPTH", "13"], "TRAINER.UPT.PROMPT_DEPTH = 13" + DEPTH),
    ("UPT", ["TRAINER.UPT.SETTINGS_FROM_BITP", "True", "TRAINER.BITP.PROMPT_DEPTH", "13"],
     "TRAINER.BITP.PROMPT_DEPTH = 13" + DEPTH),
    ("CoPrompt", ["TRAINER.COPROMPT.PROMPT_DEPTH", "13"], "TRAINER.COPROMPT.PROMPT_DEPTH = 13" + DEPTH),
    ("CoPrompt_BMIP", ["TRAINER.COPROMPT.PROMPT_DEPTH", "13"], "TRAINER.COPROMPT.PROMPT_DEPTH = 13" + DEPTH),
    ("PromptSRC_BMIP", ["TRAINER.PROMPTSRC.PROMPT_DEPTH", "13"],  # (its warning on the ignored depths waits)
     "TRAINER.PROMPTSRC.PROMPT_DEPTH = 13" + DEPTH),
    ("PromptSRC", ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "13"], "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 13" + DEPTH),
    ("PromptSRC", ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "13"],
     "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = 13; use 0..12 for this backbone."),
    ("IVLP", ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "13"], "TRAINER.IVLP.PROMPT_DEPTH_TEXT = 13; use 0..12 for this "
                                                       "backbone."),
    ("IVLP", ["TRAINER.IVLP.PROMPT_DEPTH_VISION", "13"], "TRAINER.IVLP.PROMPT_DEPTH_VISION = 13; use 0..12 for this "
                                                         "backbone."),
    ("VPT", ["TRAINER.VPT.PROMPT_DEPTH_VISION", "13"], "TRAINER.VPT.PROMPT_DEPTH_VISION = 13; use 1..12 for this "
                                                       "backbone."),  # (VPT has no text side: 0 would learn nothing)
    ("TCP", ["TRAINER.TCP.CLASS_TOKEN_LAYER", "12"], "TRAINER.TCP.CLASS_TOKEN_LAYER = 12; use 1..11 for this "
                                                     "backbone."),
    ("TCP", ["MODEL.BACKBONE.NAME", "tiny-RN", "TRAINER.TCP.CLASS_TOKEN_LAYER", "12"],  # (a ResNet's text side)
     "TRAINER.TCP.CLASS_TOKEN_LAYER = 12; use 1..11 for this backbone."),
    ("MultiModalAdapter", ["TRAINER.MMADAPTER.ADAPTER_END", "13"], "TRAINER.MMADAPTER.ADAPTER_END is 13, but this "
     "backbone's encoders have 12 blocks: set ADAPTER_END to at most 12."),
    ("MMRL", ["TRAINER.MMRL.REP_LAYERS", "[6, 13]"], "TRAINER.MMRL.REP_LAYERS is [6, 13]: give increasing blocks in "
                                                     "1..12 (published: [6, 7, 8, 9, 10, 11, 12])."),
    ("MMRLpp", ["TRAINER.MMRLpp.REP_LAYERS", "[6, 13]"], "TRAINER.MMRLpp.REP_LAYERS is [6, 13]: give increasing "
                                                         "blocks in 1..12 (published: [6, 7, 8, 9, 10, 11, 12])."),
])
def test_a_depth_past_the_backbones_layers_is_refused_before_anything_is_built(trainer, extra, expected, data_root,
                                                                               tmp_path, capsys, monkeypatch):
    """The backbone's layer counts are known from its name (no weights read): the trainer is never built, so neither
    the data set nor CLIP is loaded (and PREC fp16's CPU fallback says nothing)."""
    import dassl.engine

    def build_trainer(cfg):
        raise AssertionError("the trainer was built")
    monkeypatch.setattr(dassl.engine, "build_trainer", build_trainer)
    out = str(tmp_path / "out")
    assert fails(toy_args(data_root, out, trainer=trainer, extra=extra), capsys, out) == f"error: {expected}"


def test_a_warning_of_the_checks_waits_until_the_config_passed(data_root, tmp_path, warm_python):
    """PromptSRC_BMIP warns that it ignores PROMPT_DEPTH_TEXT/VISION: with a refused PROMPT_DEPTH the real process's
    stderr is the error line alone (pytest's own capture would hide a warning, so this runs train.py)."""
    ignored = ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "4"]  # differs from PROMPT_DEPTH: warned about
    refused = subprocess.run([warm_python, "train.py", *toy_args(data_root, tmp_path / "out", trainer="PromptSRC_BMIP",
                              extra=[*ignored, "TRAINER.PROMPTSRC.PROMPT_DEPTH", "13"])],
                             capture_output=True, text=True, cwd=REPO)
    assert (refused.returncode, refused.stderr) == (2, "error: TRAINER.PROMPTSRC.PROMPT_DEPTH = 13" + DEPTH + "\n")
    args = build_parser().parse_args(toy_args(data_root, tmp_path / "out", trainer="PromptSRC_BMIP", extra=ignored))
    with pytest.warns(UserWarning, match="PromptSRC_BMIP ignores TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT"):
        check_config(setup_cfg(args), args)  # a config that passes still shows it


def test_a_misspelt_trainer_gets_the_right_suggestion(data_root, tmp_path, capsys):
    line = fails(toy_args(data_root, tmp_path / "out", trainer="Coop"), capsys, str(tmp_path / "out"))
    assert line.endswith("but got [Coop] (do you mean [CoOp]?)")


def test_a_missing_dataset_names_the_root_and_the_download_command(tmp_path, capsys):
    args = ["--root", str(tmp_path), "--trainer", "CoOp", "--dataset-config-file", "configs/datasets/caltech101.yaml",
            "--output-dir", str(tmp_path / "out")]
    line = fails(args, capsys, str(tmp_path / "out"))
    assert "caltech-101 not found under DATASET.ROOT" in line
    assert f"python -m datasets.download Caltech101 --root {tmp_path}" in line
    line = fails(args[2:], capsys)  # no --root at all
    assert "DATASET.ROOT is empty; pass --root $DATA" in line


def test_missing_or_wrong_clip_weights(data_root, tmp_path, capsys, monkeypatch):
    import clip_patch.loading as loading

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(loading.urllib.request, "urlopen", offline)
    out = str(tmp_path / "out")
    line = fails(toy_args(data_root, out, extra=["MODEL.BACKBONE.NAME", "ViT-B/16", "INPUT.SIZE", "(224, 224)"]),
                 capsys, out)
    assert "CLIP weights for backbone 'ViT-B/16' are not available" in line and "MODEL.BACKBONE.PATH" in line

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04not a checkpoint")
    line = fails(toy_args(data_root, out, extra=["MODEL.BACKBONE.PATH", str(garbage)]), capsys, out)
    assert f"{garbage} is not a CLIP weights file" in line
    not_clip = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, not_clip)
    line = fails(toy_args(data_root, out, extra=["MODEL.BACKBONE.PATH", str(not_clip)]), capsys, out)
    assert f"{not_clip} is not a CLIP weights file (not a CLIP architecture" in line


def test_a_checkpoint_of_other_settings_names_them(data_root, trained, tmp_path, capsys):
    out = str(tmp_path / "out")
    line = fails(toy_args(data_root, out, flags=["--eval-only", "--model-dir", trained, "--load-epoch", "1"],
                          extra=["TRAINER.COOP.N_CTX", "2"]), capsys, out)
    assert "does not fit the model built for this run" in line
    assert "It was trained with other settings: TRAINER.COOP.N_CTX: 4 -> 2" in line


def test_conflicts_with_the_output_folder(data_root, trained, capsys):
    line = fails(toy_args(data_root, trained, extra=["TRAINER.COOP.N_CTX", "4", "SEED", "2"]), capsys)
    assert "holds another run: its config differs in SEED: 1 -> 2" in line and "--accept-config-change" in line


def test_an_evaluation_never_takes_over_a_training_folder(data_root, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    stored = (run / "result.json").read_bytes()
    evaluate = ["--eval-only", "--model-dir", str(run), "--load-epoch", "1"]
    refused = f"error: {run} holds a training run's checkpoints: an evaluation cannot be written into it; pass "
    for flags in (evaluate, [*evaluate, "--accept-config-change"]):
        line = fails(toy_args(data_root, run, flags=flags, extra=["TRAINER.COOP.N_CTX", "4"]), capsys)
        assert line.startswith(refused) and "another --output-dir" in line, line
        assert "--accept-config-change" not in line and "None" not in line
    assert (run / "result.json").read_bytes() == stored and not (run / "result.json.superseded").exists()
    shutil.rmtree(run / "prompt_learner")  # its result alone still makes it a training run's folder
    flags = ["--eval-only", "--model-dir", trained, "--load-epoch", "1", "--accept-config-change"]
    line = fails(toy_args(data_root, run, flags=flags, extra=["TRAINER.COOP.N_CTX", "4"]), capsys)
    assert line.startswith(f"error: {run} holds a finished training run: an evaluation cannot be written into it")
    assert (run / "result.json").read_bytes() == stored


def test_a_resume_folder_that_does_not_exist(data_root, tmp_path, capsys):
    out, absent = str(tmp_path / "out"), str(tmp_path / "nothere")
    line = fails(toy_args(data_root, out, flags=["--resume", absent]), capsys, out)
    assert line == (f"error: --resume {absent} does not exist: pass the output folder of the run whose checkpoints "
                    "this run should continue from (without --resume a run continues from its own --output-dir, "
                    "so re-running the same command resumes)")


@pytest.mark.parametrize("files, flags, hint", [
    (["model.pth.tar-3", "model.pth.tar-12"], [], "pass --load-epoch 12 (the newest epoch it holds)"),
    (["model.pth.tar-3", "model-best.pth.tar"], ["--load-epoch", "7"],
     "pass --load-epoch 3 (the newest epoch it holds) or --best (model-best.pth.tar)"),
    (["model-best.pth.tar"], ["--load-epoch", "7"], "pass --best (model-best.pth.tar)"),
    ([], [], "pass the --output-dir of a training run that saved checkpoints"),
])
def test_a_missing_checkpoint_suggests_only_what_the_folder_holds(files, flags, hint, data_root, tmp_path, capsys):
    model_dir = tmp_path / "run"
    (model_dir / "prompt_learner").mkdir(parents=True)
    for name in files:
        (model_dir / "prompt_learner" / name).write_bytes(b"")
    out = str(tmp_path / "out")
    line = fails(toy_args(data_root, out, flags=["--eval-only", "--model-dir", str(model_dir), *flags]), capsys, out)
    asked = f"model.pth.tar-{flags[1]}" if flags else "model-best.pth.tar"
    assert line.startswith(f"error: --model-dir {model_dir} holds no {asked} ") and line.endswith(": " + hint), line


@pytest.mark.parametrize("flags, extra, expected", [
    (["--device", "cuda"], [], "error: --device cuda: CUDA is not available on this machine; use --device cpu, or "
                               "leave --device unset (cuda if available, else cpu)"),
    (["--device", "cuda:0"], [], "error: --device cuda:0: CUDA is not available on this machine; use --device cpu, "
                                 "or leave --device unset (cuda if available, else cpu)"),
    ([], ["DEVICE", "cuda"], "error: DEVICE cuda: CUDA is not available on this machine; use DEVICE cpu, or leave "
                             "DEVICE unset (cuda if available, else cpu)"),
])
def test_a_device_this_machine_lacks_is_bad_input(flags, extra, expected, data_root, tmp_path, capsys, monkeypatch):
    import dassl.engine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dassl.engine, "build_trainer", lambda cfg: pytest.fail("built before the device check"))
    out = str(tmp_path / "out")
    argv = toy_args(data_root, out, flags=flags, extra=extra)
    i = argv.index("DEVICE")  # toy_opts' DEVICE cpu would override --device: only the device under test stays
    del argv[i:i + 2]
    assert fails(argv, capsys, out) == expected


def test_integers_are_accepted_for_float_keys(data_root, tmp_path):
    args = build_parser().parse_args(toy_args(data_root, tmp_path / "out", extra=["OPTIM.LR", "1"]))
    cfg = setup_cfg(args)
    assert cfg.OPTIM.LR == 1.0 and isinstance(cfg.OPTIM.LR, float)


def test_more_shots_than_images_is_said(data_root, tmp_path, capsys):
    assert cli(toy_args(data_root, tmp_path / "out", extra=["DATASET.NUM_SHOTS", "64"])) == 0
    said = capsys.readouterr().out
    assert "Warning: DATASET.NUM_SHOTS is 64, but 6 of 6 classes have fewer training images (the fewest: 4)" in said


def test_a_crash_prints_one_line_and_the_traceback_on_request(data_root, tmp_path, capsys, monkeypatch):
    from trainers.base import CLIPPromptTrainer

    def broken(self, batch):
        raise RuntimeError("simulated failure inside a training step")

    monkeypatch.setattr(CLIPPromptTrainer, "forward_backward", broken)
    out = tmp_path / "out"
    assert cli(toy_args(data_root, out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: simulated failure inside a training step (the full traceback: --traceback or "
                   "BMIP_TRACEBACK=1)"]
    assert not out.exists()  # the run never saved anything: its new folder is gone
    assert cli(["--traceback", *toy_args(data_root, out)]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
