"""Miniature `$DATA` trees of every dataset layout, and loading each one.

The `build_*` helpers are imported by the other `test_datasets_*` files.
"""

import io
import json
import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

import datasets  # noqa: F401  (registers datasets, evaluator and config keys)
from dassl.config import extend_cfg, get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY


def _tiny_jpeg():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


JPEG_BYTES = _tiny_jpeg()


def write_image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(JPEG_BYTES)


def write_text(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def make_cfg(root, name, num_shots=-1, seed=1, subsample="all", **dataset_keys):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = num_shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    for key, value in dataset_keys.items():
        setattr(cfg.DATASET, key, value)
    cfg.SEED = seed
    return cfg


def load(root, name, **kwargs):
    return DATASET_REGISTRY.get(name)(make_cfg(root, name, **kwargs))


def build_class_folders(image_dir, folders, per_class=10, ext=".jpg"):
    for folder in folders:
        for index in range(per_class):
            write_image(os.path.join(image_dir, folder, f"{folder}_{index:03d}{ext}"))


def build_split_json(dataset_dir, image_subdir, split_file, classnames, sizes=(6, 3, 4), folder_of=None):
    """Images `<image_subdir>/<folder>/<split>_<i>.jpg` and a split json listing them."""
    split = {}
    for key, size in zip(("train", "val", "test"), sizes):
        split[key] = []
        for label, name in enumerate(classnames):
            folder = folder_of(name) if folder_of else name.replace(" ", "_")
            for index in range(size):
                relpath = f"{folder}/{key}_{index}.jpg"
                write_image(os.path.join(dataset_dir, image_subdir, relpath))
                split[key].append([relpath, label, name])
    with open(os.path.join(dataset_dir, split_file), "w") as f:
        json.dump(split, f)


# ---- one builder per layout; each returns the expected class names in label order ----------


def build_caltech101(root):
    build_class_folders(
        os.path.join(root, "caltech-101", "101_ObjectCategories"),
        ["accordion", "airplanes", "Faces", "Leopards", "BACKGROUND_Google", "Faces_easy"],
    )
    return ["face", "leopard", "accordion", "airplane"]


def build_oxford_pets(root):
    lines = {"trainval.txt": [], "test.txt": []}
    for class_id, breed in enumerate(["Abyssinian", "american_bulldog", "basset_hound"], start=1):
        for index in range(15):
            imname = f"{breed}_{index + 1}"
            write_image(os.path.join(root, "oxford_pets", "images", imname + ".jpg"))
            target = "trainval.txt" if index < 10 else "test.txt"
            lines[target].append(f"{imname} {class_id} 1 {class_id}")
    for filename, content in lines.items():
        write_text(os.path.join(root, "oxford_pets", "annotations", filename), ["#header"] + content)
    return ["abyssinian", "american_bulldog", "basset_hound"]


def build_stanford_cars(root):
    base = os.path.join(root, "stanford_cars")
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    meta = np.zeros((1, len(names)), dtype=object)
    for index, name in enumerate(names):
        meta[0, index] = np.array([name])
    os.makedirs(os.path.join(base, "devkit"))
    scipy.io.savemat(os.path.join(base, "devkit", "cars_meta.mat"), {"class_names": meta})
    for folder, anno_file, count in (
        ("cars_train", os.path.join(base, "devkit", "cars_train_annos.mat"), 10),
        ("cars_test", os.path.join(base, "cars_test_annos_withlabels.mat"), 4),
    ):
        annotations = np.zeros((1, count), dtype=[("fname", "O"), ("class", "O")])
        for index in range(count):
            annotations[0, index]["fname"] = np.array([f"{index:05d}.jpg"])
            annotations[0, index]["class"] = np.array([[index % 2 + 1]], dtype=np.uint8)
            write_image(os.path.join(base, folder, f"{index:05d}.jpg"))
        scipy.io.savemat(anno_file, {"annotations": annotations})
    return ["2000 AM General Hummer SUV", "2012 Acura RL Sedan"]


def build_oxford_flowers(root):
    base = os.path.join(root, "oxford_flowers")
    labels = [1] * 10 + [2] * 10 + [3] * 10
    for index in range(len(labels)):
        write_image(os.path.join(base, "jpg", f"image_{index + 1:05d}.jpg"))
    scipy.io.savemat(os.path.join(base, "imagelabels.mat"), {"labels": np.array([labels])})
    with open(os.path.join(base, "cat_to_name.json"), "w") as f:
        json.dump({"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells"}, f)
    return ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]


