"""Dataset API used by every dataset file: the registry, its builder, `Datum` and `DatasetBase`."""

from .base_dataset import Datum, DatasetBase
from .build import DATASET_REGISTRY, build_dataset

__all__ = ["DATASET_REGISTRY", "build_dataset", "Datum", "DatasetBase"]
