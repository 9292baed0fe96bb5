"""Data side of the engine: datasets, transforms, samplers, loaders and the DataManager."""

from .data_manager import DataManager, DatasetWrapper

__all__ = ["DataManager", "DatasetWrapper"]
