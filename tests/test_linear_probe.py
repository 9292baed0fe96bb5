"""Linear-probe CLIP: lpclip's search of C, the classifier as torch tensors, class-name mapping, the feature cache,
and train -> checkpoint -> eval-only through train.py on the toy tree with the tiny random ViT."""
import glob
import math
import os
import sys

import numpy as np
import pytest
import torch

import trainers.linear_probe as lp
from dassl.engine.run_dir import deployed_epoch, read_result
from dassl.utils import Logger, read_image
from results import aggregate
from results.collect import collect
from runs.run import cli, main
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.feature_cache import image_list_digest


def blobs(n_per_class, centres, seed, spread=0.3):
    """Gaussian blobs around ``centres`` [n_cls, E]; returns (x [N, E], y [N])."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + spread * rng.standard_normal((n_per_class, len(c))) for c in centres])
    y = np.repeat(np.arange(len(centres)), n_per_class)
    return x, y


# -- the search ------------------------------------------------------------------------------------------------------
def test_search_follows_lpclip_and_converges_to_the_best_c(monkeypatch):
    """With a val accuracy that peaks at C = 3 the coarse grid peaks at 1, and the fine rounds close in on 3."""
    class Fitted:
        def __init__(self, C):
            self.C, self.n_iter_ = C, np.array([1])

    monkeypatch.setattr(lp, "fit_logistic_regression", lambda x, y, C, max_iter: Fitted(C))
    monkeypatch.setattr(lp, "accuracy", lambda clf, x, y: 100 - abs(math.log10(clf.C) - math.log10(3.0)))
    result = lp.search_c(None, None, None, None, steps=8, log=lambda line: None)
    cs = [t.C for t in result.trials]
    assert cs[:7] == pytest.approx(list(lp.COARSE_C))
    assert cs[7:9] == pytest.approx([0.1, 10.0])  # [peak / 10, peak * 10] around the coarse peak C = 1
    assert cs[9:11] == pytest.approx([1.0, 10.0])  # the right end won: the left end moves to the middle (log10)
    assert len(result.trials) == 7 + 2 * 8
    assert abs(math.log10(result.C) - math.log10(3.0)) < 0.01
    assert result.classifier.C == result.C and result.val_accuracy == pytest.approx(100 - abs(math.log10(result.C / 3)))


def test_search_tie_keeps_the_smaller_c(monkeypatch):
    monkeypatch.setattr(lp, "accuracy", lambda clf, x, y: 50.0)
    x, y = blobs(3, np.eye(3), seed=0)
    result = lp.search_c(x, y, x, y, steps=2, log=lambda line: None)
    assert result.C == pytest.approx(1e6 / 10)  # coarse peak = first of the grid; every tie keeps the left end
    assert [t.C for t in result.trials[-2:]] == pytest.approx([1e5, 1e6])  # round 2 on [1e5, 10 ** 6]


def test_probe_separates_a_separable_set_and_torch_head_equals_sklearn():
    centres = 3.0 * np.eye(4, 8)
    train_x, train_y = blobs(8, centres, seed=0)
    val_x, val_y = blobs(4, centres, seed=1)
    test_x, test_y = blobs(50, centres, seed=2)
    result = lp.search_c(train_x, train_y, val_x, val_y, steps=2, log=lambda line: None)
    assert result.val_accuracy == 100.0 and lp.accuracy(result.classifier, test_x, test_y) == 100.0
    head = lp.LinearProbeHead(["a", "b", "c", "d"], 8)
    head.set_classifier(*lp.classifier_tensors(result.classifier, 4), result.C)
    logits = head(torch.as_tensor(test_x, dtype=torch.float32))  # [200, 4]
    probs = torch.as_tensor(result.classifier.predict_proba(test_x), dtype=torch.float32)
    assert torch.allclose(logits.softmax(dim=-1), probs, atol=1e-5)
    assert torch.equal(logits.argmax(dim=-1), torch.as_tensor(result.classifier.predict(test_x)))


def test_two_class_probe_keeps_sklearn_probabilities():
    x, y = blobs(10, np.array([[1.0, 0.0], [0.0, 1.0]]), seed=3, spread=0.8)
    clf = lp.fit_logistic_regression(x, y, 1.0, 1000)
    weight, bias = lp.classifier_tensors(clf, 2)
    assert weight.shape == (2, 2) and bias.shape == (2,)
    probs = (torch.as_tensor(x, dtype=torch.float32) @ weight.t() + bias).softmax(dim=-1)
    assert torch.allclose(probs, torch.as_tensor(clf.predict_proba(x), dtype=torch.float32), atol=1e-5)


def test_classifier_needs_every_class():
    x, y = blobs(4, np.eye(3), seed=0)
    clf = lp.fit_logistic_regression(x, y, 1.0, 100)
    with pytest.raises(ValueError, match=r"labels \[3\] have none"):
        lp.classifier_tensors(clf, 4)


def test_cap_per_class_keeps_at_most_cap_per_label():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 5)
    keep = lp.cap_per_class(labels, 4, seed=1)
    assert np.bincount(labels[keep]).tolist() == [4, 2, 4]
    assert np.array_equal(keep, lp.cap_per_class(labels, 4, seed=1))


# -- class names -------------------------------------------------------------------------------------------------------
def test_label_rows_maps_a_subset_by_name_and_rejects_unknown_or_ambiguous_classes():
    fitted = ["goldfish", "shark", "hen", "ostrich"]
    assert lp.label_rows(fitted, fitted).tolist() == [0, 1, 2, 3]
    assert lp.label_rows(fitted, ["ostrich", "goldfish"]).tolist() == [3, 0]  # ImageNet -> a 200-class subset
    with pytest.raises(ValueError, match=r"no weights for 1 of the 2 evaluated classes \(e.g. 'zebra'\)"):
        lp.label_rows(fitted, ["hen", "zebra"])
    with pytest.raises(ValueError, match="'crane'"):
        lp.label_rows(["crane", "hen", "crane"], ["crane"])


def test_head_checkpoint_round_trip_onto_a_subset_label_space():
    full = lp.LinearProbeHead(["a", "b", "c"], 4)
    full.set_classifier(torch.randn(3, 4), torch.randn(3), C=0.5)
    subset = lp.LinearProbeHead(["c", "a"], 4)
    subset.load_state_dict(full.state_dict())
    features = torch.randn(5, 4)
    assert subset.C == 0.5 and subset.fitted_classnames == ["a", "b", "c"]
    assert torch.equal(subset(features), full(features)[:, [2, 0]])


# -- through train.py --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A probe fitted through train.py on the toy tree; returns (data root, its output dir, its trainer)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lpdata")
    make_toy_dataset(str(root), per_class=(6, 3, 4))
    make_toy_dataset(str(root), name="two", classnames=["red_circle", "blue_square"])
    make_toy_dataset(str(root), name="other", classnames=["teapot", "violin"])
    out = root / "train"
    trainer = run_train(run_args(root, out))
    return root, out, trainer


def run_train(argv):
    """main(argv), then close the log file it tees stdout into (so the test can read it) and untee."""
    try:
        return main(argv)
    finally:
        if isinstance(sys.stdout, Logger):
            sys.stdout.close()
            sys.stdout = sys.stdout.console


def run_args(root, out, dataset="toy"):
    return ["--root", str(root), "--trainer", "LinearProbeCLIP", "--seed", "1", "--output-dir", str(out),
            *toy_opts(str(root), name=dataset), "TRAINER.LINEAR_PROBE.PREC", "fp32",
            "TRAINER.LINEAR_PROBE.SEARCH_STEPS", "2"]


def final_accuracy(out):
    lines = open(max(glob.glob(os.path.join(out, "log.txt*")), key=os.path.getmtime)).read().splitlines()
    return float([line for line in lines if line.startswith("* accuracy:")][-1].split()[-1].rstrip("%"))


def test_fit_writes_checkpoint_search_and_cached_features(fitted):
    root, out, trainer = fitted
    assert (out / "linear_probe" / "model.pth.tar-1").is_file()
    rows = (out / "c_search.csv").read_text().splitlines()
    assert rows[0] == "stage,C,val_accuracy,converged" and len(rows) == 1 + 7 + 2 * 2 + 1
    assert rows[-1].startswith(f"chosen,{trainer.head.C:.6g},")
    log = open(out / "log.txt").read()
    assert "Finish training" in log and "* accuracy:" in log.split("Finish training")[1]
    # the cached train features are the frozen encoder's output on train_x under the test transform
    (train_file,) = glob.glob(str(root / "toy" / "clip_features" / "train-tiny-ViT-*.pt"))
    cached = torch.load(train_file, weights_only=True)
    items = trainer.dm.dataset.train_x
    tfm = trainer.val_loader.dataset.transform  # the test-time transform
    images = torch.stack([tfm(read_image(item.impath)) for item in items])
    with torch.no_grad():
        expected = trainer.model.image_encoder(images)  # [N, E]
    assert torch.allclose(cached["features"], expected, atol=1e-5)
    assert cached["labels"].tolist() == [item.label for item in items]
    assert cached["key"]["images"] == image_list_digest(items, trainer.dm.dataset.dataset_dir)


def test_refit_reads_the_cache_and_eval_only_reproduces_the_final_test(fitted, capsys):
    root, out, trainer = fitted
    files = sorted(glob.glob(str(root / "toy" / "clip_features" / "*.pt")))
    mtimes = [os.path.getmtime(f) for f in files]
    again = run_train(run_args(root, root / "again"))
    assert "Loading cached image features of the train split" in capsys.readouterr().out
    assert sorted(glob.glob(str(root / "toy" / "clip_features" / "*.pt"))) == files
    assert [os.path.getmtime(f) for f in files] == mtimes
    assert torch.equal(again.head.weight, trainer.head.weight)

    evaluated = run_train(["--eval-only", "--model-dir", str(out), "--load-epoch", "1"]
                           + run_args(root, root / "eval"))
    assert torch.equal(evaluated.head.weight, trainer.head.weight) and evaluated.head.C == trainer.head.C
    assert final_accuracy(root / "eval") == final_accuracy(out)


def test_eval_on_a_subset_by_name_and_a_clear_error_on_unseen_classes(fitted):
    root, out, trainer = fitted
    subset = run_train(["--eval-only", "--model-dir", str(out), "--load-epoch", "1"]
                        + run_args(root, root / "eval_two", dataset="two"))
    fitted_names = trainer.head.fitted_classnames
    assert subset.head.rows.tolist() == [fitted_names.index(n) for n in subset.dm.dataset.classnames]
    image = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(subset.model(image), trainer.model(image)[:, subset.head.rows], atol=1e-6)
    with pytest.raises(ValueError, match="no weights for 2 of the 2 evaluated classes"):
        run_train(["--eval-only", "--model-dir", str(out), "--load-epoch", "1"]
                   + run_args(root, root / "eval_other", dataset="other"))


def test_eval_only_without_model_dir_is_refused(fitted):
    root, _, _ = fitted
    with pytest.raises(ValueError, match="--eval-only needs --model-dir"):
        run_train(["--eval-only"] + run_args(root, root / "nomodel"))


def test_resnet_backbone_fits_too(fitted):
    """CoOp's figure uses RN50: the probe works on a ResNet image encoder (its features are cached separately)."""
    root, _, _ = fitted
    trainer = run_train(run_args(root, root / "rn") + ["MODEL.BACKBONE.NAME", "tiny-RN"])
    assert trainer.head.weight.shape == (6, 32) and (root / "rn" / "linear_probe" / "model.pth.tar-1").is_file()
    assert glob.glob(str(root / "toy" / "clip_features" / "train-tiny-RN-*.pt"))


