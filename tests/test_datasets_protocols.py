"""Base/novel, open-world ratio, few-shot cache (incl. legacy pickles) and BaseNovelClassification."""

import hashlib
import json
import math
import os
import pickle
import shutil

import pytest
import torch

from dassl.data import DataManager
from dassl.data.datasets import Datum
from dassl.engine import SimpleTrainer
from dassl.evaluation import build_evaluator
from datasets import label_spaces
from datasets.evaluation import BaseNovelClassification
from datasets.splits import Entry
from tests.test_datasets_trees import build_class_folders, build_dtd, load, make_cfg

FIVE_TEXTURES = ["banded", "blotchy", "braided", "bubbly", "bumpy"]


def build_five_class_dtd(root, per_class=10):
    build_class_folders(os.path.join(root, "dtd", "images"), FIVE_TEXTURES, per_class=per_class)


def entries(num_classes, per_class=2):
    return [Entry(f"/x/{c}_{i}.jpg", c, f"class{c}") for c in range(num_classes) for i in range(per_class)]


# ---- base / novel ---------------------------------------------------------------------------


def test_base_new_split_of_an_odd_class_count_matches_the_ecosystem_rule(tmp_path):
    build_five_class_dtd(tmp_path)
    base = load(tmp_path, "DescribableTextures", subsample="base")
    new = load(tmp_path, "DescribableTextures", subsample="new")
    assert base.classnames == FIVE_TEXTURES[:3]  # ceil(5/2) = 3 base classes
    assert new.classnames == FIVE_TEXTURES[3:]
    assert sorted({d.label for d in new.test}) == [0, 1]  # relabelled from 0
    assert {d.classname for d in new.test if d.label == 0} == {"bubbly"}
    assert (len(base.train_x), len(base.test)) == (15, 9) and (len(new.train_x), len(new.test)) == (10, 6)


def test_subsample_classes_alias_and_bad_value():
    from datasets.oxford_pets import OxfordPets

    train, test = OxfordPets.subsample_classes(entries(7), entries(7, 1), subsample="new")
    assert sorted({e.label for e in test}) == [0, 1, 2] and {e.classname for e in test} == {"class4", "class5", "class6"}
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES must be one of"):
        label_spaces.subsample_classes(entries(3), subsample="novel")


# ---- open world -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_classes, ratio, expected",
    [(10, 50, (2, 3)), (10, 0, (0, 5)), (10, 30, (1, 4)), (11, 50, (3, 3)), (10, 100, (5, 0)), (20, 30, (3, 7)), (9, 0, (1, 4)), (9, 20, (1, 4)),
     (9, 40, (2, 3)), (9, 100, (5, 0)), (1, 0, (1, 0))],
)
def test_open_world_counts_and_clamp(num_classes, ratio, expected):
    assert label_spaces.open_world_counts(num_classes, ratio) == expected
    m = math.ceil(num_classes / 2)
    assert sum(expected) == m and expected[1] <= num_classes - m


def test_open_world_ratio_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="SUBSAMPLE_RATIO must lie in"):
        label_spaces.open_world_counts(10, 150)


def test_open_world_sampling_is_deterministic_per_seed_and_uses_a_private_rng():
    names = [f"class{i}" for i in range(40)]
    state = label_spaces.random.getstate()
    first = label_spaces.sample_open_world_labels(range(40), names, 50, seed=1)
    assert label_spaces.random.getstate() == state  # the global RNG is untouched
    assert label_spaces.sample_open_world_labels(range(40), names, 50, seed=1) == first
    other_seeds = {tuple(label_spaces.sample_open_world_labels(range(40), names, 50, seed=s)[0]) for s in (2, 3, 4)}
    assert tuple(first[0]) not in other_seeds
    selected, num_base = first
    assert num_base == 10 and len(selected) == 20
    assert all(label < 20 for label in selected[:10]) and all(label >= 20 for label in selected[10:])


