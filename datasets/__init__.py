"""The datasets of this project; importing the package registers every dataset (in dassl's
DATASET_REGISTRY), the `BaseNovelClassification` evaluator and the dataset config keys.

Every module in this folder is imported, so a new dataset is one new file (no edit here or in train.py).
The protocol helpers live in `datasets.splits` (split files, generated splits, path confinement),
`datasets.fewshot` (the few-shot cache, the ecosystem's pickles) and `datasets.label_spaces` (base/new,
open world); the command-line tools `python -m datasets.verify` and `python -m datasets.download` are not
imported here.
"""
import importlib
import pkgutil
import sys

_COMMAND_LINE_TOOLS = {"verify", "download"}


def register_all():
    """Import every dataset module (each registers its dataset); importing the package does it."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _COMMAND_LINE_TOOLS:
            importlib.import_module(f"{__name__}.{module.name}")


# `python -m datasets.verify` imports this package while sys.argv[0] is still "-m" (Python sets it to the module's
# path only once the module is found): the tools call register_all() after checking their arguments, so that a
# wrong --root is answered at once, before torch is imported.
if sys.argv[:1] != ["-m"]:
    register_all()
