"""The dataset registry and `build_dataset(cfg)`."""

from dassl.utils import Registry, check_availability

DATASET_REGISTRY = Registry("DATASET")

HOW_TO_REGISTER = (
    "To add a dataset, put a file in datasets/ that defines a DatasetBase subclass decorated "
    "with @DATASET_REGISTRY.register() (from dassl.data.datasets import DATASET_REGISTRY) and "
    "make sure the module is imported (the datasets package imports its files) before the "
    "trainer is built."
)


def build_dataset(cfg):
    """Instantiate the dataset registered under `cfg.DATASET.NAME`.

    Raises ValueError (with a "do you mean" hint and how to register a dataset) for unknown names.
    """
    avai_datasets = DATASET_REGISTRY.registered_names()
    try:
        check_availability(cfg.DATASET.NAME, avai_datasets)
    except ValueError as err:
        raise ValueError(f"{err}\n{HOW_TO_REGISTER}") from err
    if cfg.VERBOSE:
        print(f"Loading dataset: {cfg.DATASET.NAME}")
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
