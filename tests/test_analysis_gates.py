"""analysis.gates: the recorded BMIP gates equal sigmoid(gate(a)) recomputed independently (layer 1 from CLIP's own
blocks, every layer from the learner's gate inputs), the report files read back, and the command line on a BMIP
model trained for one epoch on the toy tree."""
import glob
import inspect
import os
import re

import pytest
import torch

from analysis import gates as gt
from clip_patch import load_backbone
from tests.test_linear_probe import run_train
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.base import PromptedCLIP
from trainers.bmip import BMIPPromptLearner

CLASSNAMES = ["cat", "dog", "sea lion", "red panda"]


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


def bmip(tiny, mode, depth=4):
    torch.manual_seed(0)
    learner = BMIPPromptLearner(tiny, CLASSNAMES, 2, "a photo of a", depth, mode, True, True)
    with torch.no_grad():  # gate slopes large enough that w visibly depends on the attention
        for gate in list(learner.vision_gates) + list(learner.text_gates):
            gate.weight.fill_(8.0)
    return PromptedCLIP(tiny, learner).eval()


def record(model, image, labels):
    with torch.no_grad(), gt.GateRecorder(model.prompt_learner) as recorder:
        logits = model(image)
        recorder.batch_done(logits, labels)
    return recorder.result()


def layer1_vision_attention(model, visual, image):
    """The attention CLS+patch queries of vision layer 1 pay to the 2 prompt slots, from CLIP's own modules:
    [B, 2] per image. Layer 0 is CLIP's ResidualAttentionBlock on [CLS, patches, proj_t(ctx_t)]."""
    learner = model.prompt_learner
    x = visual.conv1(image).flatten(2).transpose(1, 2)  # [B, 16, D]
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    x = torch.cat([x, learner.proj_t(learner.ctx_t).expand(x.shape[0], -1, -1)], dim=1)  # [B, 19, D]
    x = visual.transformer.resblocks[0](visual.ln_pre(x).transpose(0, 1))  # [19, B, D]
    block = visual.transformer.resblocks[1]
    h = block.ln_1(x)
    _, weights = block.attn(h, h, h, need_weights=True, average_attn_weights=True)  # [B, 19, 19]
    n = learner.num_patch_tokens
    return weights[:, :n, n:n + 2].mean(dim=1)  # [B, 2]


def test_per_image_vision_gate_of_layer_1_equals_an_independent_recomputation(tiny):
    model = bmip(tiny, "per_sample")
    torch.manual_seed(1)
    image, labels = torch.randn(3, 3, 32, 32), torch.tensor([2, 0, 1])
    gates = record(model, image, labels)
    with torch.no_grad():
        a = layer1_vision_attention(model, tiny.model.visual, image)  # [3, 2]
        gate = model.prompt_learner.vision_gates[0]
        expected = torch.sigmoid(gate.weight * a + gate.bias)  # [3, 2]
    assert torch.allclose(gates.attention["vision"][1], a, atol=1e-6)
    assert torch.allclose(gates.values["vision"][1], expected, atol=1e-6)
    assert gates.values["vision"][1].std(dim=0).min() > 1e-4  # w really varies per image
    assert gates.unit_labels["vision"][1].tolist() == [2, 0, 1] and gates.units["vision"] == "image"


@pytest.mark.parametrize("mode", ["per_sample", "reference"])
def test_every_recorded_gate_is_sigmoid_of_the_gate_on_the_learners_input(tiny, mode, monkeypatch):
    model = bmip(tiny, mode)
    learner = model.prompt_learner
    inputs = {"vision": [], "text": []}
    for modality in inputs:  # record what the learner feeds its gates, layer by layer, in call order
        original = getattr(learner, f"{modality}_gate_input")

        def spy(*args, _original=original, _modality=modality):
            a = _original(*args)
            inputs[_modality].append(a.detach().clone())
            return a
        monkeypatch.setattr(learner, f"{modality}_gate_input", spy)
    image = torch.randn(2, 3, 32, 32)
    gates = record(model, image, torch.tensor([0, 3]))
    for modality, modules in (("vision", learner.vision_gates), ("text", learner.text_gates)):
        layers = sorted(gates.values[modality])
        assert layers == list(range(1, len(modules) + 1))
        for layer, a in zip(layers, inputs[modality]):
            gate = modules[layer - 1]
            w = torch.sigmoid(gate.weight * a + gate.bias)  # [b] or [units, b]
            assert torch.allclose(gates.values[modality][layer], w.reshape(-1, 2), atol=1e-6), (modality, layer)
    if mode == "reference":
        assert gates.units == {"vision": "batch", "text": "all classes"}
        assert gates.values["vision"][1].shape == (1, 2) and len(gates.values["text"]) == 2  # text: layers 1..J-2
        for layer, w in gates.values["text"].items():  # a = 0 under the causal mask: w = sigmoid(bias) exactly
            assert torch.equal(w, torch.sigmoid(learner.text_gates[layer - 1].bias).expand(1, 2))
    else:
        assert gates.values["vision"][1].shape == (2, 2) and gates.values["text"][1].shape == (len(CLASSNAMES), 2)


