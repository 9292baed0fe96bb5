"""Run fingerprints (``dassl/engine/fingerprint.py``, stored in every ``result.json``) compared: why two runs or
two sweeps differ (``python scripts/results.py --diff A B``), and what the runs of one sweep share (a table of the
report).

A difference is named by its fingerprint part (code, packages, device, precision, data, transforms, config) with
the values that differ; config keys that never change a result (``RESULT_NEUTRAL_KEYS``: output folder, worker
count, device, ...) are not differences. Two split files with the same bytes are the same split wherever they lie.
"""
import difflib
from pathlib import Path

from dassl.engine.fingerprint import FINGERPRINT_PARTS
from dassl.engine.run_dir import (CONFIG_FILE, RESULT_FILE, RESULT_NEUTRAL_KEYS, config_differences,
                                  describe_differences, flatten_config, read_result)
from results.tables import Section, markdown_table

# What the runs of one sweep are expected to share (data, transforms and config differ by design: datasets, seeds,
# methods).
SHARED_PARTS = ("code", "packages", "device", "precision")
SHORT_HASH = 8


def fingerprint_of(record):
    """The fingerprint of a result record (``read_result``), or None (no record, or written before fingerprints)."""
    fingerprint = (record or {}).get("fingerprint")
    return fingerprint if isinstance(fingerprint, dict) and fingerprint else None


def read_fingerprint(run_dir):
    """(result record, fingerprint) of a finished run; raises ValueError (one line, with the fix) otherwise."""
    run_dir = Path(run_dir)
    record = read_result(str(run_dir))
    if record is None:
        raise ValueError(f"{run_dir} holds no readable {RESULT_FILE}: pass the folder of a finished run "
                         f"(e.g. .../seed1) or an output tree")
    if fingerprint_of(record) is None:
        raise ValueError(f"{run_dir / RESULT_FILE} has no fingerprint (written by an older version of train.py): "
                         f"re-run the run in a new output folder to record one")
    return record, record["fingerprint"]


def _short(value):
    """A hash shortened for a message; other values as they are (None as 'none')."""
    if value is None:
        return "none"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:SHORT_HASH]
    return str(value)


def _mapping_changes(a, b):
    """``key a vs b`` for every key whose value differs between two flat mappings (absent keys say so)."""
    keys = sorted(set(a) | set(b))
    return [f"{k} {_short(a.get(k, 'absent'))} vs {_short(b.get(k, 'absent'))}" for k in keys if a.get(k) != b.get(k)]


def _code(fingerprint):
    """One line for a code part: the commit and whether (which) uncommitted changes were present."""
    code = fingerprint.get("code") or {}
    if not code.get("commit"):
        return code.get("note", "no git checkout")
    changes = f" + uncommitted changes (diff {_short(code.get('diff_sha256'))})" if code.get("dirty") else ""
    return f"commit {code['commit'][:SHORT_HASH]}{changes}"


def _data_changes(a, b):
    """Split-file and per-split item differences (the split file's path alone is no difference)."""
    changes = []
    if a.get("split_file_sha256") != b.get("split_file_sha256"):
        changes.append(f"split file {_short(a.get('split_file_sha256'))} vs {_short(b.get('split_file_sha256'))}")
    for split in ("train_x", "val", "test"):
        x, y = a.get(split) or {}, b.get(split) or {}
        if x != y:
            changes.append(f"{split} {x.get('n')} items {_short(x.get('sha256'))} vs "
                           f"{y.get('n')} items {_short(y.get('sha256'))}")
    return changes


def _transform_changes(a, b):
    """The lines of each pipeline's repr that only one side has (``-`` A, ``+`` B)."""
    changes = []
    for name in ("train", "test"):
        x, y = (a.get(name) or "").splitlines(), (b.get(name) or "").splitlines()
        lines = [f"{line[0]} {line[2:].strip()}" for line in difflib.ndiff(x, y) if line[:1] in "-+"]
        if lines:
            changes.append(f"{name}: " + " ".join(lines))
    return changes


