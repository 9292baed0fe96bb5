"""Device placement without a GPU: every tensor a model holds moves with ``.to(device)``, every tensor the fast and
straightforward paths create follows the model's device, and no model code hard-codes CUDA or fp16.

The trick for the second: run a CPU model while the DEFAULT device is ``meta``. A tensor created without naming
the model's device (``torch.arange(n)``, ``torch.zeros(...)``) then lands on ``meta``, as a CPU-created tensor does
on a GPU run, and a dispatch mode records every operation that receives a ``meta`` tensor. That includes what a
device mismatch does not always stop: index tensors (PyTorch accepts CPU indices for CUDA tensors, at the price of
a copy and a host synchronisation) and attention masks (CPU attention does not check its mask's device).
"""
import ast
import contextlib
import os
import os.path as osp
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from benchmarks import parity
from clip_patch import prompted
from benchmarks.subjects import REPO_ROOT, benchmark_subjects, build_trainer

CLASSES = 5
TRAINERS = benchmark_subjects()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


def build(trainer_id, prec="fp32"):
    torch.manual_seed(0)  # the same learner initialisation whatever ran before
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PREC 'fp16' needs a CUDA device")  # emulated below instead
        return build_trainer(trainer_id, "tiny-ViT", "cpu", prec, CLASSES)


class OffDeviceAudit(TorchDispatchMode):
    """Records each operation that receives a tensor on the ``meta`` (default, not the model's) device."""

    def __init__(self):
        super().__init__()
        self.operations = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if any(torch.is_tensor(t) and t.device.type == "meta" for t in tree_leaves((args, kwargs))):
            self.operations.append(str(func))
        return func(*args, **kwargs)


@contextlib.contextmanager
def default_device_elsewhere():
    """The default device is ``meta`` while the model is on the CPU; yields the list of off-device operations."""
    with torch.device("meta"), OffDeviceAudit() as audit:
        yield audit.operations


def batch(trainer_id):
    generator = torch.Generator().manual_seed(0)
    size = 2 if TRAINERS[trainer_id].per_image_text else 3
    return torch.randn(size, 3, 32, 32, generator=generator), torch.randint(0, CLASSES, (size,), generator=generator)


@pytest.mark.parametrize("trainer_id", list(TRAINERS))
def test_every_tensor_a_model_holds_moves_with_it(trainer_id):
    """A tensor kept as a plain attribute (not a parameter or buffer) stays behind on ``.to()``."""
    model = build(trainer_id).model
    model.to("meta")
    left_behind = [f"{name}.{attr}" for name, module in model.named_modules()
                   for attr, value in vars(module).items() if torch.is_tensor(value) and value.device.type != "meta"]
    left_behind += [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != "meta"]
    assert left_behind == []


def test_clip_causal_masks_are_buffers_that_are_not_saved():
    model = build("MaPLe").model
    blocks = model.text_encoder.blocks
    assert all("attn_mask" in block._buffers for block in blocks)
    assert not any(key.endswith("attn_mask") for key in model.state_dict())
    assert torch.equal(blocks[0].attn_mask, torch.full((77, 77), float("-inf")).triu_(1))


@pytest.mark.parametrize("trainer_id", list(TRAINERS))
def test_forward_backward_and_evaluation_create_tensors_on_the_models_device(trainer_id):
    trainer = build(trainer_id)
    images, labels = batch(trainer_id)
    fp32 = parity.precision_for("fp32", "cpu")
    with default_device_elsewhere() as off_device:
        results = [parity.logits_and_gradients(trainer, images, labels, straightforward, fp32)
                   for straightforward in (False, True)]
        cached = parity.eval_logits(trainer, images, fp32)  # fills, then reads the text cache
    assert off_device == []
    for logits, grads, _ in results:
        assert logits.device.type == "cpu" and torch.isfinite(logits).all()
        assert all(g.device.type == "cpu" and torch.isfinite(g).all() for g in grads.values())
    assert cached.device.type == "cpu" and torch.isfinite(cached).all()
    if trainer_id != "ZS-CLIP":
        assert results[0][1]  # the trainable tensors got gradients


def _mask_on_default_device(block, n_tokens, like):
    return None if block.attn_mask is None else torch.full((n_tokens, n_tokens), float("-inf")).triu(1)


