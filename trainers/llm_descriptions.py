"""CoPrompt's LLM-generated class descriptions: where they come from, fetched on first use and checked.

The CoPrompt release reads ``gpt_file/<short>_prompt.json`` from its repository (ShuvenduRoy/CoPrompt
``trainers/coprompt.py`` L19-35, L431-434): a JSON object ``{class name with spaces: [sentence, ...]}``, the same
number of sentences for every class. This project does not ship those files. For a data set the release covers, the
file is downloaded once from the release's repository at a pinned commit into ``<DATASET.ROOT>/coprompt_gpt_file/``
and checked against the checksum recorded here before it is used; offline, the error names the URL and the path to
put the file at. The micro world's data sets describe their own classes (``class_descriptions()``), and any data set
can be given a file of the same format in ``TRAINER.COPROMPT.DESCRIPTIONS``.
"""
import hashlib
import json
import os
import os.path as osp
import urllib.error
import urllib.request

from dassl.utils import atomic_write

RELEASE_COMMIT = "a2a6c12e3622cfe4b3a127f4ba0c4f3eb841418c"  # ShuvenduRoy/CoPrompt
RELEASE_URL = f"https://raw.githubusercontent.com/ShuvenduRoy/CoPrompt/{RELEASE_COMMIT}/gpt_file/{{file}}"
CACHE_FOLDER = "coprompt_gpt_file"  # under DATASET.ROOT

# DATASET.NAME -> the release's file (its dataset_name_mapping, trainers/coprompt.py L19-35).
RELEASED_FILES = {
    "Caltech101": "caltech_prompt.json",
    "DescribableTextures": "dtd_prompt.json",
    "EuroSAT": "eurosat_prompt.json",
    "FGVCAircraft": "fgvc_prompt.json",
    "Food101": "food101_prompt.json",
    "ImageNet": "imagenet_prompt.json",
    "ImageNetA": "imagenet_a_prompt.json",
    "ImageNetR": "imagenet_r_prompt.json",
    "ImageNetSketch": "imagenet_sketch_prompt.json",
    "ImageNetV2": "imagenetv2_prompt.json",
    "OxfordFlowers": "oxford_flowers_prompt.json",
    "OxfordPets": "oxford_pets_prompt.json",
    "StanfordCars": "stanford_cars_prompt.json",
    "SUN397": "sun397_prompt.json",
    "UCF101": "ucf101_prompt.json",
}
# file -> ("sha256", hex) of its content at RELEASE_COMMIT; the five ImageNet files (one blob, 86ab87f) are pinned by
# the checksum the repository itself records for them: their git blob id ("git-blob", SHA-1 of git's blob encoding).
CHECKSUMS = {
    "caltech_prompt.json": ("sha256", "e98b2b4809f04d9055296696518a78584d4252235d523e3093e9c52b3dba7564"),
    "dtd_prompt.json": ("sha256", "5dd358b0bd09c98d6d4d6ed4d5048f5c1d4dddc24cf3a8c69d45bb4d68287991"),
    "eurosat_prompt.json": ("sha256", "a6aaa8850fd902ed74bfab940e5aac2f1b3ebfdecf7b3c6fb2201c91c9339e06"),
    "fgvc_prompt.json": ("sha256", "a29ddbf5c1cab48b6fbcbb9e4930df55e69f83d20d0fc508969d7c75a2457fa2"),
    "food101_prompt.json": ("sha256", "a9564b8e8e371b06416f7ae9e5508853431fb3eae6a4212843802bd07e1a8c0d"),
    "oxford_flowers_prompt.json": ("sha256", "0202f638ed18a2633375f84175b3db70bfc14927c6c82d57a87d42a1e722f844"),
    "oxford_pets_prompt.json": ("sha256", "14a697c4e72e0115189b501a4be64ef033bf94fcb540819632cb34afe9d29ff2"),
    "stanford_cars_prompt.json": ("sha256", "3505d5d67a06b76af14e3e74d6543da3d59aa4b29869a30cbbb56adbc751fe8e"),
    "sun397_prompt.json": ("sha256", "f743422d1786b66b019c4f7d80b181a00be0b6a783a36c5fb928aa45d59662d4"),
    "ucf101_prompt.json": ("sha256", "39bc7fbf0e7e60d48cc9e50ed008e6a5d7003c2d68713f0f76ec823cbdce0d09"),
    **{name: ("git-blob", "86ab87f6934a4be4d628eae53c30b15dbb683f34") for name in (
        "imagenet_prompt.json", "imagenet_a_prompt.json", "imagenet_r_prompt.json", "imagenet_sketch_prompt.json",
        "imagenetv2_prompt.json")},
}