def test_open_world_label_space_through_a_dataset(tmp_path):
    build_five_class_dtd(tmp_path)
    dataset = load(tmp_path, "DescribableTextures", USE_RATIO=True, SUBSAMPLE_RATIO=40, seed=3)
    selected, num_base = label_spaces.sample_open_world_labels(range(5), FIVE_TEXTURES, 40, 3)
    assert num_base == 1  # m = 3; floor(1.2) = 1 base, 2 novel (= both novel classes)
    assert dataset.classnames == [FIVE_TEXTURES[label] for label in selected]
    assert len(dataset.test) == 3 * 3  # every test image (3 per class) of the 3 selected classes
    assert dataset.num_base_classes == 1
    again = load(tmp_path, "DescribableTextures", USE_RATIO=True, SUBSAMPLE_RATIO=40, seed=3)
    assert [d.impath for d in again.test] == [d.impath for d in dataset.test]


def test_use_ratio_with_base_trains_on_base_and_with_new_evaluates_the_ratio_space(tmp_path):
    build_five_class_dtd(tmp_path)
    base = load(tmp_path, "DescribableTextures", subsample="base", USE_RATIO=True, SUBSAMPLE_RATIO=40)
    assert base.classnames == FIVE_TEXTURES[:3]
    # the released BMIP test script asks for the ratio space with SUBSAMPLE_CLASSES new
    new = load(tmp_path, "DescribableTextures", subsample="new", USE_RATIO=True, SUBSAMPLE_RATIO=40, seed=3)
    same = load(tmp_path, "DescribableTextures", subsample="all", USE_RATIO=True, SUBSAMPLE_RATIO=40, seed=3)
    assert new.classnames == same.classnames and [d.impath for d in new.test] == [d.impath for d in same.test]


# ---- few-shot and its cache ----------------------------------------------------------------


def read_cache(path):
    return json.loads(path.read_text())


def test_fewshot_counts_and_val_cap(tmp_path):
    build_dtd(tmp_path)  # 3 classes, split 5 train / 2 val / 3 test per class
    two = load(tmp_path, "DescribableTextures", num_shots=2)
    assert (len(two.train_x), len(two.val), len(two.test)) == (6, 6, 9)
    many = load(tmp_path, "DescribableTextures", num_shots=8)  # fewer than K available: all kept
    assert (len(many.train_x), len(many.val)) == (15, 6)
    build_five_class_dtd(tmp_path / "big", per_class=20)  # 10 train / 4 val / 6 test per class
    five = load(tmp_path / "big", "DescribableTextures", num_shots=5)
    assert (len(five.train_x), len(five.val)) == (25, 20)  # val gets min(5, 4) = 4


def test_fewshot_cache_round_trip_and_moving_the_root(tmp_path):
    build_dtd(tmp_path / "a")
    first = load(tmp_path / "a", "DescribableTextures", num_shots=2, seed=7)
    cache_path = tmp_path / "a" / "dtd" / "split_fewshot" / "shot_2-seed_7.json"
    cache = read_cache(cache_path)
    assert all(not rel.startswith("/") and rel.startswith("images/") for rel, _, _ in cache["splits"]["train"])
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    moved = load(tmp_path / "b", "DescribableTextures", num_shots=2, seed=7)
    relative = [os.path.relpath(d.impath, tmp_path / "b") for d in moved.train_x]
    assert relative == [os.path.relpath(d.impath, tmp_path / "a") for d in first.train_x]
    assert read_cache(tmp_path / "b" / "dtd" / "split_fewshot" / "shot_2-seed_7.json") == cache
    other_seed = load(tmp_path / "b", "DescribableTextures", num_shots=2, seed=8)
    assert [d.impath for d in other_seed.train_x] != [d.impath for d in moved.train_x]


