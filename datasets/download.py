"""Fetch the public files of a dataset: `python -m datasets.download <Name> --root $DATA`.

Downloads, with gdown, the split json and the other files the dataset's class lists in
`public_files` (Google-Drive ids or stable URLs); archives are extracted in place and then
deleted. Files already present are skipped. When a download fails (no network, quota, moved
link) it removes what that download created (folders, partial files; nothing that was there before)
and prints the manual steps: the link, where to save the file, and the docs section.
The images of most datasets need a licence click-through and stay a manual step
(docs/DATASETS.md).
"""

import os
import shutil
import sys

from dassl.cli import OneLineArgumentParser
from dassl.data.datasets import DATASET_REGISTRY
from dassl.data.datasets.base_dataset import extract_archive

from . import register_all
from .base import SplitDataset


def source_url(source):
    """A browser link for a Google-Drive id or URL."""
    if source.startswith(("http://", "https://")):
        return source
    return f"https://drive.google.com/file/d/{source}/view?usp=sharing"


def fetch(source, destination):
    """Download one file with gdown (a Drive id or a URL); raises on failure."""
    import gdown

    os.makedirs(os.path.dirname(destination), exist_ok=True)
    if source.startswith(("http://", "https://")):
        result = gdown.download(url=source, output=destination, quiet=False)
    else:
        result = gdown.download(id=source, output=destination, quiet=False)
    if not result or not os.path.isfile(destination):
        raise RuntimeError("gdown returned no file")


def first_missing_folder(folder):
    """The outermost folder on the path to ``folder`` that does not exist yet; None when ``folder`` exists."""
    missing = None
    while folder and not os.path.isdir(folder) and folder != os.path.dirname(folder):
        missing, folder = folder, os.path.dirname(folder)
    return missing


def fetch_or_leave_nothing(source, destination):
    """:func:`fetch`; when it fails, what it created is removed (the folders it made, its partial files beside
    ``destination``), and everything that was there before is kept."""
    folder = os.path.dirname(destination)
    new_folder = first_missing_folder(folder)
    before = set() if new_folder else set(os.listdir(folder))
    try:
        fetch(source, destination)
    except BaseException:
        if new_folder:
            shutil.rmtree(new_folder, ignore_errors=True)
        else:  # the file and gdown's partial files (<name>...part), never another file of the folder
            for name in set(os.listdir(folder)) - before:
                if name.startswith(os.path.basename(destination)) and os.path.isfile(os.path.join(folder, name)):
                    os.remove(os.path.join(folder, name))
        raise


def download_dataset(cls, root):
    """Fetch every public file of dataset class `cls` under `root`; returns the failures as
    `[(PublicFile, destination, reason)]`."""
    dataset = cls.layout(root)
    failures = []
    for public_file in cls.public_files:
        destination = os.path.normpath(os.path.join(dataset.dataset_dir, public_file.relpath))
        done_marker = os.path.join(dataset.dataset_dir, public_file.provides or public_file.relpath)
        if os.path.exists(done_marker):
            print(f"{done_marker} exists, skipped")
            continue
        print(f"Downloading {source_url(public_file.source)} -> {destination}")
        try:
            fetch_or_leave_nothing(public_file.source, destination)
        except Exception as err:  # network, quota and HTTP errors all end in the manual steps
            failures.append((public_file, destination, f"{type(err).__name__}: {err}"))
            continue
        if public_file.provides:
            extract_archive(destination, os.path.dirname(destination))
            os.remove(destination)
            print(f"Extracted into {os.path.dirname(destination)}")
    return failures


def manual_steps(name, root, failures):
    """The message printed when files of dataset ``name`` under ``root`` (``--root``) could not be fetched."""
    lines = [f"Could not download {len(failures)} file(s) of {name}. Manual steps:"]
    for public_file, destination, reason in failures:
        if public_file.provides:
            action = f"download it and extract it into {os.path.dirname(destination)}"
        else:
            action = f"download it to {destination}"
        lines.append(f"  - {source_url(public_file.source)}\n    {action}\n    (failed with {reason})")
    lines.append(f"Then check with: python -m datasets.verify --root {root} --datasets {name}. See docs/DATASETS.md "
                 "for the images.")
    return "\n".join(lines)


def main(argv=None):
    register_all()
    names = sorted(
        name for name in DATASET_REGISTRY.registered_names()
        if issubclass(DATASET_REGISTRY.get(name), SplitDataset) and DATASET_REGISTRY.get(name).dataset_dir
    )
    parser = OneLineArgumentParser(prog="python -m datasets.download", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=names, metavar="NAME", help=f"one of {names}")
    parser.add_argument("--root", required=True, help="the $DATA folder (DATASET.ROOT)")
    args = parser.parse_args(argv)
    cls = DATASET_REGISTRY.get(args.name)
    if cls.generated_on_use:
        print(f"{args.name} needs no download: it is generated on first use into {cls.layout(args.root).dataset_dir} "
              f"(by the first train.py run on it with --root {args.root}, or by python -m scripts.micro_benchmark "
              f"--data {args.root})")
        return 0
    if not cls.public_files:
        print(f"{args.name} has no public files to fetch automatically; follow docs/DATASETS.md")
        return 1
    failures = download_dataset(cls, args.root)
    if failures:
        print(manual_steps(args.name, args.root, failures))
        return 1
    print(f"Done. Check with: python -m datasets.verify --root {args.root} --datasets {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
