"""Published results as data (``results/published.yaml``): loading them with their checks, the consistency of the
printed numbers, and which runs of ours each published method stands for.

The printed numbers are checked against each other to their printed rounding (``decimals``; half a unit, ``u``):

* an HM agrees with its Base and Novel when it lies within ``u`` of HM(b, n) for some b, n within ``u`` of the
  printed Base and Novel (HM grows with both, so the bounds are HM(B-u, N-u) - u and HM(B+u, N+u) + u);
* a published average agrees with its per-dataset values (when the file holds all of them) when it lies within
  ``2u`` of their mean (each value and the average are rounded once). An average HM is the HM of the average Base
  and Novel (the papers' convention); one that is instead the mean of the per-dataset HMs is named as such.

An entry whose numbers disagree must say so in its ``inconsistent`` note, and a note needs a disagreement: loading
refuses a file where either is missing.

Sources printing the same values for an entry are listed under ``also``; a source printing *other* values for the
same method, protocol and dataset goes under ``differs`` with the values it prints (kept, not compared with our
runs): loading refuses a ``differs`` item whose values are the entry's own (it belongs under ``also``), and checks
its HM like an entry's (its own ``inconsistent`` note where it disagrees).
"""
from dataclasses import dataclass
from pathlib import Path

from dassl.metrics import harmonic_mean
from results.layout import BASE2NEW_DATASETS, CROSS_DATASET_TARGETS, DG_TARGETS
from results.stats import mean_or_none

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")
AVERAGE = "average"
# The metrics of an entry per protocol, and the datasets a published average is taken over.
PROTOCOL_METRICS = {"base2new": ("base", "novel", "hm"), "cross_dataset": ("accuracy",),
                    "domain_generalization": ("accuracy",), "few_shot": ("accuracy",)}
AVERAGED_DATASETS = {"base2new": BASE2NEW_DATASETS, "cross_dataset": CROSS_DATASET_TARGETS,
                     "domain_generalization": DG_TARGETS, "few_shot": BASE2NEW_DATASETS}
ENTRY_KEYS = {"method", "protocol", "dataset", "shots", "source", "line", "also", "differs", "epochs",
              "inconsistent"}
DIFFERS_KEYS = {"source", "line", "epochs", "inconsistent"}
SOURCE_KEYS = ("title", "repository", "commit", "file")


@dataclass(frozen=True)
class Entry:
    """One published row: a method's metrics on one dataset (or ``average``) of one protocol, and where from."""

    method: str
    protocol: str
    dataset: str
    metrics: dict            # metric name -> printed value
    source: str
    line: int
    shots: int = None        # few-shot entries only
    epochs: int = None       # the training length the source prints
    inconsistent: str = None
    also: tuple = ()         # ((source, line), ...) printing the same values
    differs: tuple = ()      # (Differing, ...): other sources printing other values for the same cell


@dataclass(frozen=True)
class Differing:
    """Another source's values for an entry's cell, where they differ from the entry's."""

    source: str
    line: int
    metrics: dict            # metric name -> printed value
    epochs: int = None       # the training length this source prints
    inconsistent: str = None


@dataclass
class Published:
    """The contents of a published-results file."""

    path: Path
    decimals: int
    sources: dict            # key -> {title, repository, commit, file}
    methods: dict            # published name -> {"runs": [(trainer, cfg), ...], "mapping": why}
    entries: list

    @property
    def half_unit(self):
        return 0.5 * 10 ** -self.decimals

    def cite(self, source, line):
        """``MaPLe official README (muzairkhattak/multimodal-prompt-learning@69bce21 README.md:104)``."""
        s = self.sources[source]
        return f"{s['title']} ({s['repository']}@{str(s['commit'])[:7]} {s['file']}:{line})"

    def method_of(self, trainer, cfg):
        """The published method our runs of (trainer, cfg) stand for, or None."""
        for name, method in self.methods.items():
            if (trainer, cfg) in method["runs"]:
                return name
        return None


class PublishedFileError(ValueError):
    """The published-results file is malformed (the message names the entry and what to fix)."""


def _fail(path, where, what):
    raise PublishedFileError(f"{path}: {where}: {what}")


