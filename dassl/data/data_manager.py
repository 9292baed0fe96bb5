"""`DataManager` (dataset + transforms + loaders), `DatasetWrapper` and `build_data_loader`.

Randomness of a seeded training loader (`cfg.SEED >= 0`): every pass over the loader (`iter()`) draws a pass seed
from the loader's generator in the main process (`SeededPassLoader`), and `DatasetWrapper` augments each view under
global RNGs seeded from (pass seed, item index, view number) alone (`augmentation_seed`, `seeded_global_rngs`). An
augmented image therefore does not depend on which process computes it, so results do not depend on
DATALOADER.NUM_WORKERS, and the main process's RNG streams (dropout, initialisation) are never consumed by the data.
"""

import contextlib
import hashlib
import random

import numpy as np
import torch
import torchvision.transforms as T
from tabulate import tabulate
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import get_worker_info

from dassl.utils import read_image

from .datasets import build_dataset
from .samplers import build_sampler
from .transforms import INTERPOLATION_MODES, build_transform


def seed_worker(worker_id):
    """DataLoader `worker_init_fn`: seed `random` and NumPy from the worker's torch seed (itself derived from the
    loader's generator). `DatasetWrapper` seeds every view itself; this keeps a custom dataset wrapper that draws
    from the global RNGs outside `seeded_global_rngs` reproducible for a given worker count.
    """
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def augmentation_seed(pass_seed, index, view):
    """The seed of one augmented view: a 64-bit hash (BLAKE2b) of the loader pass's seed, the item index and the
    view number, so it is the same in every process and on every platform."""
    key = f"{pass_seed}:{index}:{view}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


@contextlib.contextmanager
def seeded_global_rngs(seed, restore=True):
    """Run the body with torch's CPU generator, `random` and NumPy's global RNG seeded from `seed` (a 64-bit int);
    with `restore`, give the caller back the three states it had. (CUDA generators are left alone: transforms run
    on the CPU.)"""
    saved = (torch.get_rng_state(), random.getstate(), np.random.get_state()) if restore else None
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed >> 32)  # NumPy takes 32 bits; torch's CPU generator keeps the low 32
    try:
        yield
    finally:
        if saved is not None:
            torch_state, random_state, numpy_state = saved
            torch.set_rng_state(torch_state)
            random.setstate(random_state)
            np.random.set_state(numpy_state)


class SeededPassLoader(torch.utils.data.DataLoader):
    """A DataLoader over a `DatasetWrapper` that starts every pass (`iter()`) by drawing the pass's augmentation
    seed from its `generator` (in the main process, before any worker starts), so each augmented view is a
    function of (generator state at the pass's start, item index, view number) in whichever process computes it.

    The trainer re-seeds the generator from (SEED, epoch) before every epoch (`seed_epoch`), so a resumed run
    augments like an uninterrupted one. (Persistent workers would keep the first pass's seed; none are used.)
    """

    def __iter__(self):
        self.dataset.pass_seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator))
        return super().__iter__()


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

    `drop_last` is on only for training loaders whose data fill at least one batch. A training loader with
    `cfg.SEED >= 0` is a `SeededPassLoader`: its sampler and generator are seeded from SEED, and augmentations
    are seeded per item and view (see the module docstring). `split` only names the data in error messages.

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

    if dataset_wrapper is None:
        dataset_wrapper = DatasetWrapper

    dataset = dataset_wrapper(cfg, data_source, transform=tfm, is_train=is_train)
    options = dict(
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=is_train and n_items >= batch_size,
        pin_memory=uses_cuda(cfg),
    )
    if seed is None:
        data_loader = torch.utils.data.DataLoader(dataset, **options)
    else:
        generator = torch.Generator()
        generator.manual_seed(seed)
        data_loader = SeededPassLoader(dataset, generator=generator, worker_init_fn=seed_worker, **options)
    if len(data_loader) == 0:
        raise ValueError(
            f"The {split} loader of dataset {cfg.DATASET.NAME} has no batches: {n_items} items, "
            f"batch size {batch_size}, sampler {sampler_type}; lower the batch size or use "
            "more data"
        )
    return data_loader


class DataManager:
    """Build the dataset named by cfg.DATASET.NAME, its transforms and its data loaders.

    Attributes: dataset, tfm_train, tfm_test, train_loader_x, train_loader_u (None without train_u), val_loader
    (None without val), test_loader, num_classes, num_source_domains, lab2cname, num_base_classes (the
    dataset's count of leading base labels, None when it does not say).
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
        self._num_base_classes = dataset.num_base_classes

        self.dataset = dataset
        self.tfm_train, self.tfm_test = tfm_train, tfm_test
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

    @property
    def num_base_classes(self):
        return self._num_base_classes

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

    `pass_seed` (set by `SeededPassLoader` at the start of every pass) makes augmentation reproducible: view v of
    item i is computed under global RNGs seeded with `augmentation_seed(pass_seed, i, v)`, and the caller's RNG
    states are restored afterwards. Views are numbered in the order they are made (transform list, then K). With
    `pass_seed` None (unseeded runs, evaluation) the transforms draw from the process's global RNGs.
    """

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform  # a transform, or a list/tuple of transforms
        self.is_train = is_train
        # Augmenting an image K>1 times is only allowed during training
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        self.pass_seed = None

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
                output[keyname] = self._transform_image(tfm, img0, idx, first_view=i * self.k_tfm)
        else:
            output["img"] = self._transform_image(self.transform, img0, idx)

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

    def _transform_image(self, tfm, img0, idx, first_view=0):
        """Apply `tfm` K times (views `first_view`, `first_view + 1`, ... of item `idx`); return one view for K=1,
        else a list of K views."""
        views = [self._augment(tfm, img0, idx, first_view + k) for k in range(self.k_tfm)]
        if len(views) == 1:
            return views[0]
        return views

    def _augment(self, tfm, img0, idx, view):
        """`tfm(img0)`, under RNGs seeded from (pass seed, idx, view) when the pass is seeded."""
        if self.pass_seed is None:
            return tfm(img0)
        # A worker's global RNGs serve only the data, so they need no restoring (that would cost ~0.1 ms, mostly
        # NumPy's state); the main process's serve training too (dropout), so they are restored there.
        in_main_process = get_worker_info() is None
        with seeded_global_rngs(augmentation_seed(self.pass_seed, idx, view), restore=in_main_process):
            return tfm(img0)