def checksum(kind, data):
    """The ``kind`` ("sha256" | "git-blob") checksum of the bytes ``data``, in hex."""
    if kind == "git-blob":
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return hashlib.sha256(data).hexdigest()


def matches_checksum(file, data):
    kind, expected = CHECKSUMS[file]
    return checksum(kind, data) == expected


def download(url):
    """The bytes at ``url`` (one place, so tests can replace the network)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def released_file(dataset_name, root):
    """The local path of the release's description file for ``dataset_name``, downloaded into
    ``<root>/coprompt_gpt_file/`` and checked on first use. Raises FileNotFoundError (offline: the manual step) or
    ValueError (a checksum mismatch; nothing is written)."""
    file = RELEASED_FILES[dataset_name]
    path = osp.join(root, CACHE_FOLDER, file)
    url = RELEASE_URL.format(file=file)
    if osp.isfile(path):
        with open(path, "rb") as f:
            if not matches_checksum(file, f.read()):
                raise ValueError(f"{path} does not match the checksum of CoPrompt's {file}: delete it (it is "
                                 f"downloaded again) or replace it by {url}")
        return path
    try:
        data = download(url)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise FileNotFoundError(f"CoPrompt's class descriptions {file} are not in {osp.dirname(path)} and downloading "
                                f"them failed ({err}): download {url} to {path}") from None
    if not matches_checksum(file, data):
        raise ValueError(f"The download of {url} does not match its recorded checksum (nothing was saved): try again, "
                         f"or download it to {path} by hand")
    os.makedirs(osp.dirname(path), exist_ok=True)
    atomic_write(path, lambda tmp: _write_bytes(tmp, data))  # a failed write leaves no partial file
    return path


def _write_bytes(path, data):
    with open(path, "wb") as out:
        out.write(data)


def read_descriptions(path):
    """``{class name: [sentence, ...]}`` from a JSON file; ValueError (one line) when it is not of that form."""
    with open(path) as f:
        try:
            table = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not JSON ({err}): give a JSON object {{class name: [sentence, ...]}}") from None
    if not isinstance(table, dict) or not all(
            isinstance(v, list) and v and all(isinstance(s, str) for s in v) for v in table.values()):
        raise ValueError(f"{path} is not a JSON object {{class name: [sentence, ...]}} with at least one sentence "
                         "per class")
    return table


def descriptions_per_class(table, classnames, source):
    """The sentences of each class, [n_cls][n_desc], looked up by class name with spaces for underscores (as the
    release does); every class must have the same number (the release stacks them)."""
    names = [name.replace("_", " ") for name in classnames]
    missing = [name for name in names if name not in table]
    if missing:
        raise ValueError(f"{source} has no descriptions of {len(missing)} class(es), e.g. '{missing[0]}': give a file "
                         "that describes every class in TRAINER.COPROMPT.DESCRIPTIONS")
    counts = sorted({len(table[name]) for name in names})
    if len(counts) > 1:
        raise ValueError(f"{source} gives {counts[0]} to {counts[-1]} descriptions per class: CoPrompt needs the same "
                         "number for every class")
    return [list(table[name]) for name in names]


def check_descriptions_file(descriptions_file):
    """Raise FileNotFoundError (one line) unless ``descriptions_file`` (TRAINER.COPROMPT.DESCRIPTIONS) is "" or a
    file."""
    if descriptions_file and not osp.isfile(descriptions_file):
        raise FileNotFoundError(f"TRAINER.COPROMPT.DESCRIPTIONS is '{descriptions_file}', which is not a file: "
                                "give a JSON file {class name: [sentence, ...]}, or ''")


def class_descriptions(dataset, dataset_name, root, descriptions_file=""):
    """The descriptions of ``dataset``'s classes, [n_cls][n_desc], and where they come from: the file
    ``descriptions_file`` when given, else the data set's own ``class_descriptions()``, else the release's file for
    ``dataset_name`` (fetched into ``root``)."""
    classnames = dataset.classnames
    if descriptions_file:
        check_descriptions_file(descriptions_file)
        return descriptions_per_class(read_descriptions(descriptions_file), classnames, descriptions_file), \
            descriptions_file
    own = getattr(dataset, "class_descriptions", None)
    if own is not None:
        return descriptions_per_class(own(), classnames, f"{dataset_name}'s class_descriptions()"), dataset_name
    if dataset_name not in RELEASED_FILES:
        raise ValueError(f"CoPrompt trains with LLM descriptions of the classes; its release has none for "
                         f"DATASET.NAME '{dataset_name}': give a JSON file {{class name: [sentence, ...]}} in "
                         f"TRAINER.COPROMPT.DESCRIPTIONS")
    path = released_file(dataset_name, root)
    return descriptions_per_class(read_descriptions(path), classnames, path), path