def _entry(path, index, raw, sources, methods):
    """An Entry from one raw ``results`` item, checked (every value sourced, known names and metrics)."""
    where = f"results[{index}] ({raw.get('method')}, {raw.get('protocol')}, {raw.get('dataset')})"
    protocol = raw.get("protocol")
    if protocol not in PROTOCOL_METRICS:
        _fail(path, where, f"protocol must be one of {sorted(PROTOCOL_METRICS)}")
    if raw.get("method") not in methods:
        _fail(path, where, "method is not listed under methods: (add it with the runs it stands for)")
    if not isinstance(raw.get("dataset"), str):
        _fail(path, where, "dataset must be a dataset name or 'average'")
    refs = [(raw.get("source"), raw.get("line"))] + [(a.get("source"), a.get("line")) for a in raw.get("also", [])]
    for source, line in refs:
        _check_ref(path, where, sources, source, line)
    metrics = _metrics(path, where, protocol, {k: v for k, v in raw.items() if k not in ENTRY_KEYS})
    if (protocol == "few_shot") != isinstance(raw.get("shots"), int):
        _fail(path, where, "shots is required for few_shot entries and only for them")
    differs = tuple(_differing(path, where, protocol, item, sources, metrics) for item in raw.get("differs", []))
    return Entry(raw["method"], protocol, raw["dataset"], metrics, raw["source"], raw["line"], raw.get("shots"),
                 raw.get("epochs"), raw.get("inconsistent"), tuple(refs[1:]), differs)


def _check_ref(path, where, sources, source, line):
    """Refuse a reference to an unlisted source or without a line."""
    if source not in sources or not isinstance(line, int) or line < 1:
        _fail(path, where, f"source {source!r} line {line!r}: every value needs a listed source and its line")


def _metrics(path, where, protocol, metrics):
    """``metrics`` checked: some of ``protocol``'s metrics, each a number."""
    allowed = PROTOCOL_METRICS[protocol]
    if not metrics or set(metrics) - set(allowed):
        _fail(path, where, f"metrics {sorted(metrics)}: a {protocol} entry holds some of {list(allowed)}")
    if any(not isinstance(v, (int, float)) for v in metrics.values()):
        _fail(path, where, "every metric must be a number, as printed")
    return metrics


def _differing(path, where, protocol, raw, sources, own):
    """A Differing from one raw ``differs`` item of an entry whose values are ``own``, checked."""
    source, line = raw.get("source"), raw.get("line")
    _check_ref(path, f"{where} differs", sources, source, line)
    metrics = _metrics(path, f"{where} differs ({source})", protocol,
                       {k: v for k, v in raw.items() if k not in DIFFERS_KEYS})
    if all(own.get(k) == v for k, v in metrics.items()):
        _fail(path, where, f"differs: {source} line {line} prints the entry's own values: list it under also:")
    return Differing(source, line, metrics, raw.get("epochs"), raw.get("inconsistent"))


