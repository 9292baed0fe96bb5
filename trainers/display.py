"""The order in which result tables and benchmarks list trainers, read from the trainer registry.

Each registered trainer class may set ``DISPLAY_RANK`` (an int; lower comes first): the methods of the papers in their
order (ZeroshotCLIP, CoOp, CoCoOp, MaPLe, BMIP, PromptSRC, PromptSRC_BMIP), then the other baselines. A trainer
without a rank (a new method, a trainer file from another repository) follows the ranked ones, by name, as does a
name the registry does not know (an output tree written by other code). A new trainer thus appears in every table
and benchmark by being registered.
"""
from dassl.engine import TRAINER_REGISTRY

from .lookup import trainer_class


def display_rank(name):
    """The sort key of the trainer ``name``: (0, its DISPLAY_RANK, name), or (1, 0, name) without a rank."""
    rank = getattr(trainer_class(name), "DISPLAY_RANK", None)  # trainers not built on trainers/base.py have none
    return (0, rank, name) if rank is not None else (1, 0, name)


def display_order():
    """Every registered trainer's name, in display order."""
    return sorted(TRAINER_REGISTRY.registered_names(), key=display_rank)
