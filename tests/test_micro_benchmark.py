"""python -m scripts.micro_benchmark: a wrong --datasets / --seeds / --workers value is one line naming it (and the
valid values), exit status 2, before any dataset is generated or any job runs."""
import pytest

from scripts import micro_benchmark

MICRO = "'micro_clean', 'micro_sketch', 'micro_noisy', 'micro_retro', 'micro_night'"


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the job would start: generating the datasets or running a chain."""
    def started(*args, **kwargs):
        raise AssertionError("the benchmark started work on a bad argument")

    monkeypatch.setattr(micro_benchmark, "generate_datasets", started)
    monkeypatch.setattr(micro_benchmark, "run_all", started)


@pytest.mark.parametrize("argv, message", [
    (["--datasets", "micro_clen"], f"argument --datasets: invalid choice: 'micro_clen' (choose from {MICRO})"),
    (["--datasets", "micro_sketch", "caltech101"],
     f"argument --datasets: invalid choice: 'caltech101' (choose from {MICRO})"),
    (["--workers", "0"], "argument --workers: 0 is below 1: pass 1 or more worker processes"),
    (["--seeds", "1", "-1"], "argument --seeds: -1 is below 0: seeds are >= 0 (a negative seed leaves a run unseeded)"),
    (["--seeds", "one"], "argument --seeds: 'one' is not an integer"),
])
def test_a_bad_value_is_one_line_and_exit_2_before_any_job(argv, message, no_work, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        micro_benchmark.main(argv + ["--data", str(tmp_path / "data"), "--output", str(tmp_path / "out")])
    assert done.value.code == 2
    assert capsys.readouterr().err == (f"error: {message} (python -m scripts.micro_benchmark --help lists the "
                                       "arguments)\n")
    assert list(tmp_path.iterdir()) == []


def test_the_smallest_valid_values_are_accepted():
    args = micro_benchmark.build_parser().parse_args(["--datasets", "micro_night", "micro_clean", "--seeds", "0",
                                                      "--workers", "1"])
    assert (args.datasets, args.seeds, args.workers) == (["micro_night", "micro_clean"], [0], 1)
    assert micro_benchmark.build_parser().parse_args([]).datasets == list(micro_benchmark.DATASETS)