def run_cli(argv):
    """cli(argv) (exit status), then close the log file it tees stdout into."""
    try:
        return cli(argv)
    finally:
        if isinstance(sys.stdout, Logger):
            sys.stdout.close()
            sys.stdout = sys.stdout.console


def files_of(folder):
    """{relative path: (size, mtime_ns)} of every file under ``folder`` but the lock (each command rewrites it)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_run_finishes_once_and_its_result_reaches_the_tables(fitted, capsys):
    """Like every trainer: result.json after the final test, a re-run does nothing, the row is in the tables."""
    root, _, trainer = fitted
    output = root / "output"
    out = output / "few_shot" / "toy" / "LinearProbeCLIP" / "tiny_4shots" / "seed1"  # a few-shot run's folder
    assert run_cli(run_args(root, out)) == 0
    result = read_result(str(out))
    assert result["mode"] == "train" and result["epochs_trained"] == 1
    assert result["metrics"]["accuracy"] == pytest.approx(final_accuracy(out), abs=1e-6)
    assert deployed_epoch(out) == 1  # what the protocols' evaluations of this run load
    before = files_of(out)
    capsys.readouterr()

    assert run_cli(run_args(root, out)) == 0
    printed = capsys.readouterr().out
    assert f"This run is complete (accuracy {result['metrics']['accuracy']:.2f}%" in printed
    assert "Linear probe on" not in printed and files_of(out) == before  # nothing fitted, written or logged

    (row,) = collect(output).results
    assert (row.trainer, row.shots, row.metrics["accuracy"]) == ("LinearProbeCLIP", 4, result["metrics"]["accuracy"])
    table = aggregate.few_shot([row])
    assert table.methods == [("LinearProbeCLIP", "tiny")]
    assert table.cells[("LinearProbeCLIP", "tiny"), "toy", 4].mean == result["metrics"]["accuracy"]


def test_an_unreadable_feature_cache_is_reported_and_recomputed(fitted, capsys):
    root, _, trainer = fitted
    (train_file,) = glob.glob(str(root / "toy" / "clip_features" / "train-tiny-ViT-*.pt"))
    with open(train_file, "wb") as f:
        f.write(b"not a torch file")  # damaged on disk
    capsys.readouterr()
    again = run_train(run_args(root, root / "after_damage"))
    printed = capsys.readouterr().out
    (warning,) = [line for line in printed.splitlines() if "feature cache" in line]
    assert warning.startswith(f"Warning: the feature cache {train_file} is unreadable (") and "recomputing" in warning
    assert torch.equal(again.head.weight, trainer.head.weight)  # the same features again
    assert torch.load(train_file, weights_only=True)["features"].shape[0] == len(trainer.dm.dataset.train_x)


def test_a_run_stopped_after_its_fit_resumes_from_the_saved_classifier(fitted, monkeypatch, capsys):
    """The fit is the run's one epoch: a run stopped after it (classifier saved, no final test yet) fits nothing
    again and finishes with the saved classifier."""
    root, out, trainer = fitted
    stopped = root / "stopped"

    def stop(self):
        raise RuntimeError("stopped before the final test")

    with monkeypatch.context() as patched:
        patched.setattr(lp.LinearProbeCLIP, "after_train", stop)
        with pytest.raises(RuntimeError, match="stopped before the final test"):
            run_train(run_args(root, stopped))
    assert (stopped / "linear_probe" / "model.pth.tar-1").is_file() and read_result(str(stopped)) is None
    capsys.readouterr()

    resumed = run_train(run_args(root, stopped))
    printed = capsys.readouterr().out
    assert f"Found checkpoint at {stopped} (will resume training)" in printed and "Linear probe on" not in printed
    assert torch.equal(resumed.head.weight, trainer.head.weight) and resumed.head.C == trainer.head.C
    result = read_result(str(stopped))
    assert result["epochs_trained"] == 1 and result["metrics"]["accuracy"] == pytest.approx(final_accuracy(out))


def test_init_weights_is_refused_in_one_line_before_anything_is_written(fitted, capsys):
    root, out, _ = fitted
    target = root / "initialised"
    checkpoint = out / "linear_probe" / "model.pth.tar-1"
    assert run_cli(run_args(root, target) + ["MODEL.INIT_WEIGHTS", str(checkpoint)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: LinearProbeCLIP has no weights to initialise: set MODEL.INIT_WEIGHTS ''"]
    assert not target.exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_while_caching_features_is_a_warning_and_the_fit_goes_on(fitted, monkeypatch, capsys):
    import builtins

    import dassl.utils.torchtools as torchtools

    root, _, trainer = fitted
    for cached in glob.glob(str(root / "toy" / "clip_features" / "*.pt")):
        os.remove(cached)

    def cache_files_hit_a_full_disk(path, mode="r"):  # torch's real writer meets ENOSPC, as on a full device
        return builtins.open("/dev/full" if "clip_features" in str(path) else path, mode)

    monkeypatch.setattr(torchtools, "open", cache_files_hit_a_full_disk, raising=False)
    capsys.readouterr()
    again = run_train(run_args(root, root / "full_disk"))
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Warning: could not cache")]
    assert warnings and all("no space left on the device while writing" in line for line in warnings)
    assert glob.glob(str(root / "toy" / "clip_features" / "*.pt")) == []  # nothing half-written
    assert torch.equal(again.head.weight, trainer.head.weight)  # fitted on the same features all the same
