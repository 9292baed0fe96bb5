"""`Datum` (one labelled image) and `DatasetBase` (the container every dataset subclasses).

The class path `dassl.data.datasets.base_dataset.Datum` and its private attribute names
(`_impath`, `_label`, `_domain`, `_classname`) are part of the ecosystem's contract: few-shot
caches written by CoOp-family code pickle `Datum` objects by that path, so they unpickle here.
"""

import os
import os.path as osp
import random
import tarfile
import urllib.request
import zipfile
from collections import defaultdict


class Datum:
    """One data instance: an image path, its class label, its domain label and its class name.

    Args:
        impath (str): path to an existing image file.
        label (int): class label.
        domain (int): domain label.
        classname (str): class name.
    """

    def __init__(self, impath="", label=0, domain=0, classname=""):
        if not isinstance(impath, str):
            raise TypeError(
                f"Datum impath must be a str, got {type(impath).__name__} ({impath!r}); "
                "pass the image path as a string (e.g. str(path))"
            )
        if not osp.isfile(impath):
            raise FileNotFoundError(
                f'No file found at "{impath}": a Datum must point to an existing image; '
                "check DATASET.ROOT and that the dataset was extracted as DATASETS.md describes"
            )
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self):
        return self._impath

    @property
    def label(self):
        return self._label

    @property
    def domain(self):
        return self._domain

    @property
    def classname(self):
        return self._classname

    def __repr__(self):
        return (
            f"Datum(impath={self._impath!r}, label={self._label}, "
            f"domain={self._domain}, classname={self._classname!r})"
        )


class DatasetBase:
    """A dataset made of up to four lists of `Datum`: labelled train, unlabelled train, val, test.

    Class names, the label-to-name map and the number of classes are derived from `train_x`.
    """

    dataset_dir = ""  # the directory where the dataset is stored
    domains = []  # string names of all domains
    num_base_classes = None  # how many leading labels are base classes (base/novel evaluation); None = not said

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        if not train_x:
            raise ValueError(
                f"{type(self).__name__}: train_x is empty; a dataset needs labelled training "
                "items to define its classes (test-only datasets pass train_x=test)"
            )
        self._train_x = train_x  # labeled training data
        self._train_u = train_u  # unlabeled training data (optional)
        self._val = val  # validation data (optional)
        self._test = test  # test data
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self._classnames

    @property
    def num_classes(self):
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source):
        """Count classes as `max(label) + 1` over a list of Datum."""
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source):
        """Return `(mapping, classnames)`: label -> class name, and the names ordered by label.

        Raises ValueError when one label carries two different class names.
        """
        mapping = {}
        for item in data_source:
            known = mapping.setdefault(item.label, item.classname)
            if known != item.classname:
                raise ValueError(
                    f"Label {item.label} has two class names, {known!r} and {item.classname!r} "
                    f"(e.g. at {item.impath}); every label must map to exactly one class name"
                )
        labels = sorted(mapping)
        mapping = {label: mapping[label] for label in labels}
        classnames = [mapping[label] for label in labels]
        return mapping, classnames

    def check_input_domains(self, source_domains, target_domains):
        """Check that both domain lists are non-empty and name domains of this dataset."""
        if len(source_domains) == 0:
            raise ValueError("source_domains is empty; set DATASET.SOURCE_DOMAINS")
        if len(target_domains) == 0:
            raise ValueError("target_domains is empty; set DATASET.TARGET_DOMAINS")
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains):
        """Raise ValueError naming the first domain that is not in `self.domains`."""
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(
                    f"Input domain must belong to {self.domains}, but got [{domain}]"
                )

    def download_data(self, url, dst, from_gdrive=True):
        """Download an archive to `dst` (gdown for Google Drive, urllib otherwise) and extract it
        next to `dst` (.zip, .tar, .tar.gz/.tgz).

        Offline or failed downloads raise a RuntimeError giving the URL and the manual steps.
        """
        extract_dir = osp.dirname(osp.abspath(dst))
        os.makedirs(extract_dir, exist_ok=True)
        try:
            if from_gdrive:
                import gdown

                downloaded = gdown.download(url, dst, quiet=False)
            else:
                downloaded, _ = urllib.request.urlretrieve(url, dst)
        except Exception as err:
            raise RuntimeError(self._manual_download_message(url, dst, err)) from err
        if not downloaded or not osp.isfile(dst):
            raise RuntimeError(self._manual_download_message(url, dst, "nothing was downloaded"))

        print("Extracting file ...")
        extract_archive(dst, extract_dir)
        print(f"File extracted to {extract_dir}")

    @staticmethod
    def _manual_download_message(url, dst, reason):
        return (
            f"Could not download {url} to {dst} ({reason}). If this machine is offline, "
            f"download the file by hand from {url}, save it as {dst}, extract it into "
            f"{osp.dirname(osp.abspath(dst))}, and run again."
        )

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False):
        """Sample `num_shots` items per label from each data source.

        Labels with fewer than `num_shots` items keep all of them, or (with `repeat`) are sampled
        with replacement up to `num_shots`. Returns one list for one source, else a list of lists;
        `num_shots < 1` returns the sources unchanged.
        """
        if num_shots < 1:
            if len(data_sources) == 1:
                return data_sources[0]
            return data_sources

        print(f"Creating a {num_shots}-shot dataset")

        output = []
        for data_source in data_sources:
            tracker = self.split_dataset_by_label(data_source)
            dataset = []
            for items in tracker.values():
                if len(items) >= num_shots:
                    sampled_items = random.sample(items, num_shots)
                elif repeat:
                    sampled_items = random.choices(items, k=num_shots)
                else:
                    sampled_items = items
                dataset.extend(sampled_items)
            output.append(dataset)

        if len(output) == 1:
            return output[0]
        return output

    def split_dataset_by_label(self, data_source):
        """Group a list of Datum into `{label: [Datum, ...]}` (first-seen label order)."""
        output = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    def split_dataset_by_domain(self, data_source):
        """Group a list of Datum into `{domain: [Datum, ...]}` (first-seen domain order)."""
        output = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output


def extract_archive(archive, extract_dir):
    """Extract a .zip, .tar, .tar.gz or .tgz file into `extract_dir`."""
    if archive.endswith(".zip"):
        with zipfile.ZipFile(archive, "r") as zip_ref:
            zip_ref.extractall(extract_dir)
    elif archive.endswith((".tar", ".tar.gz", ".tgz")):
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(extract_dir, filter="data")
    else:
        raise ValueError(
            f"Cannot extract {archive}: supported archive types are .zip, .tar, .tar.gz, .tgz"
        )
