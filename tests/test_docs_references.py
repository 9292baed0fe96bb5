"""The documentation speaks of the project alone, and what it points at exists.

For every tracked markdown file:

* no reference to files outside the repository (a relative ``shared/`` folder, "spec §" sections, "the spec") and
  no vocabulary of the place the project was built in (bare issue numbers, the device tool, ``$OUT``, "lent"
  machines, sessions). An issue of another project names its repository: "KaiyangZhou/CoOp issue #61".
* every relative markdown link resolves to a tracked file or folder;
* every backticked path that starts with one of the repository's top-level folders names a tracked file or folder.
  ``{a,b}`` alternatives are expanded and ``*`` globs; a path with ``$`` or ``<...>`` holds a placeholder
  (``configs/trainers/<TRAINER>/<CFG>.yaml``). A path right after "release", "release's" or "released" is a file of
  the released code (e.g. "BMIP release `scripts/promptsrc/search_seed.sh`"), not checked.
"""
import fnmatch
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKPLACE_TALK = {
    "a folder outside the repository": re.compile(r"(?<![\w/.-])shared/"),
    "a section of a spec": re.compile(r"\bspec\s*§|§\s*\d"),
    "a spec": re.compile(r"(?<![(.-])\bspecs?\b(?![.()])", re.IGNORECASE),  # not code: spec.x, f(spec), --spec
    "the device tool": re.compile(r"`?\bdevice`? tool\b", re.IGNORECASE),
    "$OUT": re.compile(r"\$OUT\b"),
    "a lent machine": re.compile(r"\blent\b", re.IGNORECASE),
    "a session": re.compile(r"\bsessions?\b", re.IGNORECASE),
}
ISSUE = re.compile(r"\bissues? #?\d+", re.IGNORECASE)
OWNER_REPO_BEFORE = re.compile(r"\b[\w.-]+/[\w.-]+ $")
NUMBER_REF = re.compile(r"(?<![\w&#/])(?<!\]\()#\d+\b")  # "#56" (not an anchor "](#1-x)", not "&#38;")
OWNER_REPO_ISSUE_BEFORE = re.compile(r"\b[\w.-]+/[\w.-]+ (?:issues?|pull requests?|PR) $", re.IGNORECASE)
LINK = re.compile(r"\]\(([^()\s]+)\)")
FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
RELEASE_BEFORE = re.compile(r"\breleas(?:e|e's|ed)\s$", re.IGNORECASE)  # a line break is a space in Markdown


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout, so the tracked files are unknown ({e})")
    return [name for name in out.split("\0") if name]


class Repository:
    """The tracked files and folders (paths relative to the root, '/'-separated)."""

    def __init__(self, files):
        self.files = set(files)
        self.folders = {os.path.dirname(f) for f in files} - {""}
        for folder in list(self.folders):
            while folder:
                self.folders.add(folder)
                folder = os.path.dirname(folder)
        self.top_folders = sorted({f.split("/")[0] for f in self.files if "/" in f})

    def has(self, pattern):
        """A tracked file or folder matches ``pattern`` (fnmatch; trailing '/' ignored)."""
        pattern = pattern.rstrip("/")
        if not any(c in pattern for c in "*?["):
            return pattern in self.files or pattern in self.folders
        return bool(fnmatch.filter(self.files, pattern) or fnmatch.filter(self.folders, pattern))

    def backticked_path(self):
        """Backticked spans that start with a top-level folder: `folder/...`."""
        tops = "|".join(re.escape(t) for t in self.top_folders)
        return re.compile(rf"`((?:{tops})/[^`\s]*)`")


def expand_braces(path):
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [p for alternative in match.group(1).split(",")
            for p in expand_braces(path[:match.start()] + alternative + path[match.end():])]


def line_of(text, index):
    return text.count("\n", 0, index) + 1


def workplace_talk(name, text):
    """'name:line: what (match)' for every forbidden phrase in ``text``."""
    problems = [f"{name}:{line_of(text, m.start())}: {what} ({m.group(0)!r})"
                for what, pattern in WORKPLACE_TALK.items() for m in pattern.finditer(text)]
    problems += [f"{name}:{line_of(text, m.start())}: an issue number without its repository ({m.group(0)!r})"
                 for m in ISSUE.finditer(text) if not OWNER_REPO_BEFORE.search(text[:m.start()][-100:])]
    problems += [f"{name}:{line_of(text, m.start())}: a numbered reference without its repository ({m.group(0)!r})"
                 for m in NUMBER_REF.finditer(text) if not OWNER_REPO_ISSUE_BEFORE.search(text[:m.start()][-100:])]
    return problems


