"""Tests for dassl.data: Datum/DatasetBase, the dataset registry, samplers, DatasetWrapper,
build_data_loader and DataManager, on a tiny image tree generated in tmp_path."""

import os
import os.path as osp
import pickle
import random
import tarfile
import zipfile

import pytest
import torch
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data import DataManager, DatasetWrapper
from dassl.data.data_manager import build_data_loader, seed_worker, uses_cuda
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
from dassl.data.samplers import (
    RandomClassSampler,
    RandomDomainSampler,
    SeqDomainSampler,
    build_sampler,
)
from dassl.data.transforms import build_transform
from tests.cfg_helpers import set_values

CLASSNAMES = ["cat", "dog", "fox"]
N_TRAIN_PER_CLASS = 5  # 15 train items
N_TEST_PER_CLASS = 2  # 6 test items / 3 val items (1 per class)


def write_image(path, color, size=(10, 8)):
    Image.new("RGB", size, color).save(path)
    return str(path)


def make_image_tree(root):
    """root/<split>/<classname>/<i>.png, 10x8 px, colour encodes (class, index)."""
    counts = {"train": N_TRAIN_PER_CLASS, "val": 1, "test": N_TEST_PER_CLASS}
    for split, count in counts.items():
        for label, cname in enumerate(CLASSNAMES):
            folder = root / split / cname
            folder.mkdir(parents=True)
            for i in range(count):
                write_image(folder / f"{i}.png", (40 * label, 20 * i, 100))


def read_split(root, split):
    items = []
    for label, cname in enumerate(CLASSNAMES):
        folder = osp.join(root, split, cname)
        for fname in sorted(os.listdir(folder)):
            items.append(
                Datum(impath=osp.join(folder, fname), label=label, domain=label % 2,
                      classname=cname)
            )
    return items


@DATASET_REGISTRY.register()
class ToyDataForDataTests(DatasetBase):
    """Toy dataset: three classes of solid-colour images under DATASET.ROOT."""

    def __init__(self, cfg):
        root = cfg.DATASET.ROOT
        train = read_split(root, "train")
        train = self.generate_fewshot_dataset(train, num_shots=cfg.DATASET.NUM_SHOTS)
        super().__init__(train_x=train, val=read_split(root, "val"),
                         test=read_split(root, "test"))


@DATASET_REGISTRY.register()
class ToyNoTestForDataTests(DatasetBase):
    """Toy dataset whose test split is empty."""

    def __init__(self, cfg):
        super().__init__(train_x=read_split(cfg.DATASET.ROOT, "train"), test=[])


@pytest.fixture
def data_root(tmp_path):
    make_image_tree(tmp_path)
    return tmp_path


def make_cfg(root, **overrides):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = "ToyDataForDataTests"
    cfg.INPUT.SIZE = (6, 6)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 4
    return set_values(cfg, overrides)


# ---------------------------------------------------------------- Datum / DatasetBase


class _OldDatum:
    """Stand-in for the ecosystem's Datum: same private attributes, pickled under another path."""

    def __init__(self, impath, label, domain, classname):
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname


