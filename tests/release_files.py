"""Checkpoint files written in the released codes' layout (Dassl's save_checkpoint), for the tests that load them."""
import os

import torch


def write_release_checkpoint(directory, model_name, state_dict, epoch):
    """``<directory>/<model_name>/model.pth.tar-<epoch>`` holding ``state_dict`` as the releases save it; returns the
    path."""
    path = os.path.join(directory, model_name, f"model.pth.tar-{epoch}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": {}, "scheduler": {}}, path)
    return path
