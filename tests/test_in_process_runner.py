"""Jobs run inside the calling process (the main job's executor): outcomes, logs, failures, stdout restored."""
import sys
from dataclasses import replace
from pathlib import Path

from results import logparse
from sweeps.jobs import RunContext, run_chain
from sweeps.protocols import base2new
from tests.toy_data import make_toy_dataset, toy_opts


def context(tmp_path, configs):
    data = tmp_path / "data"
    make_toy_dataset(str(data))
    opts = [o for o in toy_opts(str(data), epochs=1) if o not in ("DATASET.NAME", "ImageFolder",
                                                                   "DATASET.IMAGE_FOLDER.DIR", "toy")]
    return replace(RunContext(data_root=data, config_root=configs), in_process=True, device="cpu",
                   extra_opts=tuple(opts))


def write_configs(tmp_path):
    configs = tmp_path / "configs"
    (configs / "datasets").mkdir(parents=True)
    (configs / "datasets" / "toy.yaml").write_text('DATASET:\n  NAME: "ImageFolder"\n  IMAGE_FOLDER:\n    DIR: "toy"\n')
    (configs / "trainers").symlink_to(Path(__file__).resolve().parents[1] / "configs" / "trainers")
    return configs


def test_base2new_chain_runs_in_process(tmp_path):
    ctx = context(tmp_path, write_configs(tmp_path))
    stdout_before = sys.stdout
    chain = base2new(tmp_path / "out", "CoOp", "vit_b16", "toy", seed=1, shots=2)
    outcomes = run_chain(chain, ctx, capture=True, report=lambda message: None)
    assert [o.status for o in outcomes] == ["ok", "ok", "ok"]
    assert sys.stdout is stdout_before  # the tee of each run is undone
    for job in chain:
        assert logparse.finished(job.output_dir)  # result.json
        assert (job.output_dir / "stdout.txt").read_text().count("* accuracy:") == 1  # captured, not printed
    again = run_chain(chain, ctx, capture=True, report=lambda message: None)
    assert [o.status for o in again] == ["skipped"] * 3


def test_a_failing_job_is_reported_with_its_traceback(tmp_path):
    ctx = context(tmp_path, write_configs(tmp_path))
    ctx = replace(ctx, extra_opts=ctx.extra_opts + ("TRAINER.COOP.N_CTX", "-1"))
    chain = base2new(tmp_path / "out", "CoOp", "vit_b16", "toy", seed=1, shots=2)
    outcomes = run_chain(chain, ctx, capture=True, report=lambda message: None)
    assert [o.status for o in outcomes] == ["failed", "blocked", "blocked"]
    assert "Traceback" in (chain[0].output_dir / "stdout.txt").read_text()
