"""CLIP prompt-learning trainers; importing this package registers every method in dassl's TRAINER_REGISTRY.

A new method is one file here that registers its trainer (and its config keys with ``@register_config``);
every module in this folder is imported, so neither this file nor train.py needs an edit. Result tables and benchmarks
list it by its class's ``DISPLAY_RANK`` (``display.py``; without one, after the ranked methods).
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