def build_food101(root):
    names = ["apple_pie", "baby_back_ribs", "baklava"]
    build_split_json(os.path.join(root, "food-101"), "images", "split_zhou_Food101.json", names)
    return names


def build_fgvc_aircraft(root):
    base = os.path.join(root, "fgvc_aircraft")
    variants = ["707-320", "A300B4", "Cessna 172"]
    write_text(os.path.join(base, "variants.txt"), variants)
    for part, count in (("train", 4), ("val", 2), ("test", 3)):
        lines = []
        for variant in variants:
            for index in range(count):
                image_id = f"{part}{variant.replace(' ', '').replace('-', '')}{index}"
                write_image(os.path.join(base, "images", image_id + ".jpg"))
                lines.append(f"{image_id} {variant}")
        write_text(os.path.join(base, f"images_variant_{part}.txt"), lines)
    return variants


def build_sun397(root):
    base = os.path.join(root, "sun397")
    categories = ["/a/abbey", "/b/bedroom", "/c/church/outdoor"]
    write_text(os.path.join(base, "ClassName.txt"), categories)
    partitions = {"Training_01.txt": [], "Testing_01.txt": []}
    for category in categories:
        for index in range(10):
            relpath = f"{category}/sun_{index}.jpg"
            write_image(os.path.join(base, "SUN397", relpath[1:]))
            partitions["Training_01.txt" if index < 6 else "Testing_01.txt"].append(relpath)
    for filename, lines in partitions.items():
        write_text(os.path.join(base, filename), lines)
    return ["abbey", "bedroom", "outdoor church"]


def build_dtd(root):
    build_class_folders(os.path.join(root, "dtd", "images"), ["banded", "blotchy", "braided"])
    return ["banded", "blotchy", "braided"]


def build_eurosat(root):
    build_class_folders(os.path.join(root, "eurosat", "2750"), ["AnnualCrop", "Forest", "SeaLake"])
    return ["Annual Crop Land", "Forest", "Sea or Lake"]


def build_ucf101(root):
    base = os.path.join(root, "ucf101")
    actions = ["ApplyEyeMakeup", "Archery", "BabyCrawling"]
    write_text(os.path.join(base, "ucfTrainTestlist", "classInd.txt"), [f"{i + 1} {a}" for i, a in enumerate(actions)])
    lists = {"trainlist01.txt": [], "testlist01.txt": []}
    for class_id, action in enumerate(actions, start=1):
        renamed = {"ApplyEyeMakeup": "Apply_Eye_Makeup", "Archery": "Archery", "BabyCrawling": "Baby_Crawling"}[action]
        for index in range(10):
            video = f"v_{action}_g{index:02d}_c01"
            write_image(os.path.join(base, "UCF-101-midframes", renamed, video + ".jpg"))
            if index < 6:
                lists["trainlist01.txt"].append(f"{action}/{video}.avi {class_id}")
            else:
                lists["testlist01.txt"].append(f"{action}/{video}.avi")
    for filename, lines in lists.items():
        write_text(os.path.join(base, "ucfTrainTestlist", filename), lines)
    return ["Apply_Eye_Makeup", "Archery", "Baby_Crawling"]


WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]
IMAGENET_NAMES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark"]


def write_classnames(dataset_dir):
    write_text(os.path.join(dataset_dir, "classnames.txt"), [f"{w} {n}" for w, n in zip(WNIDS, IMAGENET_NAMES)])


def build_imagenet(root):
    base = os.path.join(root, "imagenet")
    write_classnames(base)
    build_class_folders(os.path.join(base, "images", "train"), WNIDS, per_class=6, ext=".JPEG")
    build_class_folders(os.path.join(base, "images", "val"), WNIDS, per_class=2, ext=".JPEG")
    return IMAGENET_NAMES


def build_imagenetv2(root):
    base = os.path.join(root, "imagenetv2")
    write_classnames(base)
    build_class_folders(os.path.join(base, "imagenetv2-matched-frequency-format-val"), [str(i) for i in range(5)], 2)
    return IMAGENET_NAMES


def build_imagenet_sketch(root):
    base = os.path.join(root, "imagenet-sketch")
    write_classnames(base)
    build_class_folders(os.path.join(base, "images"), WNIDS, 2)
    return IMAGENET_NAMES


