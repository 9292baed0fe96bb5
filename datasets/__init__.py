"""The datasets of this project; importing the package registers every dataset (in dassl's
DATASET_REGISTRY), the `BaseNovelClassification` evaluator and the dataset config keys.

Every module in this folder is imported, so a new dataset is one new file (no edit here or in train.py).
Protocol helpers live in `datasets.protocols`; the command-line tools `python -m datasets.verify` and
`python -m datasets.download` are not imported here.
"""
import importlib
import pkgutil

_COMMAND_LINE_TOOLS = {"verify", "download"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _COMMAND_LINE_TOOLS:
        importlib.import_module(f"{__name__}.{_module.name}")
