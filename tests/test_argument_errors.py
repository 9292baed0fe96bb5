"""Every command line of the project answers a wrong argument with one line on stderr naming it, exit status 2."""
import importlib
import os
import subprocess
import sys

import pytest

from dassl.cli import OneLineArgumentParser

ENTRY_POINTS = ["parse_test_res", "dassl.utils.convert_checkpoint", "scripts.micro_benchmark",
                "scripts.export_checkpoint", "scripts.pretrain_micro_clip", "datasets.verify", "datasets.download",
                "results.report", "benchmarks.report", "benchmarks.bench_trainers", "benchmarks.gpu_check",
                "benchmarks.backbone_check", "benchmarks.measure", "sweeps.protocol_runner", "sweeps.runner",
                "runs.run", "analysis.interpret_prompt"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_an_unknown_flag_is_one_line_and_exit_2(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as done:
        main(["--no-such-flag"])
    err = capsys.readouterr().err.splitlines()
    assert done.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: unrecognized arguments: --no-such-flag (") or \
        err[0].startswith("error: the following arguments are required"), err  # (a required one is missing first)
    assert err[0].endswith(" --help lists the arguments)"), err


def test_the_message_names_the_program_and_help_is_unchanged(capsys):
    parser = OneLineArgumentParser(prog="python -m tool")
    parser.add_argument("--count", type=int, required=True)
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--count", "many"])
    assert done.value.code == 2
    assert capsys.readouterr().err == ("error: argument --count: invalid int value: 'many' (python -m tool --help "
                                       "lists the arguments)\n")
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m tool [-h] --count COUNT")


@pytest.mark.parametrize("command, named", [
    (["-m", "scripts.micro_benchmark", "--nope"], "python -m scripts.micro_benchmark"),  # (not micro_benchmark.py)
    (["parse_test_res.py", "--nope"], "python parse_test_res.py"),
])
def test_the_message_names_the_command_as_typed(command, named):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=repo)
    assert done.returncode == 2 and done.stderr.endswith(f"({named} --help lists the arguments)\n"), done.stderr
    assert done.stderr.count("\n") == 1
