"""Remote-sensing scene classification sets (BMIP's open-world benchmarks).

Layout, the same for all: `<dataset_dir>/<image_subdir>/<class folder>/<image>` plus an optional
`<dataset_dir>/split_chen_<name>.json` in the split-json format. Without that file a 50/20/30
per-class split is generated with a fixed seed and written there. Generated class names follow
`datasets.naming.readable_classname` ("harbor&port" -> "harbor and port", "BareLand" ->
"bare land"); names inside an existing split json are used as they are.
"""

from dassl.data.datasets import DATASET_REGISTRY

from .base import SplitDataset
from .naming import readable_classname
from .splits import split_class_folders


class RemoteSensingDataset(SplitDataset):
    """Folder-per-class remote-sensing set; subclasses only name their folders and split file."""

    split_optional = True

    def build_split(self):
        return split_class_folders(self.image_dir, rename=readable_classname, rng=self.split_rng())


@DATASET_REGISTRY.register()
class AID(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "AID", "AID_dataset", "split_chen_aid.json"


@DATASET_REGISTRY.register()
class MLRSNet(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "MLRSNet", "Images", "split_chen_mlrsnet.json"


@DATASET_REGISTRY.register()
class OPTIMAL(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "OPTIMAL", "Images", "split_chen_optimal.json"


@DATASET_REGISTRY.register()
class PatternNet(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "PatternNet", "images", "split_chen_patternnet.json"


@DATASET_REGISTRY.register()
class RESISC45(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "RESISC45", "images", "split_chen_RESISC45.json"


@DATASET_REGISTRY.register()
class RSICB128(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "RSICB128", "images", "split_chen_RSICB128.json"


@DATASET_REGISTRY.register()
class RSICB256(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "RSICB256", "images", "split_chen_RSICB256.json"


@DATASET_REGISTRY.register()
class RSICD(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "RSICD", "RSICD", "split_chen_RSICD.json"


@DATASET_REGISTRY.register()
class WHURS19(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "WHURS19", "images", "split_chen_WHURS19.json"


@DATASET_REGISTRY.register()
class UCM(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "UCM", "images", "split_chen_UCM.json"


@DATASET_REGISTRY.register()
class RSITMD(RemoteSensingDataset):
    dataset_dir, image_subdir, split_file = "RSITMD", "images", "split_chen_RSITMD.json"
