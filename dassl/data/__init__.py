"""Data side of the engine: datasets, transforms, samplers, loaders and the DataManager.

``DataManager`` and ``DatasetWrapper`` are imported on first use (``from dassl.data import DataManager`` works as
in Dassl): they need torchvision, which dataset registration and config building do not.
"""

__all__ = ["DataManager", "DatasetWrapper"]


def __getattr__(name):
    if name in __all__:
        from . import data_manager

        return getattr(data_manager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