def test_datum_properties_and_validation(tmp_path):
    path = write_image(tmp_path / "a.png", (1, 2, 3))
    item = Datum(impath=path, label=3, domain=1, classname="cat")
    assert (item.impath, item.label, item.domain, item.classname) == (path, 3, 1, "cat")
    with pytest.raises(AttributeError):
        item.label = 4
    with pytest.raises(TypeError, match="must be a str"):
        Datum(impath=tmp_path / "a.png")
    missing = str(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        Datum(impath=missing)


def test_datum_pickle_round_trip_and_ecosystem_pickles(tmp_path):
    path = write_image(tmp_path / "a.png", (1, 2, 3))
    data = pickle.dumps([Datum(path, 2, 0, "fox")], protocol=pickle.HIGHEST_PROTOCOL)
    assert b"dassl.data.datasets.base_dataset" in data
    restored = pickle.loads(data)[0]
    assert type(restored) is Datum
    assert (restored.impath, restored.label, restored.classname) == (path, 2, "fox")

    # A pickle written by the ecosystem (absolute path that no longer exists on this machine)
    old = pickle.dumps(_OldDatum("/data/gone/x.jpg", 7, 0, "dog"), protocol=2)
    stand_in = f"{_OldDatum.__module__}\n_OldDatum".encode()
    assert stand_in in old
    old = old.replace(stand_in, b"dassl.data.datasets.base_dataset\nDatum")
    restored = pickle.loads(old)
    assert type(restored) is Datum
    assert (restored.impath, restored.label, restored.domain, restored.classname) == (
        "/data/gone/x.jpg", 7, 0, "dog")


def test_dataset_base_derives_classes_from_train_x(data_root):
    train = read_split(data_root, "train")
    shuffled = list(reversed(train))  # labels first seen in order 2, 1, 0
    dataset = DatasetBase(train_x=shuffled, test=read_split(data_root, "test"))
    assert dataset.num_classes == 3
    assert dataset.classnames == CLASSNAMES
    assert dataset.lab2cname == {0: "cat", 1: "dog", 2: "fox"}
    assert list(dataset.lab2cname) == [0, 1, 2]
    assert dataset.train_u is None and dataset.val is None
    assert DatasetBase.get_num_classes(train[:5]) == 1  # labels {0} -> 1
    assert DatasetBase.get_num_classes(train[-1:]) == 3  # labels {2} -> max+1


def test_dataset_base_rejects_bad_input(data_root, tmp_path):
    with pytest.raises(ValueError, match="train_x is empty"):
        DatasetBase(train_x=[], test=[])
    path = write_image(tmp_path / "b.png", (0, 0, 0))
    clash = [Datum(path, 0, 0, "cat"), Datum(path, 0, 0, "kitten")]
    with pytest.raises(ValueError, match="Label 0 has two class names"):
        DatasetBase.get_lab2cname(clash)


def test_split_by_label_and_domain(data_root):
    train = read_split(data_root, "train")
    dataset = DatasetBase(train_x=train)
    by_label = dataset.split_dataset_by_label(train)
    assert sorted(by_label) == [0, 1, 2]
    assert all(len(v) == N_TRAIN_PER_CLASS for v in by_label.values())
    by_domain = dataset.split_dataset_by_domain(train)
    assert {d: len(v) for d, v in by_domain.items()} == {0: 10, 1: 5}


def test_input_domain_checks(data_root):
    class TwoDomains(DatasetBase):
        domains = ["photo", "sketch"]

    dataset = TwoDomains(train_x=read_split(data_root, "train"))
    dataset.check_input_domains(["photo"], ["sketch"])
    with pytest.raises(ValueError, match=r"but got \[paint\]"):
        dataset.check_input_domains(["photo"], ["paint"])
    with pytest.raises(ValueError, match="SOURCE_DOMAINS"):
        dataset.check_input_domains([], ["sketch"])


def test_generate_fewshot_counts_print_and_seed(data_root, capsys):
    train = read_split(data_root, "train")
    val = read_split(data_root, "val")
    dataset = DatasetBase(train_x=train)

    assert dataset.generate_fewshot_dataset(train, num_shots=-1) is train
    assert capsys.readouterr().out == ""

    random.seed(0)
    two = dataset.generate_fewshot_dataset(train, num_shots=2)
    assert capsys.readouterr().out == "Creating a 2-shot dataset\n"
    assert isinstance(two, list) and len(two) == 6
    assert {lab: n for lab, n in _label_counts(two).items()} == {0: 2, 1: 2, 2: 2}

    # Independent computation: per label, in first-seen order, random.sample(items, K)
    random.seed(0)
    expected = []
    for label in (0, 1, 2):
        expected += random.sample([d for d in train if d.label == label], 2)
    assert [d.impath for d in two] == [d.impath for d in expected]

    few_train, few_val = dataset.generate_fewshot_dataset(train, val, num_shots=3)
    assert _label_counts(few_train) == {0: 3, 1: 3, 2: 3}
    assert _label_counts(few_val) == {0: 1, 1: 1, 2: 1}  # fewer than K: keep all

    repeated = dataset.generate_fewshot_dataset(val, num_shots=3, repeat=True)
    assert _label_counts(repeated) == {0: 3, 1: 3, 2: 3}


def _label_counts(items):
    counts = {}
    for item in items:
        counts[item.label] = counts.get(item.label, 0) + 1
    return counts


def _make_archive(tmp_path, kind):
    payload = tmp_path / "payload.txt"
    payload.write_text("hello")
    archive = tmp_path / f"src.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(payload, arcname="pkg/payload.txt")
    else:
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(payload, arcname="pkg/payload.txt")
    return archive


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_download_data_fetches_and_extracts(tmp_path, data_root, monkeypatch, kind, capsys):
    import gdown

    archive = _make_archive(tmp_path, kind)
    calls = []

    def fake_download(url, output, quiet=False):
        calls.append(url)
        with open(archive, "rb") as src, open(output, "wb") as dst:
            dst.write(src.read())
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    dst = tmp_path / "out" / f"data.{kind}"
    dataset = DatasetBase(train_x=read_split(data_root, "val"))
    dataset.download_data("https://drive.example/id", str(dst))
    assert calls == ["https://drive.example/id"]
    assert (tmp_path / "out" / "pkg" / "payload.txt").read_text() == "hello"
    assert "File extracted to" in capsys.readouterr().out


def test_download_data_offline_error_names_url_and_steps(tmp_path, data_root, monkeypatch):
    import gdown

    def offline(url, output, quiet=False):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(gdown, "download", offline)
    dst = tmp_path / "data.zip"
    dataset = DatasetBase(train_x=read_split(data_root, "val"))
    with pytest.raises(RuntimeError) as info:
        dataset.download_data("https://drive.example/id", str(dst))
    message = str(info.value)
    assert "https://drive.example/id" in message and str(dst) in message
    assert "by hand" in message and "network unreachable" in message


# ---------------------------------------------------------------- registry


def test_build_dataset_prints_and_builds(data_root, capsys):
    dataset = build_dataset(make_cfg(data_root))
    assert isinstance(dataset, ToyDataForDataTests)
    assert "Loading dataset: ToyDataForDataTests" in capsys.readouterr().out


def test_build_dataset_unknown_name_suggests_and_explains_registration(data_root):
    cfg = make_cfg(data_root, **{"DATASET.NAME": "ToyDataForDataTest"})
    with pytest.raises(ValueError) as info:
        build_dataset(cfg)
    message = str(info.value)
    assert "but got [ToyDataForDataTest] (do you mean [ToyDataForDataTests]?)" in message
    assert "@DATASET_REGISTRY.register()" in message and "datasets/" in message


# ---------------------------------------------------------------- samplers


def test_build_sampler_unknown_type():
    with pytest.raises(ValueError, match="Unknown sampler type: Bogus"):
        build_sampler("Bogus", data_source=[1, 2])


def test_random_class_sampler_batches(data_root):
    train = read_split(data_root, "train")  # 3 classes x 5
    sampler = RandomClassSampler(train, batch_size=4, n_ins=2, seed=0)
    expected_len = len(sampler)
    indices = list(sampler)
    assert len(indices) == expected_len == 12  # 2 chunks of 2 per class, 2 classes per batch
    for start in range(0, len(indices), 4):
        batch = [train[i].label for i in indices[start:start + 4]]
        assert batch[0] == batch[1] and batch[2] == batch[3] and batch[0] != batch[2]
    assert len(set(indices)) == len(indices)  # no repeats: every class has >= n_ins items
    assert list(RandomClassSampler(train, 4, 2, seed=0)) == indices
    with pytest.raises(ValueError, match="N_INS"):
        RandomClassSampler(train, batch_size=2, n_ins=3)


def test_domain_samplers_balance_domains(data_root):
    train = read_split(data_root, "train")  # domain 0: 10 items, domain 1: 5 items
    seq = SeqDomainSampler(train, batch_size=4, seed=1)
    indices = list(seq)
    assert len(indices) == 8  # domain 1 runs out after two batches of 2
    for start in range(0, len(indices), 4):
        domains = [train[i].domain for i in indices[start:start + 4]]
        assert domains == [0, 0, 1, 1]
    assert len(seq) == len(list(seq))

    rand = RandomDomainSampler(train, batch_size=4, n_domain=2, seed=1)
    first_epoch_len = len(rand)
    indices = list(rand)
    assert len(indices) == first_epoch_len and len(indices) % 4 == 0
    assert sorted(train[i].domain for i in indices[:4]) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="divisible"):
        RandomDomainSampler(train, batch_size=3, n_domain=2)


