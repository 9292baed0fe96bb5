"""The documentation's numbers and commands against the code, so that neither goes stale.

* The README's trainer table names every registered trainer with its checkpoint folder and config node, and every
  config key the docs name exists.
* The SLURM table of docs/EXPERIMENTS.md (array tasks, jobs, training jobs per command) and the protocol table
  (trainers, datasets, seeds per sweep) are recomputed from the sweep files by the sweep planner itself.
* Every ``python`` / ``bash`` command in README.md and docs/*.md (code blocks and inline code) is run as far as it
  can be without doing the work: sweeps and protocol scripts as ``--dry-run`` on an empty output folder, other
  commands up to the end of their argument parsing (every flag and value must parse), and commands written with
  placeholders (``RUN``, ``<Name>``, ``[--flag]``) as ``--help``. Files they name under configs/, scripts/ and
  tests/ must exist.
"""
import argparse
import importlib
import os
import re
import shlex
import subprocess
from pathlib import Path

from sweeps import runner, sweep_files
from trainers.display import display_order

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXPERIMENTS = (REPO / "docs" / "EXPERIMENTS.md").read_text(encoding="utf-8")
TRAINER_ALIASES = {"ZS-CLIP": "ZeroshotCLIP"}
REPOSITORY_PATHS = ("configs/", "scripts/", "tests/")
MAIN_OF = {"train": "runs.run"}  # train.py is a command line only (nothing imports it): its main() is runs.run's