def test_fewshot_cache_is_invalidated_when_the_split_file_changes(tmp_path):
    build_dtd(tmp_path)
    load(tmp_path, "DescribableTextures", num_shots=2, seed=1)
    cache_path = tmp_path / "dtd" / "split_fewshot" / "shot_2-seed_1.json"
    old = read_cache(cache_path)
    split_path = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    split = json.loads(split_path.read_text())
    dropped = old["splits"]["train"][0][0][len("images/"):]
    split["train"] = [item for item in split["train"] if item[0] != dropped]
    split_path.write_text(json.dumps(split))
    dataset = load(tmp_path, "DescribableTextures", num_shots=2, seed=1)
    new = read_cache(cache_path)
    assert new["split_fingerprint"] != old["split_fingerprint"]
    assert all(not d.impath.endswith(dropped) for d in dataset.train_x)


def test_a_cache_file_in_the_documented_format_is_loaded_as_it_is(tmp_path):
    """The cache format (version 1; SHA-256 over "\\0split\\0" then one "relpath\\tlabel\\tclassname\\n" line per item,
    train then val, paths relative to the dataset folder) is fixed: caches written by earlier versions load."""
    build_dtd(tmp_path)
    load(tmp_path, "DescribableTextures")  # writes the split json
    dataset_dir = tmp_path / "dtd"
    split = json.loads((dataset_dir / "split_zhou_DescribableTextures.json").read_text())
    digest = hashlib.sha256()
    for key in ("train", "val"):
        digest.update(b"\x00split\x00")
        digest.update("".join(f"images/{rel}\t{label}\t{name}\n" for rel, label, name in split[key]).encode())
    last_of_each_class = {key: {label: [f"images/{rel}", label, name] for rel, label, name in split[key]} for key in split}
    chosen = {key: list(last_of_each_class[key].values()) for key in ("train", "val")}  # a 1-shot draw
    cache = {"version": 1, "split_fingerprint": digest.hexdigest(), "splits": chosen}
    cache_path = dataset_dir / "split_fewshot" / "shot_1-seed_9.json"
    cache_path.parent.mkdir()
    cache_path.write_text(json.dumps(cache))
    dataset = load(tmp_path, "DescribableTextures", num_shots=1, seed=9)
    assert [(d.impath, d.label) for d in dataset.train_x] == [(str(dataset_dir / rel), label) for rel, label, _ in chosen["train"]]
    assert [d.impath for d in dataset.val] == [str(dataset_dir / rel) for rel, _, _ in chosen["val"]]
    assert json.loads(cache_path.read_text()) == cache


def test_negative_seed_samples_without_caching(tmp_path):
    build_dtd(tmp_path)
    dataset = load(tmp_path, "DescribableTextures", num_shots=1, seed=-1)
    assert len(dataset.train_x) == 3
    cache_dir = tmp_path / "dtd" / "split_fewshot"
    assert not cache_dir.exists() or not os.listdir(cache_dir)