# ---------------------------------------------------------------- DatasetWrapper


def test_wrapper_item_keys_views_and_img0(data_root, capsys):
    cfg = make_cfg(data_root, **{"DATALOADER.K_TRANSFORMS": 2, "DATALOADER.RETURN_IMG0": True})
    train = read_split(data_root, "train")
    tfm = build_transform(cfg, is_train=True)
    item = DatasetWrapper(cfg, train, transform=tfm, is_train=True)[4]
    assert set(item) == {"label", "domain", "impath", "index", "img", "img0"}
    assert (item["label"], item["index"], item["impath"]) == (0, 4, train[4].impath)
    assert isinstance(item["img"], list) and len(item["img"]) == 2
    assert all(view.shape == (3, 6, 6) for view in item["img"])
    assert item["img0"].shape == (3, 6, 6)

    # K_TRANSFORMS only applies in training; a list of transforms gives img, img2
    test_item = DatasetWrapper(cfg, train, transform=[tfm, tfm], is_train=False)[0]
    assert test_item["img"].shape == (3, 6, 6) and test_item["img2"].shape == (3, 6, 6)

    with pytest.raises(ValueError, match="transform is None"):
        DatasetWrapper(cfg, train, transform=None, is_train=True)


def test_wrapper_corrupt_image_names_file_and_dataset(data_root):
    bad = data_root / "train" / "cat" / "0.png"
    bad.write_bytes(b"not an image")
    cfg = make_cfg(data_root)
    loader = build_data_loader(
        cfg, sampler_type="SequentialSampler", data_source=read_split(data_root, "train"),
        batch_size=4, tfm=build_transform(cfg, is_train=False), is_train=False,
    )
    with pytest.raises(OSError) as info:
        next(iter(loader))
    assert str(bad) in str(info.value) and "ToyDataForDataTests" in str(info.value)


