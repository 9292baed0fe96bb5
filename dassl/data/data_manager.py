"""`DataManager` (dataset + transforms + loaders), `DatasetWrapper` and `build_data_loader`."""

import random

import numpy as np
import torch
import torchvision.transforms as T
from tabulate import tabulate
from torch.utils.data import Dataset as TorchDataset

from dassl.utils import read_image

from .datasets import build_dataset
from .samplers import build_sampler
from .transforms import INTERPOLATION_MODES, build_transform


def seed_worker(worker_id):
    """DataLoader `worker_init_fn`: seed `random` and NumPy from the worker's torch seed
    (itself derived from the loader's generator), so augmentations are reproducible.
    """
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def uses_cuda(cfg):
    """True when the run's device is CUDA: `cfg.DEVICE` if set (e.g. "cuda:0", "cpu"), else
    auto (`USE_CUDA` and CUDA available). DEVICE is an engine extension key, so a plain
    Dassl default config (without it) means auto."""
    device = cfg.get("DEVICE", "")
    if device:
        return torch.device(device).type == "cuda"
    return cfg.USE_CUDA and torch.cuda.is_available()


def build_data_loader(
    cfg,
    sampler_type="SequentialSampler",
    data_source=None,
    batch_size=64,
    n_domain=0,
    n_ins=2,
    tfm=None,
    is_train=True,
    dataset_wrapper=None,
    split="train_x",
):
    """Build a DataLoader over `data_source` (a list of Datum).

    `drop_last` is on only for training loaders whose data fill at least one batch. For training
    loaders with `cfg.SEED >= 0`, the sampler, the loader and its workers are seeded from SEED.
    `split` only names the data in error messages.

    Raises ValueError when the loader would be empty.
    """
    n_items = len(data_source) if data_source is not None else 0
    if n_items == 0:
        raise ValueError(
            f"The {split} split of dataset {cfg.DATASET.NAME} is empty (0 items); check "
            "DATASET.ROOT, the split file and DATASET.NUM_SHOTS / SUBSAMPLE_CLASSES"
        )

    seed = cfg.SEED if is_train and cfg.SEED >= 0 else None
    sampler = build_sampler(
        sampler_type,
        cfg=cfg,
        data_source=data_source,
        batch_size=batch_size,
        n_domain=n_domain,
        n_ins=n_ins,
        seed=seed,
    )

    generator = None
    worker_init_fn = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
        worker_init_fn = seed_worker

    if dataset_wrapper is None:
        dataset_wrapper = DatasetWrapper

    data_loader = torch.utils.data.DataLoader(
        dataset_wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=is_train and n_items >= batch_size,
        pin_memory=uses_cuda(cfg),
        generator=generator,
        worker_init_fn=worker_init_fn,
    )
    if len(data_loader) == 0:
        raise ValueError(
            f"The {split} loader of dataset {cfg.DATASET.NAME} has no batches: {n_items} items, "
            f"batch size {batch_size}, sampler {sampler_type}; lower the batch size or use "
            "more data"
        )
    return data_loader


class DataManager:
    """Build the dataset named by cfg.DATASET.NAME, its transforms and its data loaders.

    Attributes: dataset, train_loader_x, train_loader_u (None without train_u), val_loader
    (None without val), test_loader, num_classes, num_source_domains, lab2cname.
    """

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        dataset = build_dataset(cfg)

        if custom_tfm_train is None:
            tfm_train = build_transform(cfg, is_train=True)
        else:
            print("* Using custom transform for training")
            tfm_train = custom_tfm_train

        if custom_tfm_test is None:
            tfm_test = build_transform(cfg, is_train=False)
        else:
            print("* Using custom transform for testing")
            tfm_test = custom_tfm_test

        def train_loader(loader_cfg, data_source, split):
            return build_data_loader(cfg, sampler_type=loader_cfg.SAMPLER, data_source=data_source,
                                     batch_size=loader_cfg.BATCH_SIZE, n_domain=loader_cfg.N_DOMAIN,
                                     n_ins=loader_cfg.N_INS, tfm=tfm_train, is_train=True,
                                     dataset_wrapper=dataset_wrapper, split=split)

        train_x_cfg = cfg.DATALOADER.TRAIN_X
        train_loader_x = train_loader(train_x_cfg, dataset.train_x, "train_x")

        train_loader_u = None
        if dataset.train_u:
            train_u_cfg = cfg.DATALOADER.TRAIN_U
            if train_u_cfg.SAME_AS_X:
                train_u_cfg = train_x_cfg
            train_loader_u = train_loader(train_u_cfg, dataset.train_u, "train_u")

        def eval_loader(data_source, split):
            return build_data_loader(cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=data_source,
                                     batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
                                     dataset_wrapper=dataset_wrapper, split=split)

        val_loader = eval_loader(dataset.val, "val") if dataset.val else None
        test_loader = eval_loader(dataset.test, "test")

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname

        self.dataset = dataset
        self.train_loader_x = train_loader_x
        self.train_loader_u = train_loader_u
        self.val_loader = val_loader
        self.test_loader = test_loader

        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def num_source_domains(self):
        return self._num_source_domains

    @property
    def lab2cname(self):
        return self._lab2cname

    def show_dataset_summary(self, cfg):
        """Print a two-column table: dataset, domains, class count and split sizes."""
        table = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", cfg.DATASET.SOURCE_DOMAINS])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", cfg.DATASET.TARGET_DOMAINS])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))


class DatasetWrapper(TorchDataset):
    """Torch dataset over a list of Datum; items are dicts with `label`, `domain`, `impath`,
    `index`, `img` (a list of K views when K_TRANSFORMS > 1 in training; `img2`, `img3`, ... when
    `transform` is a list/tuple of transforms) and `img0` (resized, un-augmented) with
    DATALOADER.RETURN_IMG0.
    """

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform  # a transform, or a list/tuple of transforms
        self.is_train = is_train
        # Augmenting an image K>1 times is only allowed during training
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0

        if self.k_tfm > 1 and transform is None:
            raise ValueError(
                f"Cannot augment the image {self.k_tfm} times because transform is None; "
                "set DATALOADER.K_TRANSFORMS to 1 or disable INPUT.NO_TRANSFORM"
            )

        # The un-augmented view returned as img0
        interp_mode = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
        to_tensor = [T.Resize(tuple(cfg.INPUT.SIZE), interpolation=interp_mode), T.ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            to_tensor.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = T.Compose(to_tensor)

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        item = self.data_source[idx]
        output = {
            "label": item.label,
            "domain": item.domain,
            "impath": item.impath,
            "index": idx,
        }

        img0 = self._read(item.impath, idx)

        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                keyname = "img" if i == 0 else f"img{i + 1}"
                output[keyname] = self._transform_image(tfm, img0)
        else:
            output["img"] = self._transform_image(self.transform, img0)

        if self.return_img0:
            output["img0"] = self.to_tensor(img0)  # [3, H, W], without any augmentation

        return output

    def _read(self, impath, idx):
        """Read an RGB image; the error (missing, too large, undecodable) names the file, the item index and the
        dataset."""
        try:
            return read_image(impath)
        except (OSError, ValueError) as err:
            raise type(err)(
                f"Dataset {self.cfg.DATASET.NAME}, item {idx}: cannot read {impath}: {err}"
            ) from err

    def _transform_image(self, tfm, img0):
        """Apply `tfm` K times; return one view for K=1, else a list of K views."""
        views = [tfm(img0) for _ in range(self.k_tfm)]
        if len(views) == 1:
            return views[0]
        return views
