"""CLIP loading: names, local files, download + SHA-256 + cache, offline errors, random backbones."""
import hashlib
import io
import os
import urllib.error

import pytest
import torch

import clip_patch.loading as loading
from clip_patch import WeightsNotFoundError, build_random_clip, load_clip


def test_unknown_backbone_lists_the_names():
    with pytest.raises(ValueError, match=r"Unknown CLIP backbone 'ViT-B/17'.*ViT-B/16.*MODEL.BACKBONE.PATH"):
        load_clip("ViT-B/17")


def test_offline_download_names_file_url_and_folder(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(loading.urllib.request, "urlopen", refuse)
    with pytest.raises(WeightsNotFoundError) as info:
        load_clip("ViT-B/16", cache_dir=str(tmp_path))
    message = str(info.value)
    assert "ViT-B-16.pt" in message and loading.OPENAI_BACKBONES["ViT-B/16"] in message
    assert str(tmp_path) in message and "MODEL.BACKBONE.PATH" in message
    assert os.listdir(tmp_path) == []  # no partial file left behind


class _Response(io.BytesIO):
    def __init__(self, content):
        super().__init__(content)
        self.headers = {"Content-Length": str(len(content))}


def test_download_verifies_caches_and_does_not_rehash(tmp_path, monkeypatch):
    content = b"weights" * 1000
    sha = hashlib.sha256(content).hexdigest()
    monkeypatch.setitem(loading.OPENAI_BACKBONES, "Fake", f"https://example.invalid/m/{sha}/Fake.pt")
    calls = []
    monkeypatch.setattr(loading.urllib.request, "urlopen", lambda url, timeout: calls.append(url) or _Response(content))

    path = loading.download_weights("Fake", cache_dir=str(tmp_path))
    assert path == str(tmp_path / "Fake.pt") and open(path, "rb").read() == content
    assert sorted(os.listdir(tmp_path)) == ["Fake.pt", "Fake.pt.verified"]

    def no_hashing(path):
        raise AssertionError("a verified file must not be hashed again")

    monkeypatch.setattr(loading, "_sha256", no_hashing)
    assert loading.download_weights("Fake", cache_dir=str(tmp_path)) == path
    assert len(calls) == 1  # served from the cache


def test_changed_cached_file_is_rehashed_and_replaced(tmp_path, monkeypatch):
    content = b"good weights"
    sha = hashlib.sha256(content).hexdigest()
    monkeypatch.setitem(loading.OPENAI_BACKBONES, "Fake", f"https://example.invalid/m/{sha}/Fake.pt")
    monkeypatch.setattr(loading.urllib.request, "urlopen", lambda url, timeout: _Response(content))
    path = loading.download_weights("Fake", cache_dir=str(tmp_path))
    with open(path, "wb") as f:
        f.write(b"corrupted!!!")
    with pytest.warns(UserWarning, match="SHA-256 does not match"):
        loading.download_weights("Fake", cache_dir=str(tmp_path))
    assert open(path, "rb").read() == content


def test_download_with_wrong_hash_raises_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(loading.OPENAI_BACKBONES, "Fake", f"https://example.invalid/m/{'0' * 64}/Fake.pt")
    monkeypatch.setattr(loading.urllib.request, "urlopen", lambda url, timeout: _Response(b"other bytes"))
    with pytest.raises(RuntimeError, match="SHA-256"):
        loading.download_weights("Fake", cache_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_local_path_loads_an_openai_format_state_dict(tmp_path):
    source = build_random_clip("tiny-ViT", seed=3)
    path = tmp_path / "mine.pt"
    torch.save(source.state_dict(), path)
    model = load_clip("ViT-B/16", path=str(path))  # the path wins over the name
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a.float(), b), name
    with pytest.raises(WeightsNotFoundError, match="MODEL.BACKBONE.PATH points to"):
        load_clip("ViT-B/16", path=str(tmp_path / "missing.pt"))


def test_loaded_model_is_frozen_fp32_eval():
    model = load_clip("tiny-ViT")
    assert not model.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())


def test_random_backbones_are_deterministic_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_random_clip("tiny-ViT"), build_random_clip("tiny-ViT")
    assert torch.equal(torch.rand(1), expected_next)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_random_vit_b32_has_the_real_parameter_count():
    model = build_random_clip("random-ViT-B/32")
    assert sum(p.numel() for p in model.parameters()) == 151_277_313  # OpenAI's ViT-B/32
    assert model.visual.transformer.width == 768 and model.visual.input_resolution == 224


def test_torchscript_archives_are_read_like_openai_releases(tmp_path):
    import warnings

    from clip_patch import read_state_dict

    layer = torch.nn.Linear(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(layer).save(str(tmp_path / "release.pt"))
    state = read_state_dict(str(tmp_path / "release.pt"))
    assert torch.equal(state["weight"], layer.weight) and torch.equal(state["bias"], layer.bias)
