"""The README's commands paste and run as written: every shell block is extracted and checked (files, modules,
arguments, config keys, variables), and the labels of the main job's table are the ones the job prints."""
import importlib.util
import os
import re
import shlex

import pytest

from results.aggregate import method_labels, method_order
from runs.checks import check_arguments
from runs.config import build_parser, setup_cfg
from runs.output_dir import model_file
from scripts.micro_benchmark import RUNS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()


def shell_blocks():
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def commands(block):
    """The block's commands: continuation lines joined, comments dropped, split on && and ;."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [line.split("  #")[0].split(" # ")[0].strip() for line in joined.splitlines()]
    return [part.strip() for line in lines if line and not line.startswith("#")
            for part in re.split(r"&&|;", line) if part.strip()]


def expand(command, variables):
    for name, value in variables.items():
        command = command.replace(f"${name}", value).replace(f"${{{name}}}", value)
    return command


def test_every_shell_block_pastes(tmp_path):
    blocks = shell_blocks()
    assert len(blocks) >= 2
    data = tmp_path / "data"
    data.mkdir()
    checked = 0
    for block in blocks:
        variables, outputs = {}, []
        for command in commands(block):
            assert "..." not in command, f"elided arguments in a README command: {command}"
            command = command.removeprefix("export ")
            assignment = re.fullmatch(r"([A-Z_]+)=(\S+)", command)
            if assignment:  # the user's own path for DATA; the test's folder stands in for it
                name, value = assignment.groups()
                variables[name] = str(data) if name == "DATA" else expand(value, variables)
                continue
            command = expand(command, variables)
            assert "$" not in command, f"a README command uses a variable its block never sets: {command}"
            words = shlex.split(command)
            check_command(words, outputs, tmp_path)
            checked += 1
    assert checked >= 6


def check_command(words, outputs, tmp_path):
    """Check one command; ``outputs`` collects the --output-dir of the training commands run before it."""
    if words[:2] == ["pip", "install"]:
        for i, word in enumerate(words):
            if word == "-r":
                assert os.path.isfile(os.path.join(REPO, words[i + 1])), words
        return
    assert words[0] == "python", words
    if words[1] == "-m":
        assert importlib.util.find_spec(words[2]) is not None, f"no module {words[2]}"
        return
    assert words[1] == "train.py", words
    args = build_parser().parse_args(words[2:])
    if args.model_dir:  # must be an earlier command's run; a stand-in folder holds the checkpoint it would have
        assert args.model_dir in outputs, f"--model-dir {args.model_dir} is no earlier command's --output-dir"
        os.makedirs(tmp_path / "model" / "learner", exist_ok=True)
        open(tmp_path / "model" / "learner" / model_file(args), "w").close()
        args.model_dir = str(tmp_path / "model")
    check_arguments(args)  # files, --root, flags after options ...
    setup_cfg(args)  # every KEY VALUE names a declared key with a value of its type
    if not args.eval_only:
        outputs.append(args.output_dir)


def test_main_job_table_labels_are_what_the_job_prints():
    rows = re.search(r"\| method \| Base \| Novel \| HM \|\n\|[-|]+\|\n((?:\|.*\|\n)+)", README).group(1)
    readme_labels = [line.split("|")[1].strip() for line in rows.strip().splitlines()]
    printed = method_labels(RUNS)
    assert readme_labels == [printed[key] for key in method_order(RUNS)]  # the table's order is the registry's


@pytest.mark.parametrize("path", sorted(set(re.findall(r"\]\(((?:docs|assets|configs|scripts)/[^)#]+)\)", README))))
def test_linked_files_exist(path):
    assert os.path.exists(os.path.join(REPO, path)), path
