"""The datasets of this project; importing the package registers every dataset (in dassl's
DATASET_REGISTRY), the `BaseNovelClassification` evaluator and the dataset config keys.

Protocol helpers live in `datasets.protocols`; the command-line tools are
`python -m datasets.verify` and `python -m datasets.download` (not imported here).
"""

from . import (  # noqa: F401  (imported for their registrations)
    caltech101,
    dtd,
    eurosat,
    evaluation,
    fgvc_aircraft,
    food101,
    image_folder,
    imagenet,
    imagenet_variants,
    oxford_flowers,
    oxford_pets,
    protocols,
    remote_sensing,
    stanford_cars,
    sun397,
    ucf101,
)