# ---------------------------------------------------------------- loaders / DataManager


def test_data_manager_loaders_batches_and_summary(data_root, capsys):
    cfg = make_cfg(data_root)
    dm = DataManager(cfg)
    out = capsys.readouterr().out
    assert "Loading dataset: ToyDataForDataTests" in out
    assert "+ random resized crop (size=(6, 6), scale=(0.08, 1.0))" in out
    assert "+ resize the smaller edge to 6" in out
    for row in ("Dataset", "# classes", "# train_x", "# val", "# test"):
        assert row in out
    assert "# train_u" not in out and "Source" not in out
    assert [line.split() for line in out.splitlines() if line.startswith("# train_x")] == [
        ["#", "train_x", "15"]]

    assert dm.num_classes == 3 and dm.lab2cname == {0: "cat", 1: "dog", 2: "fox"}
    assert dm.num_source_domains == 0 and dm.train_loader_u is None
    assert dm.num_base_classes is None  # a plain Dassl dataset does not say which labels are base
    assert dm.dataset.classnames == CLASSNAMES
    assert len(dm.train_loader_x) == 3  # 15 items, batch 4, drop_last
    assert dm.train_loader_x.drop_last and not dm.test_loader.drop_last
    assert len(dm.val_loader) == 1 and len(dm.test_loader) == 2
    assert not dm.train_loader_x.pin_memory

    batch = next(iter(dm.train_loader_x))
    assert set(batch) == {"label", "domain", "impath", "index", "img"}
    assert batch["img"].shape == (4, 3, 6, 6)
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.int64
    test_batches = list(dm.test_loader)
    assert [b["img"].shape[0] for b in test_batches] == [4, 2]
    assert test_batches[0]["index"].tolist() == [0, 1, 2, 3]  # sequential