def build_imagenet_a(root):
    base = os.path.join(root, "imagenet-adversarial")
    write_classnames(base)
    build_class_folders(os.path.join(base, "imagenet-a"), [WNIDS[1], WNIDS[3]], 2)  # a subset of the classes
    write_text(os.path.join(base, "imagenet-a", "README.txt"), ["not a class"])
    return [IMAGENET_NAMES[1], IMAGENET_NAMES[3]]


def build_imagenet_r(root):
    base = os.path.join(root, "imagenet-rendition")
    write_classnames(base)
    build_class_folders(os.path.join(base, "imagenet-r"), [WNIDS[0], WNIDS[4]], 2)
    return [IMAGENET_NAMES[0], IMAGENET_NAMES[4]]


def build_remote_sensing(dataset_dir, image_subdir):
    def builder(root):
        build_class_folders(os.path.join(root, dataset_dir, image_subdir), ["BareLand", "harbor&port", "parking_lot"])
        return ["bare land", "harbor and port", "parking lot"]

    return builder


# name -> (builder, #train, #val, #test) for the images above
LAYOUTS = {
    "Caltech101": (build_caltech101, 20, 8, 12),
    "OxfordPets": (build_oxford_pets, 24, 6, 15),
    "StanfordCars": (build_stanford_cars, 8, 2, 4),
    "OxfordFlowers": (build_oxford_flowers, 15, 6, 9),
    "Food101": (build_food101, 18, 9, 12),
    "FGVCAircraft": (build_fgvc_aircraft, 12, 6, 9),
    "SUN397": (build_sun397, 15, 3, 12),
    "DescribableTextures": (build_dtd, 15, 6, 9),
    "EuroSAT": (build_eurosat, 15, 6, 9),
    "UCF101": (build_ucf101, 15, 3, 12),
    "ImageNet": (build_imagenet, 30, 10, 10),
    "ImageNetV2": (build_imagenetv2, 10, 0, 10),
    "ImageNetSketch": (build_imagenet_sketch, 10, 0, 10),
    "ImageNetA": (build_imagenet_a, 4, 0, 4),
    "ImageNetR": (build_imagenet_r, 4, 0, 4),
    "AID": (build_remote_sensing("AID", "AID_dataset"), 15, 6, 9),
    "MLRSNet": (build_remote_sensing("MLRSNet", "Images"), 15, 6, 9),
    "OPTIMAL": (build_remote_sensing("OPTIMAL", "Images"), 15, 6, 9),
    "PatternNet": (build_remote_sensing("PatternNet", "images"), 15, 6, 9),
    "RESISC45": (build_remote_sensing("RESISC45", "images"), 15, 6, 9),
    "RSICB128": (build_remote_sensing("RSICB128", "images"), 15, 6, 9),
    "RSICB256": (build_remote_sensing("RSICB256", "images"), 15, 6, 9),
    "RSICD": (build_remote_sensing("RSICD", "RSICD"), 15, 6, 9),
    "WHURS19": (build_remote_sensing("WHURS19", "images"), 15, 6, 9),
    "UCM": (build_remote_sensing("UCM", "images"), 15, 6, 9),
    "RSITMD": (build_remote_sensing("RSITMD", "images"), 15, 6, 9),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_loads_with_its_class_names_and_split_sizes(tmp_path, name):
    builder, n_train, n_val, n_test = LAYOUTS[name]
    expected_names = builder(tmp_path)
    dataset = load(tmp_path, name)
    assert dataset.classnames == expected_names
    assert dataset.num_classes == len(expected_names)
    assert (len(dataset.train_x), len(dataset.val or []), len(dataset.test)) == (n_train, n_val, n_test)
    for item in dataset.train_x + dataset.test:
        assert os.path.isfile(item.impath)
        assert dataset.lab2cname[item.label] == item.classname


def test_every_registered_dataset_has_a_layout_test_and_a_yaml():
    from datasets.base import SplitDataset

    names = {n for n in DATASET_REGISTRY.registered_names() if issubclass(DATASET_REGISTRY.get(n), SplitDataset)}
    generated = {n for n in names if DATASET_REGISTRY.get(n).__module__ == "datasets.micro_world"}  # own tests
    assert names - {"ImageFolder"} - generated == set(LAYOUTS)
    config_dir = os.path.join(os.path.dirname(__file__), "..", "configs", "datasets")
    yaml_names = set()
    for filename in os.listdir(config_dir):
        cfg = get_cfg_default()
        extend_cfg(cfg)
        cfg.merge_from_file(os.path.join(config_dir, filename))
        yaml_names.add(cfg.DATASET.NAME)
    assert yaml_names == names


def test_generated_split_is_saved_and_read_back_identically(tmp_path):
    build_dtd(tmp_path)
    first = load(tmp_path, "DescribableTextures")
    split_path = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    saved = json.loads(split_path.read_text())
    assert [len(saved[k]) for k in ("train", "val", "test")] == [15, 6, 9]
    assert all(not relpath.startswith("/") for relpath, _, _ in saved["train"])
    second = load(tmp_path, "DescribableTextures")
    assert [d.impath for d in first.train_x] == [d.impath for d in second.train_x]


def test_imagenet_uses_test_as_val_and_caches_its_listing(tmp_path):
    build_imagenet(tmp_path)
    dataset = load(tmp_path, "ImageNet")
    assert dataset.val is dataset.test
    listing = json.loads((tmp_path / "imagenet" / "split_ImageNet.json").read_text())
    assert listing["train"][0][0].startswith("train/n01440764/")


def test_imagenet_reads_ecosystem_preprocessed_pickle_after_a_move(tmp_path):
    import pickle

    from dassl.data.datasets import Datum

    old_root = tmp_path / "old"
    build_imagenet(old_root)
    train_dir = old_root / "imagenet" / "images" / "train" / WNIDS[0]
    val_dir = old_root / "imagenet" / "images" / "val" / WNIDS[0]
    data = {
        "train": [Datum(str(p), 0, 0, "tench") for p in sorted(train_dir.iterdir())],
        "test": [Datum(str(p), 0, 0, "tench") for p in sorted(val_dir.iterdir())],
    }
    with open(old_root / "imagenet" / "preprocessed.pkl", "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    new_root = tmp_path / "moved"
    os.rename(old_root, new_root)
    dataset = load(new_root, "ImageNet")
    assert (len(dataset.train_x), len(dataset.test)) == (6, 2)
    assert all(d.impath.startswith(str(new_root)) for d in dataset.train_x)
    assert not (new_root / "imagenet" / "split_ImageNet.json").exists()


def test_missing_dataset_folder_names_path_root_and_docs(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load(tmp_path, "OxfordPets")
    message = str(info.value)
    assert str(tmp_path / "oxford_pets") in message and f"under DATASET.ROOT {tmp_path}" in message
    assert "docs/DATASETS.md" in message


def test_split_entry_pointing_nowhere_is_reported_with_dataset_and_file(tmp_path):
    build_food101(tmp_path)
    missing = tmp_path / "food-101" / "images" / "baklava" / "test_2.jpg"
    missing.unlink()
    with pytest.raises(FileNotFoundError) as info:
        load(tmp_path, "Food101")
    assert "Food101" in str(info.value) and str(missing) in str(info.value)


def test_empty_class_folder_is_reported(tmp_path):
    build_dtd(tmp_path)
    os.makedirs(tmp_path / "dtd" / "images" / "zigzagged")
    with pytest.raises(ValueError, match="zigzagged.*empty"):
        load(tmp_path, "DescribableTextures")


def test_missing_split_and_annotations_point_to_download(tmp_path):
    os.makedirs(tmp_path / "oxford_pets" / "images")
    with pytest.raises(FileNotFoundError, match="split_zhou_OxfordPets.json.*annotations/trainval.txt"):
        load(tmp_path, "OxfordPets")


def test_image_folder_dataset_from_config_only(tmp_path):
    build_class_folders(tmp_path / "my_data", ["golden_retriever", "TabbyCat"], per_class=10)
    cfg = make_cfg(tmp_path, "ImageFolder")
    cfg.DATASET.IMAGE_FOLDER.DIR = "my_data"
    dataset = DATASET_REGISTRY.get("ImageFolder")(cfg)
    assert dataset.classnames == ["tabby cat", "golden retriever"]  # sorted folders: "TabbyCat" < "golden_retriever"
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (10, 4, 6)
    assert (tmp_path / "my_data" / "split.json").is_file()
    cfg.DATASET.NUM_SHOTS = 2
    few = DATASET_REGISTRY.get("ImageFolder")(cfg)  # the split json and split_fewshot/ are not classes
    assert few.classnames == dataset.classnames and len(few.train_x) == 4


def test_image_folder_without_dir_explains_the_key(tmp_path):
    with pytest.raises(ValueError, match="DATASET.IMAGE_FOLDER.DIR"):
        DATASET_REGISTRY.get("ImageFolder")(make_cfg(tmp_path, "ImageFolder"))
