"""The runners' checks before the first job (sweeps/preflight.py): a broken torch/torchvision pair or a missing
dataset stops the main job, a sweep or a protocol script with one line and exit status 2, before any job."""
import fnmatch
import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

from dassl.engine.run_dir import write_result
from sweeps import preflight, protocol_runner, protocols
from sweeps import runner as sweep_runner
from sweeps.jobs import RunContext, SetupError

REPO = Path(__file__).resolve().parents[1]
NMS = "operator torchvision::nms does not exist"  # what a torchvision wheel built for another torch raises


def one_error_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize("torch_version, expected", [
    ("2.5.1+cpu", "pip install torch==2.5.1 'torchvision==0.20.*' --index-url https://download.pytorch.org/whl/cpu"),
    ("2.14.1", "pip install torch==2.14.1 'torchvision==0.29.*'"),
    ("2.3.0+git1a2b3c", "pip install torch==2.3.0 'torchvision==0.18.*'"),  # a source build: no wheel index
    ("1.13.1", "pip install torch==1.13.1 with the torchvision release made for it"),
])
def test_the_fix_names_the_torchvision_release_of_the_installed_torch(torch_version, expected):
    assert preflight.matching_pair_command(torch_version) == expected


def test_the_rule_matches_this_working_environment():
    import torch

    spec = preflight.matching_pair_command(torch.__version__).split("'")[1]  # torchvision==0.N.*
    assert fnmatch.fnmatch(version("torchvision"), spec.removeprefix("torchvision=="))


def test_the_main_job_with_a_broken_torchvision_stops_before_any_job(tmp_path):
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise RuntimeError({NMS!r})\n")
    data, out = tmp_path / "data", tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "scripts.micro_benchmark", "--data", str(data), "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)])})
    import torch

    line = one_error_line(done.stderr)
    assert done.returncode == 2 and done.stdout == ""
    assert line.startswith(f"error: torchvision does not work here (torchvision {version('torchvision')} with torch "
                           f"{torch.__version__}: RuntimeError: {NMS}); every job would fail the same way.")
    assert line.endswith("Install the torchvision release made for this torch: "
                         + preflight.matching_pair_command(torch.__version__))
    assert not data.exists() and not out.exists()  # nothing generated, nothing run


@pytest.mark.parametrize("runner", ["sweep", "run_protocol"])
def test_runners_with_a_broken_torchvision_run_no_job(runner, tmp_path, monkeypatch, capsys):
    (tmp_path / "data" / "dtd").mkdir(parents=True)
    monkeypatch.setenv("DATA", str(tmp_path / "data"))
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` fails
    out = tmp_path / "out"
    if runner == "sweep":
        sweep_file = tmp_path / "s.yaml"
        sweep_file.write_text(f"output: {out}\nexperiments:\n  - {{protocol: base2new, datasets: [dtd], "
                              "seeds: [1], runs: [{trainer: CoOp, cfg: vit_b16_ctxv1}]}\n")
        code = sweep_runner.main([str(sweep_file)])
    else:
        code = protocol_runner.main(["base2new", "CoOp", "vit_b16_ctxv1", "dtd", "1", "--output", str(out)])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and line.startswith("error: torchvision does not work here (")
    assert "import of torchvision halted" in line
    assert not out.exists()


def test_a_protocol_script_on_an_empty_data_folder_stops_before_any_job(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    done = subprocess.run(["bash", str(REPO / "scripts" / "base2new.sh"), "ZeroshotCLIP", "vit_b16", "dtd", "1",
                           "--output", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DATA": str(data), "PYTHON": sys.executable})
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and done.stdout == ""
    assert line.startswith(f"error: DescribableTextures: dataset folder {data / 'dtd'} not found under DATASET.ROOT "
                           f"{data}: python -m datasets.download DescribableTextures --root {data} fetches")
    assert not out.exists()


def test_a_sweep_names_every_missing_dataset_and_runs_nothing(tmp_path, monkeypatch, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "eurosat").mkdir(parents=True)  # present; dtd and caltech-101 are not
    monkeypatch.setenv("DATA", str(data))
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(textwrap.dedent(f"""\
        output: {out}
        experiments:
          - {{protocol: base2new, datasets: [dtd, eurosat, caltech101], seeds: [1, 2],
             runs: [{{trainer: CoOp, cfg: vit_b16_ctxv1}}, {{trainer: ZeroshotCLIP, cfg: vit_b16}}]}}
        """))
    assert sweep_runner.main([str(sweep_file), "--workers", "1"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: DescribableTextures: dataset folder {data / 'dtd'} not found")
    assert line.endswith("(also missing: Caltech101)") and not out.exists()


def test_present_datasets_and_names_train_py_does_not_know_pass(tmp_path):
    data = tmp_path / "data"
    (data / "dtd").mkdir(parents=True)
    configs = tmp_path / "configs"
    (configs / "datasets").mkdir(parents=True)
    (configs / "datasets" / "mine.yaml").write_text("DATASET:\n  NAME: NotADataset\n")  # train.py reports it
    ctx = RunContext(data_root=data)
    jobs = protocols.base2new(tmp_path / "out", "CoOp", "vit_b16_ctxv1", "dtd", 1)
    preflight.check_datasets(jobs, ctx)
    preflight.check_datasets(protocols.base2new(tmp_path / "out", "CoOp", "c", "mine", 1),
                             RunContext(data_root=data, config_root=configs))


def test_a_rerun_whose_jobs_all_finished_checks_no_dataset(tmp_path, monkeypatch):
    """A finished sweep re-run only skips its jobs: a moved $DATA is no reason to refuse it (nor to import torch)."""
    jobs = protocols.base2new(tmp_path / "out", "CoOp", "vit_b16_ctxv1", "dtd", 1)  # dtd is not under data/
    (tmp_path / "data").mkdir()
    ctx = RunContext(data_root=tmp_path / "data")
    imports = []
    monkeypatch.setattr(preflight, "check_imports", lambda: imports.append("checked"))
    with pytest.raises(SetupError, match="dataset folder"):
        preflight.check_before_jobs(jobs, ctx)
    for job in jobs:
        write_result(str(job.output_dir), {"mode": "train", "metrics": {"accuracy": 50.0}})
    preflight.check_before_jobs(jobs, ctx)
    assert imports == ["checked"]  # the first call only
    (jobs[-1].output_dir / "result.json").unlink()  # one job left to run: its dataset is checked again
    with pytest.raises(SetupError, match="dataset folder"):
        preflight.check_before_jobs(jobs, ctx)
