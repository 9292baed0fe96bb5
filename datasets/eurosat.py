"""EuroSAT: `eurosat/{2750/<class>/, split_zhou_EuroSAT.json}`."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import PublicFile, SplitDataset
from .splits import split_class_folders

NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(SplitDataset):
    """10 land-cover classes with descriptive names; generated split 50/20/30."""

    dataset_dir = "eurosat"
    image_subdir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    raw_paths = ("2750",)
    public_files = (PublicFile("split_zhou_EuroSAT.json", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),)

    def build_split(self):
        return split_class_folders(
            self.image_dir, rename=lambda folder: NEW_CNAMES.get(folder, folder), rng=self.split_rng()
        )
