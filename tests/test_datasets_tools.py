"""`python -m datasets.verify` and `python -m datasets.download` (gdown replaced: no network)."""

import io
import os
import subprocess
import sys
import tarfile

import pytest

from datasets import download, verify
from tests.test_datasets_trees import LAYOUTS, build_dtd, build_food101, build_imagenet_a, build_oxford_pets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_verify_reports_deleted_and_corrupted_images(tmp_path, capsys):
    build_food101(tmp_path)
    deleted = tmp_path / "food-101" / "images" / "baklava" / "test_1.jpg"
    corrupted = tmp_path / "food-101" / "images" / "apple_pie" / "train_0.jpg"
    deleted.unlink()
    corrupted.write_bytes(b"definitely not a jpeg")
    status = verify.main(["--root", str(tmp_path), "--datasets", "Food101"])
    out = capsys.readouterr().out
    assert status == 1
    assert f"missing image: {deleted}" in out
    assert f"unreadable image: {corrupted}" in out
    report = verify.verify_dataset(verify.builtin_datasets()["Food101"], str(tmp_path))
    assert report.splits == [("train", 18, 18, 1), ("val", 9, 9, 0), ("test", 12, 11, 0)]
    assert report.missing_images == [str(deleted)]
    assert not report.complete


def test_verify_lists_expected_files_and_empty_folders(tmp_path, capsys):
    build_dtd(tmp_path)
    os.makedirs(tmp_path / "dtd" / "images" / "zigzagged")
    build_oxford_pets(tmp_path)  # no split json yet: the split is listed from the annotations
    build_imagenet_a(tmp_path)
    status = verify.main(["--root", str(tmp_path), "--datasets", "DescribableTextures", "OxfordPets", "ImageNetA", "EuroSAT"])
    out = capsys.readouterr().out
    assert status == 1
    assert f"empty folder: {tmp_path / 'dtd' / 'images' / 'zigzagged'}" in out
    assert "split_zhou_OxfordPets.json" in out and "MISSING" in out
    assert not os.path.exists(tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json")  # verify writes nothing
    reports = {name: verify.verify_dataset(verify.builtin_datasets()[name], str(tmp_path)) for name in ("ImageNetA", "EuroSAT")}
    assert reports["ImageNetA"].complete and reports["ImageNetA"].splits == [("test", 4, 4, 0)]
    assert not reports["EuroSAT"].folder_found


def test_verify_of_a_complete_tree_succeeds(tmp_path, capsys):
    build_food101(tmp_path)
    assert verify.main(["--root", str(tmp_path), "--datasets", "Food101", "--check", "decode"]) == 0
    assert "complete" in capsys.readouterr().out


def test_verify_fails_when_what_it_checks_is_missing(tmp_path, capsys):
    assert verify.main(["--root", str(tmp_path)]) == 1  # an empty $DATA: every dataset missing
    out, err = capsys.readouterr()
    assert "missing or incomplete" in err and "pass --datasets" in err
    (row,) = [line.split(None, 1) for line in out.splitlines() if line.startswith("DescribableTextures ")]
    assert row[1] == f"not found: no folder {tmp_path / 'dtd'}{os.sep}"  # names the folder it expects
    assert verify.main(["--root", str(tmp_path), "--datasets", "EuroSAT"]) == 1


def test_verify_answers_a_missing_root_at_once_in_one_line(tmp_path):
    """Before the datasets are imported: a `torch` that cannot be imported shows that it is not."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('torch was imported')\n")
    done = subprocess.run([sys.executable, "-m", "datasets.verify", "--root", str(tmp_path / "nope")], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), REPO])})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"error: --root {tmp_path / 'nope'} is not a folder: pass the folder that holds your "
                           "datasets ($DATA; layout in docs/DATASETS.md)\n")


def test_verify_rejects_unknown_dataset(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        verify.main(["--root", str(tmp_path), "--datasets", "Imagenet"])
    assert stop.value.code == 2
    (error,) = capsys.readouterr().err.strip().splitlines()  # one line
    assert error.startswith("error: unknown dataset(s) ['Imagenet']; choose from [")
    assert "'ImageNet'" in error and "'Food101'" in error  # the names it knows, the right spelling among them


def _tar_gz_with(name, content):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_download_fetches_split_and_extracts_archives(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_download(url=None, output=None, quiet=False, id=None, **kwargs):
        calls.append(id or url)
        payload = _tar_gz_with("images/a.jpg" if "images" in output else "annotations/list.txt", b"x") if output.endswith(".tar.gz") else b"{}"
        with open(output, "wb") as f:
            f.write(payload)
        return output

    import gdown

    monkeypatch.setattr(gdown, "download", fake_download)
    assert download.main(["OxfordPets", "--root", str(tmp_path)]) == 0
    base = tmp_path / "oxford_pets"
    assert (base / "split_zhou_OxfordPets.json").read_text() == "{}"
    assert (base / "images" / "a.jpg").is_file() and (base / "annotations" / "list.txt").is_file()
    assert not (base / "images.tar.gz").exists()
    assert calls[0] == "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"
    assert download.main(["OxfordPets", "--root", str(tmp_path)]) == 0  # everything present: skipped
    assert len(calls) == 3 and "skipped" in capsys.readouterr().out


def offline_after_a_partial_file(url=None, output=None, quiet=False, id=None, **kwargs):
    """gdown losing the network mid-file: its partial file (``<name><random>.part``) stays beside ``output``."""
    with open(f"{output}x1y2.part", "wb") as f:
        f.write(b"half a file")
    raise ConnectionError("Network is unreachable")


def test_download_offline_prints_manual_steps_and_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    import gdown

    monkeypatch.setattr(gdown, "download", offline_after_a_partial_file)
    assert download.main(["Caltech101", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Manual steps" in out
    assert f"Then check with: python -m datasets.verify --root {tmp_path} --datasets Caltech101." in out
    assert "https://drive.google.com/file/d/1hyarUivQE36mY6jSomru6Fjd-JzwcCzN/view" in out
    assert str(tmp_path / "caltech-101" / "split_zhou_Caltech101.json") in out
    assert "Network is unreachable" in out
    assert os.listdir(tmp_path) == []  # no empty caltech-101/ to mistake for a dataset, no partial file

    assert download.main(["Caltech101", "--root", str(tmp_path / "new" / "data")]) == 1
    assert os.listdir(tmp_path) == []  # the --root it created goes too

    mine = tmp_path / "oxford_pets" / "images" / "mine.jpg"  # a folder that was there before: kept as it was
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"x")
    assert download.main(["OxfordPets", "--root", str(tmp_path)]) == 1
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "oxford_pets", os.path.join("oxford_pets", "images"), os.path.join("oxford_pets", "images", "mine.jpg")]


def test_download_of_a_dataset_without_public_files_says_so(tmp_path, capsys):
    assert download.main(["FGVCAircraft", "--root", str(tmp_path)]) == 1
    assert "docs/DATASETS.md" in capsys.readouterr().out


@pytest.mark.parametrize("name, folder", [("MicroSketch", "sketch"), ("MicroClean", "clean")])
def test_download_of_a_micro_dataset_says_it_is_generated_on_first_use(name, folder, tmp_path, capsys):
    root = tmp_path / "data"
    assert download.main([name, "--root", str(root)]) == 0
    assert capsys.readouterr().out == (
        f"{name} needs no download: it is generated on first use into {root / 'micro_world' / folder} (by the first "
        f"train.py run on it with --root {root}, or by python -m scripts.micro_benchmark --data {root})\n")
    assert not root.exists()  # nothing generated, nothing fetched


def test_verify_accepts_a_remote_sensing_set_without_its_optional_split(tmp_path, capsys):
    LAYOUTS["RESISC45"][0](tmp_path)
    assert verify.main(["--root", str(tmp_path), "--datasets", "RESISC45"]) == 0
    out = capsys.readouterr().out
    assert "split_chen_RESISC45.json  absent (generated on first run)" in out
    assert not (tmp_path / "RESISC45" / "split_chen_RESISC45.json").exists()