def broken_links(name, text, repo):
    """'name:line: target' for every relative markdown link (outside code blocks) that resolves to nothing tracked."""
    text = FENCED.sub(lambda block: "\n" * block.group(0).count("\n"), text)  # keeps line numbers
    problems = []
    for m in LINK.finditer(text):
        target = m.group(1).split("#")[0]
        if not target or re.match(r"[a-z][a-z0-9+.-]*:", target):  # an anchor in the same file, or a URL
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(name), target)).replace(os.sep, "/")
        if not repo.has(path):
            problems.append(f"{name}:{line_of(text, m.start())}: link to {target!r}, which is not in the repository")
    return problems


def missing_paths(name, text, repo):
    """'name:line: path' for every backticked repository path that names nothing tracked."""
    problems = []
    for m in repo.backticked_path().finditer(text):
        if RELEASE_BEFORE.search(text[max(0, m.start() - 12):m.start()]):
            continue  # the released code's file
        for path in expand_braces(m.group(1)):
            if not any(c in path for c in "$<>") and not repo.has(path):
                problems.append(f"{name}:{line_of(text, m.start())}: `{path}` is not in the repository")
    return problems


@pytest.fixture(scope="module")
def repo():
    return Repository(tracked_files())


@pytest.fixture(scope="module")
def docs(repo):
    names = sorted(f for f in repo.files if f.endswith(".md"))
    assert "README.md" in names and "docs/PROMPTSRC.md" in names
    texts = {}
    for name in names:
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            texts[name] = f.read()
    return texts


def test_docs_speak_of_the_project_alone(docs):
    problems = [p for name, text in docs.items() for p in workplace_talk(name, text)]
    assert not problems, "\n".join(problems)


def test_relative_links_resolve(docs, repo):
    problems = [p for name, text in docs.items() for p in broken_links(name, text, repo)]
    assert not problems, "\n".join(problems)


def test_backticked_repository_paths_exist(docs, repo):
    problems = [p for name, text in docs.items() for p in missing_paths(name, text, repo)]
    assert not problems, "\n".join(problems)


# -- the checks themselves catch what they are for ----------------------------------------------------------------
TOY = Repository(["README.md", "docs/BMIP.md", "docs/img/gates.png", "trainers/bmip.py", "trainers/ivlp.py",
                  "configs/trainers/BMIP/a.yaml", "configs/datasets/dtd.yaml"])


@pytest.mark.parametrize("bad", [
    "The facts are in `shared/spec/bmip.md`.", "as stated in spec §1.3", "see release §4 item 9",
    "match the specs", "Goals (issue 16): fast", "see issue #3", "with the `device` tool",
    "writes $OUT/x.json", "no GPU was lent to us", "the session that wrote it", "works when None (Dassl #56)",
    "see #12 for the details",
])
def test_workplace_talk_is_caught(bad):
    assert workplace_talk("x.md", f"Intro.\n{bad}\n"), bad


@pytest.mark.parametrize("fine", [
    "mirrors named in KaiyangZhou/CoOp issue #61", "KaiyangZhou/Dassl.pytorch issue #56", "[up](#12-steps)",
    "export DATA=/shared/datasets", "a `TrainerSpec` per method",
    "the device of the loaded weights", "plain-object helpers", "`spec.record()` is what checkpoints keep",
    "`locate(spec)` fetches the weights", "`python -m benchmarks.measure --spec FILE`",
])
def test_project_talk_passes(fine):
    assert workplace_talk("x.md", fine) == []


def test_link_check():
    text = ("[a](docs/BMIP.md) [b](docs/BMIP.md#modes) [c](https://x.org/y) [d](#top) ![e](docs/img/gates.png)\n"
            "```\nbuild_trainer(cfg) [x](cfg)\n```\n[f](docs/NO.md) [g](BMIP.md)")
    assert broken_links("README.md", text, TOY) == [
        "README.md:5: link to 'docs/NO.md', which is not in the repository",
        "README.md:5: link to 'BMIP.md', which is not in the repository"]
    assert broken_links("docs/BMIP.md", "[up](../README.md) [img](img/gates.png) [x](img/no.png)", TOY) == [
        "docs/BMIP.md:1: link to 'img/no.png', which is not in the repository"]


def test_path_check():
    text = ("`trainers/bmip.py` `trainers/{bmip,ivlp}.py` `configs/trainers/<TRAINER>/<CFG>.yaml` `configs/datasets/` "
            "`configs/datasets/${D}.yaml` `trainers/*.py` BMIP release `trainers/promptsrc_bitp.py` "
            "the release's `docs/RUN.md`\n`trainers/{bmip,coop}.py` `configs/trainers/BMIP/b.yaml` `docs/NEW.md`")
    assert missing_paths("x.md", text, TOY) == [
        "x.md:2: `trainers/coop.py` is not in the repository",
        "x.md:2: `configs/trainers/BMIP/b.yaml` is not in the repository",
        "x.md:2: `docs/NEW.md` is not in the repository"]
