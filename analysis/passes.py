"""One evaluation pass of a trainer's model over a split, with recorders attached to it.

A recorder is a context manager that hooks into the model while the pass runs (forward hooks: it reads what the
model computes, it changes nothing) and has ``batch_done(logits [B, n_cls], labels [B])``.
"""
import contextlib
import sys

import torch
from tqdm import tqdm


def split_loader(trainer, split):
    """The trainer's loader of ``split`` ("test" or "val")."""
    if split == "test":
        return trainer.test_loader
    if split == "val":
        if trainer.val_loader is None:
            raise ValueError(f"{trainer.cfg.DATASET.NAME} has no val split; use the test split")
        return trainer.val_loader
    raise ValueError(f"split must be 'test' or 'val', got '{split}'")


def run_pass(trainer, loader, recorders):
    """Run ``trainer.model_inference`` over ``loader`` as ``trainer.test()`` does (eval mode, no grad, the run's
    precision, the class text features computed once) with every recorder attached; returns the accuracy in %."""
    trainer.set_model_mode("eval")
    correct = total = 0
    with contextlib.ExitStack() as stack, torch.no_grad(), trainer.evaluation_scope():
        for recorder in recorders:
            stack.enter_context(recorder)
        for batch in tqdm(loader, desc="Analysis pass", unit="batch", file=sys.stderr, disable=None, leave=False):
            image, label = trainer.parse_batch_test(batch)
            logits = trainer.model_inference(image)  # [B, n_cls]
            for recorder in recorders:
                recorder.batch_done(logits, label)
            correct += int((logits.argmax(dim=1) == label).sum())
            total += label.numel()
    return 100.0 * correct / total


def describe_pass(cfg, split, images, accuracy):
    """``<trainer> on <dataset> <split>: N images, accuracy A%`` (report titles)."""
    return f"{cfg.TRAINER.NAME} on {cfg.DATASET.NAME} {split}: {images} images, accuracy {accuracy:.1f}%"