def _config_changes(a, b):
    """Result-relevant config keys that differ (``KEY: A -> B``), also keys only one side has."""
    flat_a, flat_b = flatten_config(a or {}), flatten_config(b or {})
    differences = config_differences(flat_a, flat_b)  # keys of B; those absent from A say so
    differences += [(k, v, "(absent)") for k, v in sorted(flat_a.items())
                    if k not in flat_b and k not in RESULT_NEUTRAL_KEYS]
    return [describe_differences(differences)] if differences else []


def part_differences(a, b):
    """``{part: [change, ...]}`` for every fingerprint part in which ``a`` and ``b`` differ (parts in order)."""
    found = {}
    for part in FINGERPRINT_PARTS:
        x, y = a.get(part), b.get(part)
        if part == "code":
            changes = [] if x == y else [f"{_code(a)} vs {_code(b)}"]
        elif part in ("packages", "device"):
            changes = _mapping_changes(x or {}, y or {})
        elif part == "precision":
            changes = [] if x == y else [f"{_short(x)} vs {_short(y)}"]
        elif part == "data":
            changes = _data_changes(x or {}, y or {})
        elif part == "transforms":
            changes = _transform_changes(x or {}, y or {})
        else:
            changes = _config_changes(x, y)
        if changes:
            found[part] = changes
    return found


def _run_line(label, run_dir, record):
    metrics = record.get("metrics") or {}
    accuracy = f", accuracy {metrics['accuracy']:.2f}" if "accuracy" in metrics else ""
    return f"{label}: {run_dir} ({record.get('trainer')} on {record.get('dataset')}{accuracy})"


def diff_runs(dir_a, dir_b):
    """Lines explaining how two finished runs differ: one line per differing part, then the parts they share."""
    record_a, a = read_fingerprint(dir_a)
    record_b, b = read_fingerprint(dir_b)
    differences = part_differences(a, b)
    lines = [_run_line("A", dir_a, record_a), _run_line("B", dir_b, record_b)]
    if not differences:
        return lines + [f"same fingerprint: all {len(FINGERPRINT_PARTS)} parts agree "
                        f"({', '.join(FINGERPRINT_PARTS)})"]
    lines.append(f"differ in {len(differences)} of {len(FINGERPRINT_PARTS)} fingerprint parts:")
    lines += [f"  {part}: {'; '.join(changes)}" for part, changes in differences.items()]
    same = [part for part in FINGERPRINT_PARTS if part not in differences]
    if same:
        lines.append(f"same: {', '.join(same)}")
    return lines


def finished_runs(tree):
    """``{path relative to tree: run folder}`` of every folder under ``tree`` holding a ``result.json``."""
    tree = Path(tree)
    return {str(path.parent.relative_to(tree)): path.parent for path in sorted(tree.rglob(RESULT_FILE))}


def diff_trees(tree_a, tree_b):
    """Lines explaining how two sweeps differ: their runs matched by path, per part how many pairs differ in it
    (with one example), then the runs only one sweep has."""
    runs_a, runs_b = finished_runs(tree_a), finished_runs(tree_b)
    common = sorted(set(runs_a) & set(runs_b))
    if not common:
        raise ValueError(f"{tree_a} and {tree_b} hold no finished run at the same relative path: pass two "
                         f"output trees of the same protocol, or two run folders")
    per_part, unfingerprinted = {}, []
    for rel in common:
        a, b = (fingerprint_of(read_result(str(runs[rel]))) for runs in (runs_a, runs_b))
        if a is None or b is None:
            unfingerprinted.append(rel)
            continue
        for part, changes in part_differences(a, b).items():
            per_part.setdefault(part, []).append((rel, changes))
    lines = [f"A: {tree_a}", f"B: {tree_b}", f"{len(common)} runs in both"]
    if unfingerprinted:
        lines.append(f"  {len(unfingerprinted)} of them not compared: no fingerprint on one side (written by an "
                     f"older train.py), e.g. {unfingerprinted[0]}")
        common = [rel for rel in common if rel not in unfingerprinted]
    for part in FINGERPRINT_PARTS:
        if part in per_part:
            pairs = per_part[part]
            rel, changes = pairs[0]
            lines.append(f"  {part} differs in {len(pairs)} of {len(common)} runs, e.g. {rel}: {'; '.join(changes)}")
    same = [part for part in FINGERPRINT_PARTS if part not in per_part]
    if same:
        lines.append(f"same in every run: {', '.join(same)}")
    for label, only in (("A", sorted(set(runs_a) - set(runs_b))), ("B", sorted(set(runs_b) - set(runs_a)))):
        if only:
            lines.append(f"only in {label}: {len(only)} runs, e.g. {only[0]}")
    return lines


