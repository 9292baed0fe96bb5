"""analysis.interpret_prompt: nearest vocabulary tokens of learned text contexts, against a brute-force computation,
on learners built on the tiny random ViT and through the command line on a CoOp-style checkpoint."""
import warnings

import pytest
import torch

from analysis import interpret_prompt as ip
from clip_patch import load_backbone
from dassl.config import extend_cfg, get_cfg_default
from dassl.utils import save_checkpoint
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.bmip import BMIPPromptLearner
from trainers.coop import CoOpPromptLearner
from trainers.ivlp import VisionLanguagePrompts
from trainers.proda import ProDAPromptLearner
from clip_patch.openai_clip import openai_clip
from trainers.zsclip import HandcraftedPrompts

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from clip.simple_tokenizer import SimpleTokenizer

CLASSNAMES = ["cat", "dog", "sea lion"]
DECODER = SimpleTokenizer().decoder


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


def token_ids(text):
    """BPE ids of ``text`` without SOS/EOT."""
    tokens = openai_clip().tokenize([text])[0]
    return tokens[1: int(tokens.argmax())].tolist()


def coop_cfg(**values):
    cfg = extend_cfg(get_cfg_default())
    for key, value in values.items():
        cfg.TRAINER.COOP[key] = value
    return cfg.TRAINER.COOP


def brute_force(vectors, table, k):
    """Nearest rows from explicit differences, one vector at a time (no cdist)."""
    result = []
    for v in vectors:
        d = ((table - v) ** 2).sum(dim=1).sqrt()  # [V]
        order = d.argsort(stable=True)[:k].tolist()
        result.append([(i, d[i].item()) for i in order])
    return result


def test_context_initialised_from_words_is_nearest_to_exactly_those_tokens(tiny):
    learner = CoOpPromptLearner(coop_cfg(CTX_INIT="a photo of a"), CLASSNAMES, tiny)
    table = tiny.text_encoder.token_embedding.weight  # [V, D]
    (shallow,) = ip.interpret(learner, table, k=3)
    assert shallow.title == "shallow text context `ctx` (layer 0)"
    assert shallow.indices[:, 0].tolist() == token_ids("a photo of a")
    assert [DECODER[i] for i in shallow.indices[:, 0].tolist()] == ["a</w>", "photo</w>", "of</w>", "a</w>"]
    assert torch.all(shallow.distances[:, 0] == 0)
    expected = brute_force(learner.ctx.detach(), table.detach(), 3)
    assert shallow.indices.tolist() == [[i for i, _ in row] for row in expected]
    assert torch.allclose(shallow.distances, torch.tensor([[d for _, d in row] for row in expected]), atol=1e-5)


def test_deep_prompts_layer_by_layer_and_distances_to_a_shifted_embedding(tiny):
    learner = BMIPPromptLearner(tiny, CLASSNAMES, 2, "a photo of a", 4, "per_sample", True, True)
    table = tiny.text_encoder.token_embedding.weight.detach()
    cat, dog = token_ids("cat")[0], token_ids("dog")[0]
    shift = torch.zeros(table.shape[1])
    shift[0] = 0.01  # well inside the gap to the next token (random rows are ~0.15 apart)
    with torch.no_grad():
        learner.compound_prompts_text[1].copy_(torch.stack([table[cat], table[dog] + shift]))
    sets = ip.interpret(learner, table, k=2)
    assert [s.title for s in sets] == ["shallow text context `ctx_t` (layer 0)"] + [
        f"deep text prompt `compound_prompts_text.{k}` (layer {k + 1})" for k in range(3)]
    layer2 = sets[2]
    assert layer2.indices[:, 0].tolist() == [cat, dog]
    assert layer2.distances[0, 0].item() == 0 and layer2.distances[1, 0].item() == pytest.approx(0.01, abs=1e-6)
    second = brute_force(layer2.vectors.detach(), table, 2)
    assert layer2.distances[:, 1].tolist() == pytest.approx([row[1][1] for row in second], abs=1e-5)


def test_class_specific_contexts_are_named_by_class(tiny):
    learner = CoOpPromptLearner(coop_cfg(N_CTX=2, CSC=True), CLASSNAMES, tiny)
    sets = ip.interpret(learner, tiny.text_encoder.token_embedding.weight, k=1, classnames=CLASSNAMES)
    assert [s.title for s in sets] == [f"shallow text context `ctx` of class '{c}' (layer 0)" for c in CLASSNAMES]
    assert all(s.indices.shape == (2, 1) for s in sets)


