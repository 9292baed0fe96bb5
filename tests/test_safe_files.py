"""Files never run code, and never lead outside the dataset (docs/ENGINE.md "Files never run code", docs/DATASETS.md
"Where the images may be"): crafted pickles and config files whose execution would create a marker file, split and
few-shot entries that escape the image folder (by path or by symbolic link), and an image too large to decode."""
import json
import os
import pickle
import shutil
import struct
import zlib

import pytest
from PIL import Image

from dassl.data.datasets import Datum
from dassl.utils import read_image
from dassl.utils.safe_pickle import ForbiddenPickleContent
from runs.config import build_parser, setup_cfg
from runs.errors import UsageError
from tests.payloads import MarkerPayload
from tests.test_cli_errors import fails
from tests.test_datasets_trees import WNIDS, build_food101, build_imagenet, load, write_image
from tests.toy_data import make_toy_dataset, toy_opts


def toy_run(data, out, extra=()):
    return ["--root", str(data), "--seed", "1", "--trainer", "CoOp", "--output-dir", str(out),
            *toy_opts(str(data), epochs=1), *extra]


# ---- ImageNet's legacy preprocessed.pkl -----------------------------------------------------


def write_preprocessed(root, data, protocol=pickle.HIGHEST_PROTOCOL):
    path = root / "imagenet" / "preprocessed.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


def test_a_crafted_imagenet_preprocessed_pickle_is_refused_without_running_it(tmp_path):
    build_imagenet(tmp_path)
    marker = tmp_path / "payload-ran"
    pkl = write_preprocessed(tmp_path, {"train": [MarkerPayload(str(marker))], "test": []})
    with pytest.raises(ForbiddenPickleContent, match=rf"^{pkl} asks to load \"io.open\""):
        load(tmp_path, "ImageNet")
    assert not marker.exists()
    assert not (tmp_path / "imagenet" / "split_ImageNet.json").exists()  # nothing was generated in its place


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])  # CoOp wrote HIGHEST_PROTOCOL
def test_a_legitimate_imagenet_preprocessed_pickle_still_loads(tmp_path, protocol):
    build_imagenet(tmp_path)
    val = sorted((tmp_path / "imagenet" / "images" / "val" / WNIDS[1]).iterdir())
    train_images = sorted((tmp_path / "imagenet" / "images" / "train" / WNIDS[1]).iterdir())
    write_preprocessed(tmp_path, {"train": [Datum(str(p), 0, 0, "goldfish") for p in train_images[:3]],
                                  "test": [Datum(str(p), 0, 0, "goldfish") for p in val]}, protocol)
    dataset = load(tmp_path, "ImageNet")
    assert [d.impath for d in dataset.train_x] == [str(p) for p in train_images[:3]]
    assert [d.impath for d in dataset.test] == [str(p) for p in val]


def test_an_imagenet_preprocessed_pickle_may_not_climb_out_of_the_folder(tmp_path):
    build_imagenet(tmp_path)
    write_image(str(tmp_path / "secret.JPEG"))
    escaping = str(tmp_path / "imagenet" / "images" / ".." / ".." / "secret.JPEG")
    pkl = write_preprocessed(tmp_path, {"train": [Datum(escaping, 0, 0, "tench")], "test": []})
    with pytest.raises(ValueError) as info:
        load(tmp_path, "ImageNet")
    assert str(info.value).startswith(f"{pkl} lists 'images/../../secret.JPEG', a path outside the folder")


# ---- config files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root), per_class=(2, 1, 1))
    return root


