"""Trainer hierarchy (Dassl 0.6.3 API): ``TrainerBase`` -> ``SimpleTrainer`` -> ``TrainerX``.

Hook order: ``__init__`` (check_cfg, device, build_data_loader, build_model, evaluator), then
``train()``: before_train, [before_epoch, run_epoch, after_epoch] per epoch, after_train.
Differences from Dassl are listed in docs/ENGINE.md (device from ``cfg.DEVICE``, early stopping that
stops, exact LR schedule on resume, no automatic DataParallel, ``load_model`` without val_result).
"""

import datetime
import os
import os.path as osp
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
from tqdm import tqdm

from dassl.evaluation import build_evaluator
from dassl.utils import (
    AverageMeter,
    MetricMeter,
    load_checkpoint,
    mkdir_if_missing,
    resume_from_checkpoint,
    save_checkpoint,
    set_random_seed,
    tolist_if_not,
)

__all__ = ["TrainerBase", "SimpleTrainer", "TrainerX", "resolve_device"]

BEST_MODEL_FILE = "model-best.pth.tar"


def resolve_device(cfg):
    """The torch device named by ``cfg.DEVICE``.

    ``""`` (or a config without ``DEVICE``) means Dassl's rule: cuda if available and ``USE_CUDA``, else cpu.
    """
    requested = cfg.get("DEVICE", "")
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() and cfg.USE_CUDA else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as e:
        raise ValueError(
            f'DEVICE={requested!r} is not a device name; use "" (auto), "cpu", "cuda" or "cuda:N"'
        ) from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f'DEVICE={requested!r} but CUDA is not available; set DEVICE "cpu" (or "" for auto)'
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"DEVICE={requested!r} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                "pick an index below that"
            )
    return device


def _progress(iterable, desc):
    """A tqdm bar over ``iterable``, shown only when stderr is a terminal (never in log files or CI)."""
    isatty = getattr(sys.stderr, "isatty", None)
    show = bool(isatty and isatty())
    return tqdm(iterable, desc=desc, disable=not show, leave=False, dynamic_ncols=True)


def _missing_checkpoint_message(directory, name, model_file):
    """Explain a missing checkpoint: what the folders hold and which CLI flags select a file."""
    model_dir = osp.join(directory, name)
    if osp.isdir(model_dir):
        held = sorted(os.listdir(model_dir))
        where = f'"{model_dir}" holds {held}'
    elif osp.isdir(directory):
        where = f'"{model_dir}" does not exist; "{directory}" holds {sorted(os.listdir(directory))}'
    else:
        where = f'"{directory}" does not exist'
    return (
        f'No checkpoint "{model_file}" for model "{name}": {where}. Pass the training OUTPUT_DIR as '
        "--model-dir, and --load-epoch N for model.pth.tar-N (model-best.pth.tar exists only when "
        "training ran with TEST.FINAL_MODEL best_val and per-epoch validation)."
    )


