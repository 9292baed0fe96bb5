"""A seeded run computes the same bits whatever DATALOADER.NUM_WORKERS is, also across a resume with another count:
each augmented view is drawn from RNGs seeded by (pass seed, item index, view number), never from the global RNGs
of whichever process builds the item."""
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import datasets  # noqa: F401  (registers ImageFolder and its config keys)
from dassl.config import extend_cfg, get_cfg_default
from dassl.data import DataManager
from dassl.data.data_manager import SeededPassLoader, build_data_loader
from dassl.data.datasets import Datum
from dassl.data.transforms import build_transform
from dassl.engine import TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import set_random_seed
from tests.cfg_helpers import set_values
from tests.toy_data import make_toy_dataset

AUGMENTATIONS = ("random_resized_crop", "random_flip", "normalize")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root))  # 6 classes x (6 train, 2 val, 3 test) 32x32 PNGs
    return root


def make_cfg(data_root, output_dir, workers, **overrides):
    cfg = extend_cfg(get_cfg_default())
    return set_values(cfg, {
        "DATASET.NAME": "ImageFolder", "DATASET.ROOT": str(data_root), "DATASET.IMAGE_FOLDER.DIR": "toy",
        "INPUT.SIZE": (16, 16), "INPUT.TRANSFORMS": AUGMENTATIONS,
        "DATALOADER.NUM_WORKERS": workers, "DATALOADER.TRAIN_X.BATCH_SIZE": 4, "DATALOADER.TEST.BATCH_SIZE": 8,
        "OPTIM.NAME": "sgd", "OPTIM.LR": 0.5, "OPTIM.MAX_EPOCH": 2, "OPTIM.LR_SCHEDULER": "cosine",
        "SEED": 1, "DEVICE": "cpu", "OUTPUT_DIR": str(output_dir), "VERBOSE": False, **overrides,
    })


# ---------------------------------------------------------------- one item


def _loader(data_root, workers, data_source=None, **overrides):
    """A seeded training loader in item order (batch 1), built as DataManager builds one."""
    cfg = make_cfg(data_root, data_root / "unused", workers, **overrides)
    if data_source is None:
        data_source = DataManager(cfg).dataset.train_x
    return build_data_loader(cfg, sampler_type="SequentialSampler", data_source=data_source, batch_size=1,
                             tfm=build_transform(cfg, is_train=True), is_train=True)


def _images(loader):
    return [batch["img"][0] for batch in loader]  # each [3, 16, 16]


def test_an_item_is_augmented_alike_in_the_main_process_and_in_workers(data_root, capsys):
    in_process, in_workers = _loader(data_root, 0), _loader(data_root, 2)
    assert isinstance(in_process, SeededPassLoader) and in_workers.num_workers == 2
    for _ in range(2):  # two passes (epochs): each pass draws its seed from the loader's generator
        a, b = _images(in_process), _images(in_workers)
        assert len(a) == len(b) == 36
        assert all(torch.equal(x, y) for x, y in zip(a, b))

    # A pass is a function of the generator's state: a direct __getitem__ with the same pass seed agrees.
    loader = _loader(data_root, 0)
    first_pass = _images(loader)
    item = loader.dataset[5]
    assert torch.equal(item["img"], first_pass[5])


def test_augmentation_differs_across_passes_indices_and_views(data_root, capsys):
    # One image listed eight times: only the augmentation can tell the items apart.
    train_x = DataManager(make_cfg(data_root, data_root / "unused", 0)).dataset.train_x
    same_image = [Datum(impath=train_x[0].impath, label=0, classname="c")] * 8
    loader = _loader(data_root, 0, data_source=same_image, **{"DATALOADER.K_TRANSFORMS": 2})

    def one_pass():  # the 16 views (8 items x 2), each [3, 16, 16]
        return [view[0] for batch in loader for view in batch["img"]]  # batch["img"]: 2 x [1, 3, 16, 16]

    first, second = one_pass(), one_pass()
    assert len(first) == 16
    assert all(not torch.equal(first[i], first[j]) for i in range(16) for j in range(i + 1, 16))
    assert all(not torch.equal(a, b) for a, b in zip(first, second))  # the next pass (epoch) draws anew


def test_an_item_leaves_the_callers_rngs_alone(data_root, capsys):
    loader = _loader(data_root, 0)
    next(iter(loader))  # sets the pass seed
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    loader.dataset[3]
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])


def test_unseeded_loaders_draw_from_the_global_rngs(data_root, capsys):
    loader = _loader(data_root, 0, SEED=-1)
    assert type(loader) is torch.utils.data.DataLoader and loader.dataset.pass_seed is None
    torch.manual_seed(3)
    a = loader.dataset[0]["img"]
    torch.manual_seed(3)
    assert torch.equal(loader.dataset[0]["img"], a)
    assert not torch.equal(loader.dataset[0]["img"], a)  # the global stream moved on


# ---------------------------------------------------------------- whole runs


class Stopped(Exception):
    pass


class TinyTrainer(TrainerX):
    """TrainerX over the real DataManager: dropout (main-process randomness) and a linear layer on the pixels."""

    stop_before_epoch = None

    def build_model(self):
        self.model = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(3 * 16 * 16, self.num_classes))
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)

    def before_epoch(self):
        if self.epoch == self.stop_before_epoch:
            raise Stopped()

    def forward_backward(self, batch):
        img, label, _ = self.parse_batch_train(batch)
        loss = F.cross_entropy(self.model(img), label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}


def train(cfg, stop_before_epoch=None):
    """Seed, build and train as train.py does; returns (trained tensors, test accuracy)."""
    set_random_seed(cfg.SEED)
    trainer = TinyTrainer(cfg)
    trainer.stop_before_epoch = stop_before_epoch
    trainer.train()
    return trainer.model.state_dict(), trainer.last_results["accuracy"]


def assert_same_run(a, b):
    (weights_a, accuracy_a), (weights_b, accuracy_b) = a, b
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    assert accuracy_a == accuracy_b


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")  # 2-core machines
def test_trained_weights_do_not_depend_on_the_worker_count(data_root, tmp_path, capsys):
    runs = {workers: train(make_cfg(data_root, tmp_path / f"w{workers}", workers)) for workers in (0, 1, 4)}
    assert_same_run(runs[0], runs[1])
    assert_same_run(runs[0], runs[4])

    # The seed matters (the equality above is not that of runs that ignore their randomness).
    other_seed = train(make_cfg(data_root, tmp_path / "seed2", 0, SEED=2))
    assert not torch.equal(other_seed[0]["2.weight"], runs[0][0]["2.weight"])


@pytest.mark.parametrize("before, after, sampler", [(0, 2, "RandomSampler"), (2, 0, "RandomClassSampler")])
def test_a_resume_with_another_worker_count_matches_the_uninterrupted_run(data_root, tmp_path, capsys, before, after,
                                                                           sampler):
    options = {"OPTIM.MAX_EPOCH": 3, "DATALOADER.TRAIN_X.SAMPLER": sampler, "DATALOADER.TRAIN_X.N_INS": 2}
    uninterrupted = train(make_cfg(data_root, tmp_path / "full", 0, **options))
    with pytest.raises(Stopped):
        train(make_cfg(data_root, tmp_path / "resumed", before, **options), stop_before_epoch=1)
    resumed = train(make_cfg(data_root, tmp_path / "resumed", after, **options))
    assert "Previous epoch: 1" in capsys.readouterr().out
    assert_same_run(uninterrupted, resumed)
