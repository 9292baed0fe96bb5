"""The executors that run sweeps: one module per executor, each registering one ``Executor`` subclass.

Importing this package imports every module in it, so a new executor is one file here that defines an
:class:`~sweeps.executors.base.Executor` subclass decorated with ``@register_executor``: ``--executor NAME`` and
its flags appear on the sweep command line and ``sweep.py status`` asks it for its tasks, with no other edit.
Executor modules import what only their launch needs (submitit for SLURM) inside the functions that need it, so
that a local sweep or ``status`` never loads another executor's libraries.
"""
import importlib
import pkgutil

from .base import EXECUTORS, Executor, Plan, register_executor

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["EXECUTORS", "Executor", "Plan", "register_executor"]