class TrainerBase:
    """Model registry, persistence, LR/optimizer plumbing, tensorboard and the epoch loop."""

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None
        # Set to True (e.g. by early stopping) to end the epoch loop after the current epoch.
        self.stop_training = False

    def register_model(self, name="model", model=None, optim=None, sched=None):
        """Register a module (and its optimizer / scheduler) for saving, loading, mode switching and stepping."""
        if self.__dict__.get("_models") is None:
            raise AttributeError(
                "Cannot register a model before TrainerBase.__init__() has run (call super().__init__ first)"
            )
        if name in self._models:
            raise KeyError(f'A model named "{name}" is already registered; use another name')
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        """All registered names, or ``names`` (a name or list) after checking each is registered."""
        names_real = list(self._models.keys())
        if names is None:
            return names_real
        names = tolist_if_not(names)
        for name in names:
            if name not in names_real:
                raise KeyError(f'No model registered as "{name}"; registered: {names_real}')
        return names

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        """Save every registered model to ``directory/<name>/``.

        The file is ``model.pth.tar-<epoch+1>`` unless ``model_name`` is given.
        """
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            save_checkpoint(
                {
                    "state_dict": self._models[name].state_dict(),
                    "epoch": epoch + 1,
                    "optimizer": optim.state_dict() if optim is not None else None,
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "val_result": val_result,
                },
                osp.join(directory, name),
                is_best=is_best,
                model_name=model_name,
            )

    def resume_model_if_exist(self, directory):
        """Resume every registered model from ``directory/<name>/``; return the epoch to start from (0 if none)."""
        names = self.get_model_names()
        if not all(osp.exists(osp.join(directory, name)) for name in names):
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start_epoch = 0
        for name in names:
            start_epoch = resume_from_checkpoint(
                osp.join(directory, name), self._models[name], self._optims[name], self._scheds[name]
            )
        return start_epoch

    def load_model(self, directory, epoch=None):
        """Load weights for evaluation: ``model-best.pth.tar``, or ``model.pth.tar-<epoch>`` if ``epoch`` is given."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = BEST_MODEL_FILE if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            model_path = osp.join(directory, name, model_file)
            if not osp.exists(model_path):
                raise FileNotFoundError(_missing_checkpoint_message(directory, name, model_file))
            checkpoint = load_checkpoint(model_path)
            print(f'Loading weights to {name} from "{model_path}" (epoch = {checkpoint["epoch"]})')
            self._models[name].load_state_dict(checkpoint["state_dict"])

    def set_model_mode(self, mode="train", names=None):
        """Call ``.train()`` (mode "train") or ``.eval()`` (mode "test"/"eval") on registered models."""
        if mode not in ("train", "test", "eval"):
            raise KeyError(f'set_model_mode() got mode={mode!r}; use "train", "test" or "eval"')
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            else:
                self._models[name].eval()

    def update_lr(self, names=None):
        """Step every registered scheduler once (trainers call this after the last batch of an epoch)."""
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss):
        """Raise ``FloatingPointError`` if ``loss`` is infinite or NaN."""
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                "Loss is infinite or NaN! Try a lower OPTIM.LR, or PREC fp32 / amp instead of fp16."
            )

    def init_writer(self, log_dir):
        """Open a tensorboard SummaryWriter (imported here, so importing dassl.engine never needs tensorboard)."""
        if self.__dict__.get("_writer") is None:
            from torch.utils.tensorboard import SummaryWriter

            print(f"Initialize tensorboard (log_dir={log_dir})")
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_scalar(self, tag, scalar_value, global_step=None):
        """Log a scalar to tensorboard; a no-op before ``init_writer`` (e.g. eval-only runs)."""
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    def train(self, start_epoch, max_epoch):
        """Generic loop; it ends early when a hook sets ``self.stop_training``."""
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.stop_training = False
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
            if self.stop_training:
                break
        self.after_train()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError(f"{type(self).__name__} must implement run_epoch()")

    def forward_backward(self, batch):
        raise NotImplementedError(
            f"{type(self).__name__} must implement forward_backward(batch), returning a dict like {{'loss': float}}"
        )

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss, names=None):
        """zero_grad -> NaN check -> backward -> optimizer step, for the registered optimizers."""
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


class SimpleTrainer(TrainerBase):
    """Single-dataset trainer: data, model, evaluator, checkpointing, validation and early stopping."""

    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)
        self.device = resolve_device(cfg)
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf
        # Validated epochs since the last strict improvement of the val accuracy (early stopping).
        self.epochs_without_improvement = 0

    def check_cfg(self, cfg):
        """Hook to validate trainer-specific config keys (e.g. PREC) before anything is built."""

    def build_data_loader(self):
        """Build ``dassl.data.DataManager(cfg)`` and expose its loaders and dataset facts as attributes."""
        from dassl.data import DataManager

        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self):
        raise NotImplementedError(
            f"{type(self).__name__} must override build_model(): this project does not carry dassl.modeling, "
            "so there is no generic backbone+head model. CLIP trainers build their model in build_model() "
            "and call self.register_model(name, model, optim, sched)."
        )

    def train(self):
        super().train(self.start_epoch, self.max_epoch)

    def validates_each_epoch(self):
        """True when after_epoch() runs validation (needed for best_val selection and early stopping)."""
        test_cfg = self.cfg.TEST
        return (
            not test_cfg.NO_TEST
            and test_cfg.FINAL_MODEL == "best_val"
            and not test_cfg.get("NO_TEST_EARLY", False)
        )

    def before_train(self):
        directory = self.cfg.RESUME or self.cfg.OUTPUT_DIR
        self.start_epoch = self.resume_model_if_exist(directory)
        if self.start_epoch > 0:
            self._restore_best_result(directory)
        if self.cfg.TRAIN.get("EARLY_STOPPING", False) and not self.validates_each_epoch():
            print(
                "Warning: TRAIN.EARLY_STOPPING is inactive: it needs per-epoch validation "
                "(TEST.FINAL_MODEL best_val, TEST.NO_TEST False, TEST.NO_TEST_EARLY False)"
            )
        writer_dir = osp.join(self.output_dir, "tensorboard")
        mkdir_if_missing(writer_dir)
        self.init_writer(writer_dir)
        self.time_start = time.time()

    def _restore_best_result(self, directory):
        """After a resume, continue best_val selection from the stored best val accuracy."""
        best_path = osp.join(directory, self.get_model_names()[0], BEST_MODEL_FILE)
        if not osp.exists(best_path):
            return
        val_result = load_checkpoint(best_path).get("val_result")
        if val_result is not None:
            self.best_result = val_result
            print(f"Best val result so far: {val_result:.2f}")

    def after_epoch(self):
        last_epoch = (self.epoch + 1) == self.max_epoch
        checkpoint_freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = (self.epoch + 1) % checkpoint_freq == 0 if checkpoint_freq > 0 else False

        if self.validates_each_epoch():
            curr_result = self.test(split="val")
            is_best = curr_result > self.best_result
            if is_best:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name=BEST_MODEL_FILE)
            self._update_early_stopping(is_best)

        if meet_checkpoint_freq or last_epoch or self.stop_training:
            self.save_model(self.epoch, self.output_dir)

    def _update_early_stopping(self, improved):
        """Count validated epochs without strict improvement; set ``stop_training`` at PATIENT_COUNT."""
        self.epochs_without_improvement = 0 if improved else self.epochs_without_improvement + 1
        if not self.cfg.TRAIN.get("EARLY_STOPPING", False):
            return
        patience = self.cfg.TRAIN.get("PATIENT_COUNT", 3)
        if self.epochs_without_improvement >= patience and (self.epoch + 1) < self.max_epoch:
            print(
                f"Early stopping after epoch {self.epoch + 1}: val accuracy has not improved for "
                f"{self.epochs_without_improvement} validated epochs (best {self.best_result:.2f})"
            )
            self.stop_training = True

    def after_train(self):
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val" and self._best_model_saved():
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                if self.cfg.TEST.FINAL_MODEL == "best_val":
                    print(
                        f"Warning: TEST.FINAL_MODEL is best_val but no {BEST_MODEL_FILE} was written "
                        "(per-epoch validation was off, e.g. TEST.NO_TEST_EARLY True)"
                    )
                print("Deploy the last-epoch model")
            self.test()

        elapsed = datetime.timedelta(seconds=round(time.time() - self.time_start))
        print(f"Elapsed: {elapsed}")
        self.close_writer()

    def _best_model_saved(self):
        return all(
            osp.exists(osp.join(self.output_dir, name, BEST_MODEL_FILE)) for name in self.get_model_names()
        )

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on ``split`` (default TEST.SPLIT; "val" falls back to test without a val loader).

        Returns:
            float: the evaluator's first result (accuracy).
        """
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")

        for batch in _progress(data_loader, desc=f"Evaluate {split}"):
            inputs, labels = self.parse_batch_test(batch)
            outputs = self.model_inference(inputs)
            self.evaluator.process(outputs, labels)

        results = self.evaluator.evaluate()
        for key, value in results.items():
            self.write_scalar(f"{split}/{key}", value, self.epoch)
        return list(results.values())[0]

    def model_inference(self, inputs):
        return self.model(inputs)

    def parse_batch_test(self, batch):
        """``(batch["img"], batch["label"])`` on ``self.device``."""
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def get_current_lr(self, names=None):
        """Learning rate of the first param group of the first (or first named) model's optimizer."""
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]