# -- the tables of docs/EXPERIMENTS.md ---------------------------------------------------------------------------------
def table_rows(text, header_start):
    """The rows (lists of cell texts) of the markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def code_in(cell):
    (code,) = re.findall(r"`([^`]+)`", cell)
    return code


def planned(sweep_args, tmp_path, capsys):
    """(array tasks, jobs, training jobs) the SLURM executor would submit for ``sweep.py SWEEP_ARGS``, from its
    own dry run (an empty output folder: nothing finished, nothing submitted yet)."""
    args = [*sweep_args, "--output", str(tmp_path / "out"), "--dry-run"]
    capsys.readouterr()
    assert runner.main(args) == 0
    printed = capsys.readouterr().out
    tasks, jobs = map(int, re.search(r"# would submit (\d+) chains \((\d+) jobs\)", printed).groups())
    parsed = runner.build_parser().parse_args(args)
    chains = sweep_files.load_sweeps(parsed.sweeps, parsed.output).chains
    return tasks, jobs, sum(job.training for chain in chains for job in chain)


def test_slurm_table_counts_are_what_the_planner_submits(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATA", str(tmp_path))
    rows = table_rows(EXPERIMENTS, "| protocol | command (add your")
    assert len(rows) >= 4
    for protocol, command, *counts in rows:
        words = shlex.split(code_in(command))
        assert words[0] == "sweep.py" and "--executor" in words, command
        assert planned(words[1:], tmp_path, capsys) == tuple(map(int, counts)), f"{protocol}: {command}"


def test_protocol_table_names_each_sweeps_trainers_datasets_and_seeds():
    rows = table_rows(EXPERIMENTS, "| protocol | command | jobs |")
    checked = 0
    for protocol, command, jobs in rows:
        words = shlex.split(code_in(command))
        if words[1:2] != ["scripts/sweep.py"]:
            continue
        (experiment,) = sweep_files.load_sweep(REPO / words[2])["experiments"]
        named = {TRAINER_ALIASES.get(w, w) for w in re.findall(r"[\w-]+", jobs)} & set(display_order())
        if named:
            assert named == {run["trainer"] for run in experiment["runs"]}, protocol
        for count, what in re.findall(r"(\d+) (datasets|seeds)", jobs):  # (transfer: its target datasets)
            listed = experiment["seeds"] if what == "seeds" else experiment.get("datasets", experiment.get("targets"))
            assert int(count) == len(listed), f"{protocol}: {count} {what}"
        checked += bool(named)
    assert checked >= 2  # base-to-novel and few-shot list their methods


def test_readme_trainer_table_is_the_registry():
    """One row per registered trainer, with the checkpoint folder and config node its class declares."""
    from dassl.engine import TRAINER_REGISTRY

    rows = table_rows((REPO / "README.md").read_text(encoding="utf-8"), "| `--trainer` |")
    documented = {code_in(row[0]): row for row in rows}
    shipped = [name for name in display_order()  # (not the trainers other tests register)
               if TRAINER_REGISTRY.get(name).__module__.startswith("trainers.")]
    assert len(documented) == len(rows) and sorted(documented) == sorted(shipped)
    for name, (_, _, folder, node) in documented.items():
        trainer = TRAINER_REGISTRY.get(name)
        checkpoint = getattr(trainer, "CHECKPOINT_NAME", None)
        assert folder == (f"`{checkpoint}`" if checkpoint else "–"), name
        assert node.startswith(f"`TRAINER.{trainer.CFG_NODE}`"), name


# Dotted names the docs give that are not keys here, on purpose: the released code's own keys, the typo of an error
# example, and code.
NOT_KEYS = {"TRAINER.CoPrompt", "TRAINER.CoPrompt.N_CTX", "TRAINER.W", "TRAINER.DISTILL", "TRAINER.COOP.W",
            "TRAINER.COOP.N_CTXX", "TRAIN.get"}


def config_keys(node, prefix=""):
    for key, value in node.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from config_keys(value, f"{prefix}{key}.")


def test_every_config_key_the_docs_name_exists():
    """`TRAINER.COPROMPT.FP16_PROMPTS`-style names in README.md and docs/*.md are keys of the full config (every
    trainer's and dataset's extension applied), spelt as the code spells them."""
    import datasets  # noqa: F401 (registers the datasets' keys; trainers are registered above)
    from dassl.config import extend_cfg, get_cfg_default

    keys = set(config_keys(extend_cfg(get_cfg_default())))
    tops = sorted({key.split(".")[0] for key in keys if "." in key})
    dotted = re.compile(rf"\b(?:{'|'.join(tops)})(?:\.\w+)+")
    unknown = [f"{doc.relative_to(REPO)}: {name}" for doc in DOCS
               for name in sorted(set(dotted.findall(doc.read_text(encoding="utf-8"))))
               if name not in keys and name not in NOT_KEYS]
    assert not unknown, "\n".join(unknown)


# -- every documented command ------------------------------------------------------------------------------------------
def code_pieces(text):
    """(code, is_block) of a markdown text: its code blocks, then its inline code outside them."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [(block, True) for block in blocks] + [(code, False) for code in inline]


def shell_parts(piece, is_block):
    """The commands of a piece of code: a block's lines (continuations joined, comments and ``-> output`` notes
    dropped, ``&&`` / ``;`` chains split), or inline code split at ``&&``."""
    for line in re.sub(r"\\\n\s*", " ", piece).splitlines():
        if is_block:
            line = re.split(r"\s#\s|\s->\s", f" {line} ")[0]
        yield from filter(None, (p.strip() for p in re.split(r"&&|;" if is_block else r"&&", line)))


def documented_commands():
    """[(doc name, env assignments, command)] of every python / bash command in the docs' code; shell variables
    assigned earlier in the same piece of code are substituted."""
    found = []
    for doc in DOCS:
        for piece, is_block in code_pieces(doc.read_text(encoding="utf-8")):
            variables = {}
            for part in shell_parts(piece, is_block):
                part = part.removeprefix("export ")
                if assignment := re.fullmatch(r"([A-Z_]+)=(\S+)", part):
                    variables[assignment.group(1)] = assignment.group(2)
                    continue
                env = {}
                while prefix := re.match(r"([A-Z_]+)=(\S+)\s+", part):  # VAR=value command
                    env[prefix.group(1)] = prefix.group(2)
                    part = part[prefix.end():]
                for name, value in variables.items():
                    part = part.replace(f"${name}", value)
                if re.match(r"(python3?|bash) ", part):
                    found.append((doc.name, env, part))
    return found


COMMANDS = documented_commands()


def is_template(command):
    """Whether the command is written with placeholders (RUN, <Name>, [--flag], a|b, ...) instead of values."""
    if re.search(r"[<\[|…]|\.\.\.", command):
        return True
    words = shlex.split(command)
    return any(re.fullmatch(r"[A-Z][A-Z_]*", w) and w not in display_order() for w in words) or any(
        "$" in w for w in words if w != "$DATA")


class Parsed(Exception):
    """Raised instead of returning from ``ArgumentParser.parse_args``: the command's arguments all parsed."""


def module_of(words):
    """The module a ``python -m M`` / ``python path.py`` command runs, and its arguments."""
    if words[1] == "-m":
        return words[2], words[3:]
    return words[1].removesuffix(".py").replace("/", "."), words[2:]


def in_repository(module):
    """Whether ``module`` is this repository's (not pip, pytest, ...)."""
    top = module.split(".")[0]
    return (REPO / top).is_dir() or (REPO / f"{top}.py").is_file()


def run_until_parsed(module, args, monkeypatch):
    """``module.main(args)`` stopped right after its arguments parsed; returns "parsed" or the exit status."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *a, **k):
        raise Parsed(original(self, *a, **k))

    with monkeypatch.context() as patched:
        patched.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        try:
            importlib.import_module(MAIN_OF.get(module, module)).main(args)
        except Parsed:
            return "parsed"
        except SystemExit as stop:
            return stop.code
    raise AssertionError(f"{module}.main returned without parsing its arguments")


def test_the_docs_hold_the_commands_this_test_checks():
    kinds = {(words.split()[0], "sweep.py" in words, is_template(words)) for _, _, words in COMMANDS}
    assert len(COMMANDS) >= 50 and len(kinds) >= 5, kinds


def test_documented_python_commands_exist_and_parse(tmp_path, monkeypatch, capsys):
    """Every ``python -m M`` / ``python X.py`` command of this repository: its module exists and its arguments
    parse (templates, and modules named without arguments: ``--help`` works). Sweeps are dry-run by the next test;
    the files a command names (pytest's test files too) exist."""
    monkeypatch.setenv("DATA", str(tmp_path))
    monkeypatch.chdir(REPO)
    failures = []
    for doc, _, command in COMMANDS:
        words = shlex.split(command.replace("$DATA", str(tmp_path)))
        if words[0] == "bash" or "scripts/sweep.py" in words:
            continue
        failures += [f"{doc}: `{command}` names {w}, which does not exist" for w in words
                     if w.startswith(REPOSITORY_PATHS) and "*" not in w and not (REPO / w).exists()]
        module, args = module_of(words)
        if not in_repository(module):  # pip, pytest (whose test files were checked above)
            continue
        if is_template(command) or not args:  # a template, or the module named as a whole
            outcome, expected = run_until_parsed(module, ["--help"], monkeypatch), 0
        else:
            outcome, expected = run_until_parsed(module, args, monkeypatch), "parsed"
        capsys.readouterr()
        if outcome != expected:
            failures.append(f"{doc}: `{command}` ended with {outcome!r} instead of {expected!r}")
    assert not failures, "\n".join(failures)


def test_documented_sweeps_dry_run(tmp_path, monkeypatch, capsys):
    """Every documented ``scripts/sweep.py`` command runs as a dry run (``status``: as itself) on an empty output
    folder: exit 0 (``status``: 3, everything pending)."""
    monkeypatch.setenv("DATA", str(tmp_path))
    monkeypatch.chdir(REPO)
    checked = 0
    for doc, _, command in COMMANDS:
        words = shlex.split(command)
        if words[:2] != ["python", "scripts/sweep.py"]:
            continue
        status = words[2] == "status"
        args = words[2:] + ["--output", str(tmp_path / "out")] + ([] if status else ["--dry-run"])
        code = runner.main(args)
        printed = capsys.readouterr()
        assert code == (3 if status else 0), f"{doc}: `{command}`\n{printed.err}"
        checked += 1
    assert checked >= 8


def test_documented_shell_scripts_exist_and_dry_run(tmp_path, warm_python):
    """``bash scripts/...`` commands: the script exists; a command with values runs as a dry run, a protocol
    script written with placeholders answers --help (the released BMIP and ProDA scripts take positional arguments
    only). Their ``$PYTHON`` commands run in the warm Python of tests/warm_python.py."""
    checked = 0
    for doc, env, command in COMMANDS:
        words = shlex.split(command)
        if words[0] != "bash":
            continue
        script = REPO / words[1]
        assert script.is_file(), f"{doc}: `{command}`: no {words[1]}"
        if words[1].startswith(("scripts/bmip/", "scripts/bitp/", "scripts/proda/", "scripts/upt/")):  # released forms
            continue
        environ = {**os.environ, **{k: v for k, v in env.items() if k != "DATA"}, "DATA": str(tmp_path),
                   "PYTHON": warm_python}
        if is_template(command):
            args = [] if words[1].endswith("search_init_seed.sh") else ["--help"]
            if not args:
                continue  # a loop over run_protocol.py calls: no help of its own
        else:
            args = [*words[2:], "--dry-run", "--output", str(tmp_path / "out")]
        done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=environ, timeout=120)
        assert done.returncode == 0, f"{doc}: `{command}`\n{done.stderr}"
        checked += 1
    assert checked >= 7