def test_proda_contexts_are_named_by_prompt_whatever_the_class_count(tiny):
    learner = ProDAPromptLearner(tiny, CLASSNAMES, 2, 5, True)  # K = 5 prompts, 3 classes
    table = tiny.text_encoder.token_embedding.weight
    sets = ip.interpret(learner, table, k=2, classnames=CLASSNAMES)
    assert [s.title for s in sets] == [f"shallow text context `ctx` of prompt {k} (layer 0)" for k in range(5)]
    for k, s in enumerate(sets):
        expected = brute_force(learner.ctx[k].detach(), table.detach(), 2)
        assert s.indices.tolist() == [[i for i, _ in row] for row in expected]


def test_several_contexts_of_unknown_meaning_are_refused(tiny):
    class Unlabelled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ctx = torch.nn.Parameter(torch.zeros(4, 2, 64))  # [n, b, D], n neither said to be classes nor prompts

    with pytest.raises(ValueError, match="does not say what they belong to: set its CONTEXT_SETS"):
        ip.context_sets(Unlabelled(), CLASSNAMES)


@pytest.mark.parametrize("build", [
    lambda c: HandcraftedPrompts(c, CLASSNAMES, "a photo of a {}."),
    lambda c: VisionLanguagePrompts(c, CLASSNAMES, "a photo of a", 0, 0, 2, 3),  # VPT: vision prompts only
])
def test_learners_without_text_context_are_refused(tiny, build):
    with pytest.raises(ValueError, match="no learnable text context"):
        ip.context_sets(build(tiny))


def test_report_lists_every_vector_with_its_tokens_and_distances(tiny):
    learner = CoOpPromptLearner(coop_cfg(CTX_INIT="a photo"), CLASSNAMES, tiny)
    text = ip.format_report(ip.interpret(learner, tiny.text_encoder.token_embedding.weight, k=2), DECODER, (49408, 64))
    lines = text.splitlines()
    assert lines[0].startswith("Nearest tokens by Euclidean distance in the token-embedding space [49408 x 64]")
    assert lines[3].startswith("  1: a</w> (0.0000)  ") and lines[4].startswith("  2: photo</w> (0.0000)  ")


def test_command_line_on_a_coop_style_checkpoint(tmp_path, tiny, capsys):
    """A checkpoint holding only ``ctx`` (as CoOp releases them), set to the embeddings of known words."""
    make_toy_dataset(str(tmp_path))
    table = tiny.text_encoder.token_embedding.weight.detach()
    ctx = table[token_ids("sunny yellow flower")]  # [3, D]
    state = {"ctx": ctx, "token_prefix": torch.zeros(5, 1, 64), "token_suffix": torch.zeros(5, 73, 64)}
    save_checkpoint({"state_dict": state, "epoch": 50}, str(tmp_path / "model" / "prompt_learner"),
                    model_name="model.pth.tar-50")
    def argv(topk, epoch=()):
        return ["--root", str(tmp_path), "--trainer", "CoOp", "--model-dir", str(tmp_path / "model"), *epoch,
                "--topk", str(topk), *toy_opts(str(tmp_path)), "TRAINER.COOP.N_CTX", "3", "TRAINER.COOP.PREC", "fp32"]

    ip.main(argv(2))  # no --load-epoch: the newest model.pth.tar-N, as the protocol scripts choose
    out = capsys.readouterr().out.splitlines()
    out = out[out.index(next(line for line in out if line.startswith("Nearest tokens"))):]
    assert "Loading" not in "\n".join(out)  # the model's build messages go to stderr
    rows = [line for line in out if line.startswith("  ")]
    assert [row.split()[1:3] for row in rows] == [["sunny</w>", "(0.0000)"], ["yellow</w>", "(0.0000)"],
                                                   ["flower</w>", "(0.0000)"]]
    with pytest.raises(SystemExit) as exit_:
        ip.main(argv(0))
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: --topk must be >= 1, got 0\n"
    with pytest.raises(SystemExit) as exit_:
        ip.main(argv(2, epoch=("--load-epoch", "7")))
    err = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and err[-1].startswith('error: No checkpoint "model.pth.tar-7"')


def test_a_tool_flag_after_the_key_value_pairs_is_named(tmp_path, capsys):
    argv = ["--root", str(tmp_path), "--trainer", "CoOp", "--model-dir", str(tmp_path), "DATASET.NUM_SHOTS", "16",
            "--topk", "3"]
    with pytest.raises(SystemExit) as done:
        ip.main(argv)
    assert done.value.code == 2
    assert capsys.readouterr().err == ("error: --topk comes after the KEY VALUE options: put every --flag before the "
                                       "first KEY VALUE pair (here before DATASET.NUM_SHOTS)\n")