def started_unfinished(folder):
    """Whether ``folder`` is a run that started (``train.py`` wrote its ``config.yaml``) and has no ``result.json``."""
    return (Path(folder) / CONFIG_FILE).is_file() and not (Path(folder) / RESULT_FILE).exists()


def diff(path_a, path_b):
    """``diff_runs`` for two run folders, ``diff_trees`` for two output trees; ValueError for anything else."""
    kinds = []
    for path in (Path(path_a), Path(path_b)):
        if not path.is_dir():
            raise ValueError(f"{path} does not exist or is not a folder: pass two run folders or two output trees")
        if started_unfinished(path):
            raise ValueError(f"{path} has no {RESULT_FILE}: the run did not finish (re-run its command to resume "
                             f"it); --diff compares finished runs")
        kinds.append("run" if (path / RESULT_FILE).exists() else "tree")
    if kinds[0] != kinds[1]:
        raise ValueError(f"{path_a} is a {kinds[0]} and {path_b} a {kinds[1]}: pass two run folders "
                         f"(each holding {RESULT_FILE}) or two output trees")
    return diff_runs(path_a, path_b) if kinds[0] == "run" else diff_trees(path_a, path_b)


# -- what the runs of one sweep share ------------------------------------------------------------------------------

def describe_part(part, fingerprint):
    """A one-line value of a shared part, for the sweep's table."""
    value = fingerprint.get(part)
    if part == "code":
        return _code(fingerprint)
    if part == "packages":
        return ", ".join(f"{k} {v}" for k, v in (value or {}).items())
    if part == "device":
        value = value or {}
        threads = value.get("cpu_threads")
        extra = [value.get("name"), value.get("cpu_capability"), threads and f"{threads} threads"] + (
            [f"CUDA {value['cuda']}"] if value.get("cuda") else [])
        return f"{value.get('device')} ({', '.join(str(e) for e in extra if e)})"
    return _short(value)


def shared_parts(run_dirs):
    """``({part: {value line: number of runs}}, number of runs without a fingerprint)`` over ``run_dirs``."""
    values, missing = {part: {} for part in SHARED_PARTS}, 0
    for run_dir in run_dirs:
        fingerprint = fingerprint_of(read_result(str(run_dir)))
        if fingerprint is None:
            missing += 1
            continue
        for part in SHARED_PARTS:
            line = describe_part(part, fingerprint)
            values[part][line] = values[part].get(line, 0) + 1
    return values, missing


def fingerprint_section(run_dirs):
    """The table of what the runs of a sweep share (one row per part of SHARED_PARTS; a part whose runs disagree
    is **MIXED**, with each value and its run count); ``None`` when no run has a fingerprint (foreign trees)."""
    values, missing = shared_parts(run_dirs)
    if missing == len(run_dirs):
        return None
    rows, csv_rows = [], []
    for part in SHARED_PARTS:
        counts = values[part]
        if len(counts) == 1:
            rows.append([part, sum(counts.values()), next(iter(counts))])
        else:
            listing = "; ".join(f"{value} ({n} runs)" for value, n in sorted(counts.items(), key=lambda kv: -kv[1]))
            rows.append([part, sum(counts.values()), f"**MIXED** ({len(counts)} values): {listing}"])
        csv_rows += [[part, value, n] for value, n in counts.items()]
    if missing:
        rows.append(["(none)", missing, "runs without a fingerprint (made elsewhere or by an older train.py)"])
        csv_rows.append(["(none)", "", missing])
    markdown = (["## Run fingerprints", ""] + markdown_table(["Part", "Runs", "Value"], rows)
                + ["", "What the runs of this table were computed with (result.json's fingerprint). Their data, "
                       "transforms and config differ by design (datasets, seeds, methods); "
                       "`python scripts/results.py --diff RUN_A RUN_B` explains how two runs differ."])
    return Section("fingerprints", markdown, ["part", "value", "runs"], csv_rows)
