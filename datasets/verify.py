"""Check a `$DATA` folder before a long sweep: `python -m datasets.verify --root $DATA`.

For every built-in dataset (or those named with --datasets) it prints a table: the dataset folder
and its expected files found / missing, then per split the images listed vs present on disk and
unreadable, followed by the offending paths and any empty folder under the image root. Exit
status 1 when a dataset that is present (or was named) is incomplete.
"""

import os
import sys
from dataclasses import dataclass, field

from tabulate import tabulate

from dassl.cli import OneLineArgumentParser

MAX_LISTED = 20  # offending paths printed per dataset
CHECKS = ("exists", "open", "decode")


@dataclass
class DatasetReport:
    """What `verify_dataset` found for one dataset."""

    name: str
    dataset_dir: str
    folder_found: bool
    paths: list = field(default_factory=list)  # [(relative path, found, required)]
    splits: list = field(default_factory=list)  # [(split, listed, present, unreadable)]
    missing_images: list = field(default_factory=list)
    unreadable_images: list = field(default_factory=list)  # [(path, reason)]
    empty_folders: list = field(default_factory=list)
    error: str = ""

    @property
    def complete(self):
        return (
            self.folder_found
            and not self.error
            and all(found or not required for _, found, required in self.paths)
            and not self.missing_images
            and not self.unreadable_images
            and not self.empty_folders
        )


def builtin_datasets():
    """{name: class} of the registered datasets that live under DATASET.ROOT (not ImageFolder, not the generated
    micro world)."""
    from dassl.data.datasets import DATASET_REGISTRY

    from . import register_all
    from .base import SplitDataset

    register_all()
    classes = {name: DATASET_REGISTRY.get(name) for name in DATASET_REGISTRY.registered_names()}
    return {
        name: cls
        for name, cls in sorted(classes.items())
        if issubclass(cls, SplitDataset) and cls.dataset_dir and not cls.generated_on_use
    }


def image_problem(path, check):
    """None when the image passes `check`, else the reason it does not."""
    if check == "exists":
        return None
    from PIL import Image

    try:
        with Image.open(path) as image:
            if check == "decode":
                image.load()
            else:
                image.verify()
    except Exception as err:  # PIL raises many types for broken files; the reason is reported
        return f"{type(err).__name__}: {err}"
    return None


def empty_folders(image_dir):
    """Folders under `image_dir` (included) that contain nothing at all."""
    if not os.path.isdir(image_dir):
        return []
    return sorted(folder for folder, subdirs, files in os.walk(image_dir) if not subdirs and not files)


def expected_paths(dataset):
    """[(relative path, required)] a complete copy of `dataset` holds: image root, split file
    (not required when the project generates it), extras."""
    paths = [(dataset.image_subdir or ".", True)]
    if dataset.split_file:
        paths.append((dataset.split_file, not dataset.split_optional))
    return paths + [(p, True) for p in dataset.extra_paths if p != dataset.image_subdir]


def verify_dataset(cls, root, check="open"):
    """Inspect one dataset under `root` without writing anything; returns a DatasetReport."""
    dataset = cls.layout(root)
    report = DatasetReport(cls.__name__, dataset.dataset_dir, os.path.isdir(dataset.dataset_dir))
    if not report.folder_found:
        return report
    report.paths = [
        (p, os.path.exists(os.path.join(dataset.dataset_dir, p)), required) for p, required in expected_paths(dataset)
    ]
    report.empty_folders = empty_folders(dataset.image_dir)
    try:
        splits = dataset.inspect_split()
    except Exception as err:  # any failure to list the split is what the user must fix
        report.error = f"{type(err).__name__}: {err}"
        return report
    for split_name, entries in splits.items():
        present = unreadable = 0
        for entry in entries:
            if not os.path.isfile(entry.impath):
                report.missing_images.append(entry.impath)
                continue
            present += 1
            reason = image_problem(entry.impath, check)
            if reason:
                unreadable += 1
                report.unreadable_images.append((entry.impath, reason))
        report.splits.append((split_name, len(entries), present, unreadable))
    return report


def format_report(report):
    """The printed block for one dataset."""
    lines = [f"== {report.name} ({report.dataset_dir})"]
    if not report.folder_found:
        lines.append(f"   dataset folder: MISSING, expected {report.dataset_dir}{os.sep} (see docs/DATASETS.md)")
        return "\n".join(lines)
    rows = [("dataset folder", "found")] + [
        (p, "found" if ok else ("MISSING" if required else "absent (generated on first run)"))
        for p, ok, required in report.paths
    ]
    lines.append(tabulate(rows, headers=["expected", "status"], tablefmt="simple"))
    if report.splits:
        lines.append(tabulate(report.splits, headers=["split", "listed", "present", "unreadable"], tablefmt="simple"))
    if report.error:
        lines.append(f"   cannot list the split: {report.error}")
    problems = (
        [f"   missing image: {p}" for p in report.missing_images]
        + [f"   unreadable image: {p} ({why})" for p, why in report.unreadable_images]
        + [f"   empty folder: {p}" for p in report.empty_folders]
    )
    lines.extend(problems[:MAX_LISTED])
    if len(problems) > MAX_LISTED:
        lines.append(f"   ... and {len(problems) - MAX_LISTED} more problem(s)")
    lines.append(f"   => {'complete' if report.complete else 'INCOMPLETE'}")
    return "\n".join(lines)


def status_of(report):
    if not report.folder_found:
        return f"not found: no folder {report.dataset_dir}{os.sep}"
    return "complete" if report.complete else "INCOMPLETE"


def main(argv=None):
    parser = OneLineArgumentParser(prog="python -m datasets.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the $DATA folder (DATASET.ROOT)")
    parser.add_argument("--datasets", nargs="+", default=None, help="dataset names (default: all built-in)")
    parser.add_argument(
        "--check", choices=CHECKS, default="open",
        help="per image: exists (fast), open (header + structure, default), decode (full, slow)",
    )
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):  # first: answered before the datasets (and torch) are imported
        print(f"error: --root {args.root} is not a folder: pass the folder that holds your datasets ($DATA; "
              "layout in docs/DATASETS.md)", file=sys.stderr)
        return 2
    available = builtin_datasets()
    names = args.datasets or list(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {list(available)}")

    reports = [verify_dataset(available[name], args.root, args.check) for name in names]
    for report in reports:
        if report.folder_found or args.datasets:
            print(format_report(report) + "\n")
    print(tabulate([(r.name, status_of(r)) for r in reports], headers=["dataset", "status"], tablefmt="simple"))
    failed = [r for r in reports if not r.complete]
    if failed:
        missing = sum(not r.folder_found for r in failed)
        hint = (f"; {missing} not found at all — pass --datasets with the ones you use to check only those"
                if missing and not args.datasets else "")
        print(f"error: {len(failed)} of {len(reports)} checked datasets are missing or incomplete{hint}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