def load(path=PUBLISHED_FILE):
    """Read and check a published-results file; raises ``PublishedFileError`` (one line) when it is malformed or
    when its notes of inconsistency do not match the numbers (module docstring)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"published results file {path} does not exist (the shipped one is {PUBLISHED_FILE})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise PublishedFileError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), (dict, list)) for k in
                                            ("sources", "methods", "results")):
        _fail(path, "top level", "needs sources:, methods: and results:")
    for key, source in raw["sources"].items():
        if not isinstance(source, dict) or any(not source.get(k) for k in SOURCE_KEYS):
            _fail(path, f"sources.{key}", f"needs {', '.join(SOURCE_KEYS)}")
    methods = {}
    for name, method in raw["methods"].items():
        runs = [(run.get("trainer"), run.get("cfg")) for run in (method or {}).get("runs", [])]
        if not runs or not all(t and c for t, c in runs) or not method.get("mapping"):
            _fail(path, f"methods.{name}", "needs runs: [{trainer, cfg}, ...] and mapping: (why they correspond)")
        methods[name] = {"runs": runs, "mapping": method["mapping"]}
    entries = [_entry(path, i, item, raw["sources"], methods) for i, item in enumerate(raw["results"])]
    keys = [(e.method, e.protocol, e.dataset, e.shots) for e in entries]
    for key in {k for k in keys if keys.count(k) > 1}:
        _fail(path, ", ".join(str(k) for k in key if k is not None), "listed twice: keep one entry (sources of the "
              "same values go under also:)")
    published = Published(path, int(raw.get("decimals", 2)), raw["sources"], methods, entries)
    for entry, problem in note_mismatches(published):
        _fail(path, f"{entry.method}, {entry.protocol}, {entry.dataset}", problem)
    return published


# -- consistency of the printed numbers ---------------------------------------------------------------------------

def hm_problem(metrics, u):
    """Why a printed HM disagrees with its printed Base and Novel (module docstring), or None."""
    if not {"base", "novel", "hm"} <= set(metrics):
        return None
    base, novel, hm = metrics["base"], metrics["novel"], metrics["hm"]
    low, high = harmonic_mean(base - u, novel - u) - u, harmonic_mean(base + u, novel + u) + u
    if low <= hm <= high:
        return None
    return f"HM({base}, {novel}) = {harmonic_mean(base, novel):.2f}, printed {hm}"


def _per_dataset(published, average):
    """The entries the average ``average`` is taken over, when the file holds every one of them; else None."""
    rows = {e.dataset: e for e in published.entries
            if (e.method, e.protocol, e.shots) == (average.method, average.protocol, average.shots)
            and e.dataset != AVERAGE}
    datasets = AVERAGED_DATASETS[average.protocol]
    return [rows[d] for d in datasets] if all(d in rows for d in datasets) else None


def average_problems(published, average):
    """Why a published average disagrees with the file's per-dataset values of the same method (module
    docstring): one text per metric, e.g. the average HM taken as the mean of the per-dataset HMs."""
    rows = _per_dataset(published, average)
    if rows is None:
        return []
    u, problems = published.half_unit, []
    for metric, printed in average.metrics.items():
        values = [row.metrics.get(metric) for row in rows]
        if metric == "hm" or None in values:
            continue  # the average HM is checked against the average Base and Novel (hm_problem)
        mean = mean_or_none(values)
        if abs(printed - mean) > 2 * u:
            problems.append(f"average {metric} printed {printed}, mean of the {len(rows)} datasets {mean:.2f}")
    if hm_problem(average.metrics, u) is not None:
        hms = [row.metrics.get("hm") for row in rows]
        if None not in hms and abs(average.metrics["hm"] - mean_or_none(hms)) <= 2 * u:
            problems.append(f"the average HM {average.metrics['hm']} is the mean of the per-dataset HMs "
                            f"({mean_or_none(hms):.2f}), not the HM of the average Base and Novel "
                            f"({harmonic_mean(average.metrics['base'], average.metrics['novel']):.2f})")
    return problems


def problems_of(published, entry):
    """Every disagreement of ``entry``'s printed numbers (its own HM; for an average, its per-dataset values)."""
    problems = []
    hm = hm_problem(entry.metrics, published.half_unit)
    if hm is not None:
        problems.append(hm)
    if entry.dataset == AVERAGE:
        problems += average_problems(published, entry)
    return problems


def _note_problem(problems, note):
    """What to fix when ``problems`` (the disagreements of some printed numbers) and ``note`` (their
    ``inconsistent`` note) do not go together, or None."""
    if problems and not note:
        return f"the printed numbers disagree ({'; '.join(problems)}): say so in an 'inconsistent' note"
    if note and not problems:
        return "has an 'inconsistent' note but its printed numbers agree: remove the note"
    return None


def note_mismatches(published):
    """``[(entry, what to fix)]`` where the numbers disagree without an ``inconsistent`` note, or a note stands
    where they agree: an entry's own numbers, and each of its ``differs`` items."""
    found = []
    for entry in published.entries:
        problem = _note_problem(problems_of(published, entry), entry.inconsistent)
        if problem:
            found.append((entry, problem))
        for other in entry.differs:
            hm = hm_problem(other.metrics, published.half_unit)
            problem = _note_problem([hm] if hm else [], other.inconsistent)
            if problem:
                found.append((entry, f"differs ({other.source} line {other.line}): {problem}"))
    return found