def write_legacy_pickle(dataset_dir, split, num_shots, seed, per_class):
    """An ecosystem few-shot pickle: {"train", "val"} lists of Datum with absolute paths."""
    image_dir = os.path.join(dataset_dir, "images")
    data = {}
    for key in ("train", "val"):
        chosen, counts = [], {}
        for relpath, label, classname in split[key]:
            if counts.get(label, 0) < per_class:
                counts[label] = counts.get(label, 0) + 1
                chosen.append(Datum(impath=os.path.join(image_dir, relpath), label=label, classname=classname))
        data[key] = chosen
    path = os.path.join(dataset_dir, "split_fewshot", f"shot_{num_shots}-seed_{seed}.pkl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path, data


def test_legacy_pickle_is_read_as_is_and_never_rewritten(tmp_path):
    build_dtd(tmp_path)
    load(tmp_path, "DescribableTextures")  # writes the split json
    dataset_dir = tmp_path / "dtd"
    split = json.loads((dataset_dir / "split_zhou_DescribableTextures.json").read_text())
    pkl_path, data = write_legacy_pickle(str(dataset_dir), split, 2, 5, per_class=2)
    before = open(pkl_path, "rb").read()
    dataset = load(tmp_path, "DescribableTextures", num_shots=2, seed=5)
    assert [d.impath for d in dataset.train_x] == [d.impath for d in data["train"]]
    assert [d.impath for d in dataset.val] == [d.impath for d in data["val"]]
    assert open(pkl_path, "rb").read() == before
    assert not (dataset_dir / "split_fewshot" / "shot_2-seed_5.json").exists()


def test_legacy_pickle_survives_a_moved_root(tmp_path):
    build_dtd(tmp_path / "old")
    load(tmp_path / "old", "DescribableTextures")
    dataset_dir = tmp_path / "old" / "dtd"
    split = json.loads((dataset_dir / "split_zhou_DescribableTextures.json").read_text())
    _, data = write_legacy_pickle(str(dataset_dir), split, 1, 2, per_class=1)
    shutil.move(str(tmp_path / "old"), str(tmp_path / "new"))
    dataset = load(tmp_path / "new", "DescribableTextures", num_shots=1, seed=2)
    assert [os.path.relpath(d.impath, tmp_path / "new") for d in dataset.train_x] == [
        os.path.relpath(d.impath, tmp_path / "old") for d in data["train"]
    ]


def test_legacy_pickle_of_another_split_is_ignored_but_kept(tmp_path):
    build_dtd(tmp_path)
    load(tmp_path, "DescribableTextures")
    dataset_dir = tmp_path / "dtd"
    split = json.loads((dataset_dir / "split_zhou_DescribableTextures.json").read_text())
    split["train"][0][2] = "renamed class"  # the pickle now disagrees with the split on disk
    pkl_path, _ = write_legacy_pickle(str(dataset_dir), split, 2, 5, per_class=2)
    dataset = load(tmp_path, "DescribableTextures", num_shots=2, seed=5)
    assert "renamed class" not in dataset.classnames
    assert os.path.isfile(pkl_path) and (dataset_dir / "split_fewshot" / "shot_2-seed_5.json").is_file()


# ---- BaseNovelClassification ----------------------------------------------------------------


def test_base_novel_evaluator_numbers_lines_and_order(tmp_path, capsys):
    cfg = make_cfg(tmp_path, "DescribableTextures")
    lab2cname = {label: f"never-recorded-{label}" for label in range(5)}  # base = labels < ceil(5/2) = 3
    evaluator = BaseNovelClassification(cfg, lab2cname=lab2cname)
    labels = torch.tensor([0, 1, 2, 2, 3, 4, 4, 4])
    predictions = torch.tensor([0, 2, 2, 2, 3, 0, 4, 1])
    evaluator.process(torch.nn.functional.one_hot(predictions[:5], 5).float(), labels[:5])
    evaluator.process(torch.nn.functional.one_hot(predictions[5:], 5).float(), labels[5:])
    results = evaluator.evaluate()
    base_acc, novel_acc = 100 * 3 / 4, 100 * 2 / 4
    assert list(results)[0] == "accuracy" and results["accuracy"] == pytest.approx(100 * 5 / 8)
    assert results["base_accuracy"] == pytest.approx(base_acc)
    assert results["novel_accuracy"] == pytest.approx(novel_acc)
    assert results["harmonic_mean"] == pytest.approx(2 * base_acc * novel_acc / (base_acc + novel_acc))
    out = capsys.readouterr().out
    assert "=> result" in out and "* accuracy: 62.50%" in out
    assert "* base_accuracy: 75.00%\n* novel_accuracy: 50.00%\n* harmonic_mean: 60.00%" in out


SIX_TEXTURES = FIVE_TEXTURES + ["chequered"]


def base_novel_cfg(root, **dataset_keys):
    cfg = make_cfg(root, "DescribableTextures", seed=3, **dataset_keys)
    cfg.TEST.EVALUATOR = "BaseNovelClassification"
    cfg.DEVICE = "cpu"
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def open_world_and_all_spaces_with_the_same_names(tmp_path):
    """Configs of two label spaces with the same class names in the same order: the open-world space
    (ratio 40) of a six-texture DTD (1 base + 2 novel classes), and the "all" space of a DTD holding only
    those three textures (ceil(3/2) = 2 base classes)."""
    build_class_folders(os.path.join(tmp_path, "six", "dtd", "images"), SIX_TEXTURES)
    open_world = base_novel_cfg(tmp_path / "six", USE_RATIO=True, SUBSAMPLE_RATIO=40)
    selected, num_base = label_spaces.sample_open_world_labels(range(6), sorted(SIX_TEXTURES), 40, 3)
    assert num_base == 1 and len(selected) == 3
    names = [sorted(SIX_TEXTURES)[label] for label in selected]
    build_class_folders(os.path.join(tmp_path, "three", "dtd", "images"), names)
    return open_world, base_novel_cfg(tmp_path / "three"), names


def always_label_one(labels):
    """Logits [N, 3] that predict label 1 for each of `labels` [N]."""
    return torch.nn.functional.one_hot(torch.ones_like(labels), 3).float()


def expected_base_novel(test_items, num_base):
    """Base and novel accuracy (%) of always predicting label 1, counted directly."""
    base = [d.label == 1 for d in test_items if d.label < num_base]
    novel = [d.label == 1 for d in test_items if d.label >= num_base]
    return 100 * sum(base) / len(base), 100 * sum(novel) / len(novel)


def test_same_class_names_with_other_base_counts_evaluate_apart_in_one_process(tmp_path):
    open_world_cfg, all_cfg, names = open_world_and_all_spaces_with_the_same_names(tmp_path)
    # Both datasets are built before either evaluator: no fact of the first may leak into the second.
    managers = [DataManager(open_world_cfg), DataManager(all_cfg)]
    assert [list(dm.lab2cname.values()) for dm in managers] == [names, names]
    assert [dm.num_base_classes for dm in managers] == [1, 2]
    for cfg, dm, num_base in zip((open_world_cfg, all_cfg), managers, (1, 2)):
        evaluator = build_evaluator(cfg, lab2cname=dm.lab2cname, num_base_classes=dm.num_base_classes)
        labels = torch.tensor([d.label for d in dm.dataset.test])  # [N]
        evaluator.process(always_label_one(labels), labels)
        results = evaluator.evaluate()
        base_acc, novel_acc = expected_base_novel(dm.dataset.test, num_base)
        assert (results["base_accuracy"], results["novel_accuracy"]) == pytest.approx((base_acc, novel_acc))
    assert expected_base_novel(managers[0].dataset.test, 1) == (0.0, 50.0)  # label 1 is novel here ...
    assert expected_base_novel(managers[1].dataset.test, 2) == (50.0, 0.0)  # ... and base here


def test_the_trainer_hands_the_datasets_base_count_to_the_evaluator(tmp_path):
    class AlwaysLabelOne(SimpleTrainer):
        def build_model(self):
            pass

        def parse_batch_test(self, batch):
            return batch["label"], batch["label"]

        def model_inference(self, labels):
            return always_label_one(labels)

    open_world_cfg, _, _ = open_world_and_all_spaces_with_the_same_names(tmp_path)
    trainer = AlwaysLabelOne(open_world_cfg)
    assert trainer.num_base_classes == trainer.dm.dataset.num_base_classes == 1
    trainer.test()
    assert expected_base_novel(trainer.dm.dataset.test, 1) == (0.0, 50.0)
    assert (trainer.last_results["base_accuracy"], trainer.last_results["novel_accuracy"]) == pytest.approx((0.0, 50.0))


def test_base_novel_evaluator_needs_the_count_of_an_open_world_space(tmp_path):
    cfg = base_novel_cfg(tmp_path, USE_RATIO=True, SUBSAMPLE_RATIO=40)
    with pytest.raises(ValueError, match=r"open-world label space \(DATASET.USE_RATIO True\) needs num_base_classes"):
        BaseNovelClassification(cfg, lab2cname={0: "a", 1: "b", 2: "c"})
    assert BaseNovelClassification(cfg, lab2cname={0: "a", 1: "b", 2: "c"}, num_base_classes=1).num_base == 1


def test_base_novel_evaluator_rejects_a_base_only_space(tmp_path):
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES 'all'"):
        BaseNovelClassification(make_cfg(tmp_path, "X", subsample="base"), lab2cname={0: "a"})
