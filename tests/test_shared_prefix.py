"""The text encoder's shared-prefix shortcut: a prefix identical in every class prompt is encoded once."""
import torch

from clip_patch import DeepPrompts, load_backbone
from clip_patch.prompted import run_blocks, run_blocks_shared_prefix, shared_prefix_length


def test_prefix_length_rules():
    x = torch.zeros(3, 8, 4)
    x[:, 5:] = torch.randn(3, 3, 4)  # sequences differ from position 5 on
    eot = torch.tensor([6, 7, 7])
    replace = lambda layer, probe: None  # noqa: E731
    assert shared_prefix_length(x, eot, None) == 5
    assert shared_prefix_length(x, torch.tensor([3, 7, 7]), None) == 3  # never past an EOT
    assert shared_prefix_length(x, eot, DeepPrompts(slice(1, 3), replace, shared=True)) == 5
    assert shared_prefix_length(x, eot, DeepPrompts(slice(1, 3), replace, shared=False)) == 0  # per-sequence prompts
    assert shared_prefix_length(x, eot, DeepPrompts(slice(4, 7), replace, shared=True)) == 0  # slots leave the prefix
    assert shared_prefix_length(x[:1], eot[:1], None) == 0  # one sequence: nothing to share


def test_shared_prefix_equals_the_full_computation_with_deep_prompts():
    backbone = load_backbone("tiny-ViT")
    encoder = backbone.text_encoder
    tokens = backbone.tokenize(["a photo of a cat.", "a photo of a big dog.", "a photo of a red fox on a hill."])
    eot = tokens.argmax(dim=-1)
    x = encoder.embed(tokens) + encoder.positional_embedding  # [3, 77, D]
    x = x[:, : int(eot.max()) + 1]
    deep_values = torch.randn(11, 2, encoder.width, requires_grad=True)  # layers 1..11, 2 slots

    def replace(layer, probe):
        return deep_values[layer - 1] if layer < 6 else None

    deep = DeepPrompts(slice(1, 3), replace, shared=True)
    assert shared_prefix_length(x, eot, deep) == 5  # <SOS> a photo of a
    shared = run_blocks_shared_prefix(encoder.blocks, x, 5, deep, out_rows=eot)  # [3, D]
    (grad_shared,) = torch.autograd.grad(shared.sum(), deep_values)
    full = run_blocks(encoder.blocks, x, deep, out_rows=eot)  # [3, D]
    (grad_full,) = torch.autograd.grad(full.sum(), deep_values)
    assert shared.shape == (3, encoder.width)
    assert (shared - full).abs().max() <= 1e-5
    assert (grad_shared - grad_full).abs().max() <= 1e-5 and grad_full[:5].abs().sum() > 0