def _rows_on_default_device(original):
    def run_blocks(blocks, x, deep=None, straightforward=False, out_rows=None, branch=None):
        rows = None if out_rows is None else torch.tensor(out_rows.tolist())
        return original(blocks, x, deep, straightforward, rows, branch)
    return run_blocks


@pytest.mark.parametrize("bug", ["causal mask", "index tensor"])
def test_the_audit_catches_a_tensor_created_off_the_models_device(monkeypatch, bug):
    if bug == "causal mask":
        monkeypatch.setattr(prompted, "_block_mask", _mask_on_default_device)
    else:
        monkeypatch.setattr(prompted, "run_blocks", _rows_on_default_device(prompted.run_blocks))
    trainer = build("CoOp")
    images, labels = batch("CoOp")
    fp32 = parity.precision_for("fp32", "cpu")
    parity.logits_and_gradients(trainer, images, labels, False, fp32)  # silent on a CPU-only run
    with default_device_elsewhere() as off_device:
        try:
            parity.logits_and_gradients(trainer, images, labels, False, fp32)
        except RuntimeError:
            pass  # some mixes raise on their own; the audit has recorded the operation either way
    assert off_device, bug


@pytest.mark.parametrize("trainer_id", ["MaPLe", "BMIP-per_sample", "CoCoOp"])
def test_fp16_frozen_weights_path_creates_tensors_on_the_models_device(trainer_id):
    trainer = build(trainer_id, "fp16")
    fp16 = parity.precision_for("fp16", "cpu")  # the CUDA policy emulated: frozen weights in fp16
    parity.set_precision(trainer, fp16)
    assert trainer.model.image_encoder.conv1.weight.dtype == torch.float16
    images, labels = batch(trainer_id)
    with default_device_elsewhere() as off_device:
        logits, grads, _ = parity.logits_and_gradients(trainer, images, labels, False, fp16)
    assert off_device == []
    assert logits.device.type == "cpu" and torch.isfinite(logits).all()
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    assert all(p.dtype == torch.float32 for p in parity.learner_of(trainer).parameters())


# -- no hard-coded CUDA or fp16 -------------------------------------------------------------------------------------
MODEL_CODE = ["clip_patch", "trainers", "dassl", "datasets", "runs", "results", "sweeps", "benchmarks", "scripts",
              "microworld", "train.py"]
ALLOWED = {  # (file, what): why
    ("scripts/pretrain_micro_clip.py", ".half()"): "stores the shipped MicroViT checkpoint in fp16, as OpenAI does",
    ("sweeps/executors/slurm.py", "device 'cuda'"): "the train.py --device flag of a SLURM task that was given GPUs",
}


def python_files():
    for entry in MODEL_CODE:
        path = osp.join(REPO_ROOT, entry)
        if osp.isfile(path):
            yield path
        for root, _, files in os.walk(path):
            yield from (osp.join(root, f) for f in sorted(files) if f.endswith(".py"))


def hard_coded(tree):
    """``.cuda()`` / ``.half()`` calls and device arguments spelled as a "cuda..." string literal."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("cuda", "half") and not node.args:
            found.append(f".{func.attr}()")
        literals = [*node.args, *[k.value for k in node.keywords if k.arg == "device"]]
        if isinstance(func, ast.Attribute) and func.attr in ("to", "device") or any(
                k.arg == "device" for k in node.keywords):
            found += [f"device {a.value!r}" for a in literals
                      if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("cuda")]
    return found


def test_no_cuda_or_half_hard_coding_in_model_code():
    offenders = []
    for path in python_files():
        with open(path) as f:
            tree = ast.parse(f.read(), filename=path)
        rel = osp.relpath(path, REPO_ROOT)
        offenders += [f"{rel}: {what}" for what in hard_coded(tree) if (rel, what) not in ALLOWED]
    assert offenders == []


def test_the_scan_finds_what_it_looks_for():
    source = "x.cuda()\ny = m.half()\nz = t.to('cuda:0')\nw = torch.zeros(3, device='cuda')\nok = t.to(device)\n"
    assert hard_coded(ast.parse(source)) == [".cuda()", ".half()", "device 'cuda:0'", "device 'cuda'"]