def test_train_loader_keeps_last_batch_when_data_is_smaller_than_batch(data_root, capsys):
    cfg = make_cfg(data_root, **{"DATALOADER.TRAIN_X.BATCH_SIZE": 32})
    dm = DataManager(cfg)
    assert not dm.train_loader_x.drop_last
    assert [b["img"].shape[0] for b in dm.train_loader_x] == [15]


def test_fewshot_dataset_through_data_manager(data_root, capsys):
    cfg = make_cfg(data_root, **{"DATASET.NUM_SHOTS": 2})
    dm = DataManager(cfg)
    assert "Creating a 2-shot dataset" in capsys.readouterr().out
    assert len(dm.dataset.train_x) == 6 and len(dm.train_loader_x) == 1


def test_same_seed_gives_same_batches(data_root, capsys):
    def epoch_indices(seed):
        dm = DataManager(make_cfg(data_root, SEED=seed))
        return [b["index"].tolist() for b in dm.train_loader_x]

    assert epoch_indices(5) == epoch_indices(5)
    assert epoch_indices(5) != epoch_indices(6)


def test_seeded_workers_reproduce_augmented_images(data_root, capsys):
    transforms = ("random_resized_crop", "randaugment", "random_flip", "normalize")

    def first_batch(seed):
        cfg = make_cfg(data_root, SEED=seed, **{"DATALOADER.NUM_WORKERS": 1,
                                                "INPUT.TRANSFORMS": transforms})
        dm = DataManager(cfg)
        assert dm.train_loader_x.worker_init_fn is seed_worker
        assert dm.test_loader.generator is None  # only training loaders are seeded
        batch = next(iter(dm.train_loader_x))
        return batch["index"], batch["img"]

    index_a, img_a = first_batch(3)
    index_b, img_b = first_batch(3)
    assert torch.equal(index_a, index_b) and torch.equal(img_a, img_b)


def test_empty_test_split_raises_clear_error(data_root, capsys):
    cfg = make_cfg(data_root, **{"DATASET.NAME": "ToyNoTestForDataTests"})
    with pytest.raises(ValueError, match="test split of dataset ToyNoTestForDataTests is empty"):
        DataManager(cfg)


def test_loader_with_no_batches_names_split_size_and_batch(data_root, capsys):
    cfg = make_cfg(data_root)
    train = read_split(data_root, "train")
    # domain 0 has 7 items, domain 1 has 5: SeqDomainSampler needs 6 of each for one batch
    with pytest.raises(ValueError, match=r"train_x loader .* 12 items, batch size 12"):
        build_data_loader(cfg, sampler_type="SeqDomainSampler", data_source=train[:12],
                          batch_size=12, tfm=None, is_train=True)


def test_custom_transforms_are_used(data_root, capsys):
    cfg = make_cfg(data_root)
    custom = build_transform(make_cfg(data_root, **{"INPUT.SIZE": (3, 3)}), is_train=False)
    dm = DataManager(cfg, custom_tfm_train=custom, custom_tfm_test=custom)
    out = capsys.readouterr().out
    assert "* Using custom transform for training" in out
    assert "* Using custom transform for testing" in out
    assert next(iter(dm.train_loader_x))["img"].shape == (4, 3, 3, 3)


def test_uses_cuda_follows_device_key(data_root):
    cfg = make_cfg(data_root)
    assert "DEVICE" not in cfg  # plain Dassl defaults: auto
    assert uses_cuda(cfg) == (torch.cuda.is_available() and cfg.USE_CUDA)
    cfg.DEVICE = "cpu"
    assert uses_cuda(cfg) is False
    cfg.DEVICE = "cuda:1"
    assert uses_cuda(cfg) is True