def seed_epoch(loader, seed, epoch):
    """Draw epoch ``epoch``'s randomness (global RNGs, loader and sampler generators) from ``(seed, epoch)`` alone,
    so a run resumed at any epoch sees the same batches and augmentations as an uninterrupted one."""
    epoch_seed = seed * 100003 + epoch
    set_random_seed(epoch_seed)
    sampler = getattr(loader, "sampler", None)
    for generator in (getattr(loader, "generator", None), getattr(sampler, "generator", None)):
        if isinstance(generator, torch.Generator):
            generator.manual_seed(epoch_seed)


class TrainerX(SimpleTrainer):
    """Trainer on labeled data only (``train_loader_x``): the base of every CoOp-family trainer."""

    def run_epoch(self):
        if self.cfg.SEED >= 0:
            seed_epoch(self.train_loader_x, self.cfg.SEED, self.epoch)
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        print_freq = self.cfg.TRAIN.PRINT_FREQ

        bar = _progress(self.train_loader_x, desc=f"Epoch {self.epoch + 1}/{self.max_epoch}")
        end = time.time()
        for self.batch_idx, batch in enumerate(bar):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)

            meet_freq = (self.batch_idx + 1) % print_freq == 0
            only_few_batches = self.num_batches < print_freq
            if meet_freq or only_few_batches:
                line = self._progress_line(batch_time, data_time, losses)
                if bar.disable:
                    print(line)
                else:
                    bar.write(line, file=sys.stdout)

            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar(f"train/{name}", meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()

    def _progress_line(self, batch_time, data_time, losses):
        """``epoch [1/5] batch [20/200] time … data … loss … lr … eta …`` (Dassl 0.6.3 format)."""
        batches_left = self.num_batches - self.batch_idx - 1
        batches_left += (self.max_epoch - self.epoch - 1) * self.num_batches
        eta = datetime.timedelta(seconds=int(batch_time.avg * batches_left))
        return " ".join(
            [
                f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                f"{losses}",
                f"lr {self.get_current_lr():.4e}",
                f"eta {eta}",
            ]
        )

    def parse_batch_train(self, batch):
        """``(img, label, domain)`` on ``self.device``."""
        return (
            batch["img"].to(self.device),
            batch["label"].to(self.device),
            batch["domain"].to(self.device),
        )