def test_report_files_read_back(tiny, tmp_path):
    model = bmip(tiny, "per_sample")
    gates = record(model, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    names = dict(enumerate(CLASSNAMES))
    paths = gt.write_gate_report(gates, tmp_path, "toy_test", "title", names)
    assert [p.name for p in paths] == ["gates_toy_test.csv", "gates_toy_test.md", "gates_toy_test.png"]
    back = gt.read_csv(paths[0])
    for modality in gt.MODALITIES:
        for layer, w in gates.values[modality].items():
            assert back[modality][layer] == pytest.approx(w.flatten().tolist(), abs=1e-7)
    rows = gt.summary_rows(gates)
    table = paths[1].read_text()
    for r in rows:
        assert r["mean"] == pytest.approx(gates.values[r["modality"]][r["layer"]].mean().item(), abs=1e-6)
        assert f"| {r['layer']} | {r['modality']} | {r['over']} | {r['units']} x 2 | {r['mean']:.4f} |" in table
    first_text = paths[0].read_text().splitlines()[1:]
    assert first_text[0].split(",")[:6] == ["vision", "1", "image", "0", "cat", "0"]
    assert paths[2].stat().st_size > 10_000


def test_command_line_on_a_trained_model_reproduces_its_test_accuracy(tmp_path, capsys):
    torch.set_num_threads(1)
    make_toy_dataset(str(tmp_path))
    opts = toy_opts(str(tmp_path), epochs=1) + ["TRAINER.BMIP.PROMPT_DEPTH", "3", "TRAINER.BMIP.MODE", "per_sample",
                                                 "TRAINER.BMIP.PREC", "fp32"]
    common = ["--root", str(tmp_path), "--trainer", "BMIP", "--seed", "1"]
    run_train(common + ["--output-dir", str(tmp_path / "run")] + opts)
    log = open(tmp_path / "run" / "log.txt").read()
    final = float(log.split("Finish training")[1].split("* accuracy: ")[1].split("%")[0])
    capsys.readouterr()
    paths = gt.main(common + ["--model-dir", str(tmp_path / "run"), "--load-epoch", "1"] + opts)
    assert [p.parent for p in paths] == [tmp_path / "run" / "analysis"] * 3
    captured = capsys.readouterr()
    table = captured.out
    assert f"accuracy {final:.1f}%" in table and "| 2 | text | class | 6 x 2 |" in table
    assert table == paths[1].read_text() + "\n"  # stdout holds the report alone
    assert captured.err.splitlines()[-1] == "written: " + ", ".join(map(str, paths))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        gt.main(["--root", str(tmp_path), "--trainer", "ZeroshotCLIP", "--model-dir", str(tmp_path / "run")]
                + toy_opts(str(tmp_path)) + ["TRAINER.COOP.PREC", "fp32"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: gate reports are for BMIP models; --trainer "
                                                               "ZeroshotCLIP has no gates: pass a BMIP")
    with pytest.raises(SystemExit) as exit_:
        gt.main(common + opts)
    assert exit_.value.code == 2 and capsys.readouterr().err == ("error: pass --model-dir (the training run's "
                                                                 "--output-dir) to load the trained model\n")
    assert not glob.glob(os.path.join(tmp_path, "run", "log.txt-*"))  # the tool writes no log into the model dir


@pytest.mark.parametrize("trainer", ["CoOp", "ZeroshotCLIP", "PromptSRC", "CoPrompt"])
def test_a_trainer_without_gates_is_refused_before_the_model_is_built(trainer, monkeypatch, tmp_path, capsys):
    def builds(args, require_model=True):
        raise AssertionError("the model was built for a trainer without gates")

    monkeypatch.setattr(gt, "load_trained", builds)
    with pytest.raises(SystemExit) as exit_:
        gt.main(["--root", str(tmp_path), "--trainer", trainer, "--model-dir", str(tmp_path)])
    assert exit_.value.code == 2 and capsys.readouterr().err == (
        f"error: gate reports are for BMIP models; --trainer {trainer} has no gates: pass a BMIP, PromptSRC_BMIP or "
        "CoPrompt_BMIP run's --trainer, --config-file and --model-dir\n")


def gated_learner_names():
    """BMIPPromptLearner and every subclass of it (the prompt learners with gates)."""
    found, todo = set(), [BMIPPromptLearner]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo += cls.__subclasses__()
    return found


def test_the_gated_trainers_are_those_whose_prompt_learner_has_gates():
    from dassl.engine import TRAINER_REGISTRY

    learners = gated_learner_names()
    builds_gates = set()
    for name in TRAINER_REGISTRY.registered_names():
        build = getattr(TRAINER_REGISTRY.get(name), "build_prompt_learner", None)
        source = inspect.getsource(build) if build is not None else ""
        if learners & set(re.findall(r"\b\w+\b", source)):
            builds_gates.add(name)
    assert {"BMIP", "PromptSRC_BMIP", "CoPrompt_BMIP"} <= builds_gates  # (the search finds the known ones)
    assert builds_gates == {name for name in TRAINER_REGISTRY.registered_names() if gt.has_gates(name)}
    assert gt.has_gates("NoSuchTrainer") is None