@pytest.mark.parametrize("flag", ["--config-file", "--dataset-config-file"])
def test_a_python_config_file_is_refused_before_it_is_read(flag, toy_data, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    config = tmp_path / "evil.py"
    config.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\ncfg = {{}}\n")
    out = tmp_path / "out"
    line = fails([flag, str(config), *toy_run(toy_data, out)], capsys, str(out))
    assert line == (f"error: {flag} {config} is not a .yaml/.yml file: config files are plain YAML only (a .py "
                    "config would run code); write its keys as KEY: value lines in a .yaml file")
    assert not marker.exists()


def test_a_python_tag_in_a_yaml_config_is_one_line_and_never_runs(toy_data, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"OPTIM:\n  NAME: sgd\n  LR: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    out = tmp_path / "out"
    line = fails(["--config-file", str(config), *toy_run(toy_data, out)], capsys, str(out))
    assert line == (f"error: {config} is not plain YAML (could not determine a constructor for the tag "
                    "'tag:yaml.org,2002:python/object/apply:os.system' at line 3): a config file holds KEY: value "
                    "lines of numbers, strings and lists only, no !!python tags; fix that line")
    assert not marker.exists()


def test_merging_a_file_never_calls_a_code_running_loader(tmp_path, monkeypatch):
    """Even past check_arguments (setup_cfg called directly), a .py file is only ever parsed as YAML, and yacs's
    loader (which imports .py files) is never called."""
    from yacs.config import CfgNode

    def forbidden(*args, **kwargs):
        raise AssertionError("yacs's load_cfg was called")

    monkeypatch.setattr(CfgNode, "load_cfg", forbidden)
    args = build_parser().parse_args(["--config-file", "configs/trainers/CoOp/vit_b16_ep50.yaml"])
    cfg = setup_cfg(args)
    assert (cfg.OPTIM.MAX_EPOCH, cfg.MODEL.BACKBONE.NAME) == (50, "ViT-B/16")

    marker = tmp_path / "payload-ran"
    config = tmp_path / "evil.py"
    config.write_text(f"open({str(marker)!r}, 'w')\n")
    with pytest.raises(UsageError, match=rf"^{config} holds a YAML str, not a mapping of config keys"):
        setup_cfg(build_parser().parse_args(["--config-file", str(config)]))
    assert not marker.exists()
    dated = tmp_path / "dated.yaml"
    dated.write_text("OPTIM:\n  NAME: 2024-01-01\n")
    with pytest.raises(UsageError) as info:
        setup_cfg(build_parser().parse_args(["--config-file", str(dated)]))
    assert str(info.value) == (f"{dated}: Key OPTIM.NAME with value <class 'datetime.date'> is not a valid type: "
                               "config values are numbers, strings, booleans, lists or null; quote it to make it a "
                               "string")


# ---- split and few-shot entries stay inside the image folder ---------------------------------


def food101_with_secret(root):
    """A Food101 tree, its split file, and an image outside `$DATA`."""
    data = root / "data"
    build_food101(str(data))
    secret = root / "outside" / "secret.jpg"
    write_image(str(secret))
    return data, data / "food-101" / "split_zhou_Food101.json", secret


def edit_json(path, edit):
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


@pytest.mark.parametrize("entry", ["ABSOLUTE", "../../../outside/secret.jpg",
                                   "apple_pie/../../../../outside/secret.jpg"])
def test_a_split_entry_outside_the_image_folder_is_refused(tmp_path, entry):
    data, split, secret = food101_with_secret(tmp_path)
    entry = str(secret) if entry == "ABSOLUTE" else entry
    assert os.path.isfile(os.path.join(data, "food-101", "images", entry))  # it would have been read
    edit_json(split, lambda s: s["train"][0].__setitem__(0, entry))
    with pytest.raises(ValueError) as info:
        load(data, "Food101")
    assert str(info.value).startswith(f"{split} lists {entry!r}, a path outside the folder its paths are relative to "
                                      f"({data / 'food-101' / 'images'})")


def test_dots_inside_a_file_name_are_not_a_way_out():
    from datasets.splits import path_inside

    assert path_inside("/data/x", "a/b..c.jpg", "split.json") == "/data/x/a/b..c.jpg"
    assert path_inside("/data/x", "..a/b.jpg", "split.json") == "/data/x/..a/b.jpg"
    with pytest.raises(ValueError, match=r"^split.json lists 'a/\.\./\.\./b.jpg', a path outside the folder"):
        path_inside("/data/x", "a/../../b.jpg", "split.json")


def test_a_split_entry_outside_the_folder_is_one_line_through_the_cli(toy_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    secret = tmp_path / "secret.png"
    shutil.copy(data / "toy" / "black_cross" / "0.png", secret)
    edit_json(data / "toy" / "split.json", lambda s: s["train"][0].__setitem__(0, str(secret)))
    out = tmp_path / "out"
    line = fails(toy_run(data, out), capsys, str(out))
    assert line.startswith(f"error: {data / 'toy' / 'split.json'} lists '{secret}', a path outside the folder")


def test_a_fewshot_cache_entry_outside_the_folder_is_refused(tmp_path):
    data, _, secret = food101_with_secret(tmp_path)
    load(data, "Food101", num_shots=1)
    cache = data / "food-101" / "split_fewshot" / "shot_1-seed_1.json"
    edit_json(cache, lambda c: c["splits"]["train"][0].__setitem__(0, "../../outside/secret.jpg"))
    with pytest.raises(ValueError, match=rf"^{cache} lists '\.\./\.\./outside/secret\.jpg', a path outside"):
        load(data, "Food101", num_shots=1)


def test_a_link_out_of_the_image_folder_is_refused(tmp_path):
    data, _, secret = food101_with_secret(tmp_path)
    images = data / "food-101" / "images"
    linked_file = images / "apple_pie" / "train_0.jpg"
    linked_file.unlink()
    linked_file.symlink_to(secret)
    with pytest.raises(ValueError) as info:
        load(data, "Food101")
    assert str(info.value).startswith(f"Food101: the split lists {linked_file}, which leads to {secret}, outside the "
                                      f"image folder {images}")
    linked_file.unlink()
    write_image(str(linked_file))
    moved = tmp_path / "outside" / "baklava"
    shutil.move(images / "baklava", moved)
    (images / "baklava").symlink_to(moved)  # a class folder linked out
    with pytest.raises(ValueError, match=rf"^Food101: the split lists {images}/baklava/\w+_0.jpg, which leads to "
                                         rf"{moved}/\w+_0.jpg, outside the image folder"):
        load(data, "Food101")


def test_links_to_a_whole_dataset_or_image_folder_and_links_within_it_work(tmp_path):
    data, _, _ = food101_with_secret(tmp_path)
    expected = [d.impath for d in load(data, "Food101").train_x]
    images = data / "food-101" / "images"
    inside = images / "apple_pie" / "train_0.jpg"
    inside.unlink()
    inside.symlink_to(images / "baklava" / "train_1.jpg")  # a link that stays inside the image folder
    big_disk = tmp_path / "big_disk"
    shutil.move(data / "food-101", big_disk / "food-101")
    (data / "food-101").symlink_to(big_disk / "food-101")  # $DATA/food-101 -> /big/disk/food-101
    assert [d.impath for d in load(data, "Food101").train_x] == expected
    shutil.move(big_disk / "food-101" / "images", big_disk / "food-images")
    (big_disk / "food-101" / "images").symlink_to(big_disk / "food-images")  # food-101/images -> elsewhere
    assert [d.impath for d in load(data, "Food101").train_x] == expected


# ---- images larger than PIL's safety limit -------------------------------------------------


def write_png_header(path, width, height):
    """A PNG that declares `width` x `height` RGB pixels but holds none (PIL checks the size when it opens it)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


def test_an_image_over_the_pixel_limit_names_the_file_and_the_fix(tmp_path):
    bomb = tmp_path / "huge.png"
    write_png_header(bomb, 20000, 20000)
    assert os.path.getsize(bomb) < 100
    with pytest.raises(Image.DecompressionBombError):  # what PIL itself says (no file name)
        Image.open(bomb)
    with pytest.raises(ValueError) as info:
        read_image(str(bomb))
    message = str(info.value)
    assert message.startswith(f'Image "{bomb}" is larger than PIL\'s safety limit of {2 * Image.MAX_IMAGE_PIXELS} '
                              "pixels (Image size (400000000 pixels) exceeds limit")
    assert message.endswith("resize it, or remove it from the split.") and "\n" not in message


@pytest.mark.parametrize("workers", ["0", "1"])  # 1: the error comes from a DataLoader worker process
def test_an_image_over_the_pixel_limit_is_one_line_and_exit_2_through_the_cli(workers, toy_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    for image in (data / "toy").glob("*/*.png"):  # every image, so the first batch surely holds one
        write_png_header(image, 20000, 20000)
    out = tmp_path / "out"
    line = fails(toy_run(data, out, extra=["DATALOADER.NUM_WORKERS", workers]), capsys, str(out))
    assert line.startswith("error: Dataset ImageFolder, item ") and f"cannot read {data / 'toy'}" in line
    assert "is larger than PIL's safety limit" in line and line.endswith("resize it, or remove it from the split.")
