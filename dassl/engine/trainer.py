"""Trainer hierarchy (Dassl 0.6.3 API): ``TrainerBase`` -> ``SimpleTrainer`` -> ``TrainerX``.

Hook order: ``__init__`` (check_cfg, device, build_data_loader, build_model, evaluator), then
``train()``: before_train, [before_epoch, run_epoch, after_epoch] per epoch, after_train.
Differences from Dassl are listed in docs/ENGINE.md (device from ``cfg.DEVICE``, early stopping that
stops, exact LR schedule on resume, no automatic DataParallel, ``load_model`` without val_result).
"""

import datetime
import math
import os
import os.path as osp
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
from torch.nn.utils import get_total_norm
from tqdm import tqdm

from dassl.evaluation import build_evaluator
from dassl.utils import (
    AverageMeter,
    CheckpointError,
    MetricMeter,
    checkpoint_epochs,
    load_checkpoint,
    mkdir_if_missing,
    restore_checkpoint,
    save_checkpoint,
    set_random_seed,
    tolist_if_not,
)
from dassl.utils.curves import CURVES_FILE, append_curve_row, truncate_curves

from .run_dir import (BEST_CHECKPOINT, checkpoint_file, config_differences, describe_differences, flatten_config,
                      read_config, write_result)

__all__ = ["TrainerBase", "SimpleTrainer", "TrainerX", "resolve_device", "DivergenceError"]

# A finite run is flagged as diverging when its parameters grow this much (RMS, vs. the first epoch) or its mean
# training loss grows this much (vs. the first epoch).
DIVERGENCE_PARAM_GROWTH = 100.0
DIVERGENCE_LOSS_GROWTH = 3.0


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss, gradient scale or parameter; the last good checkpoint is kept."""


def resolve_device(cfg, source="DEVICE"):
    """The torch device named by ``cfg.DEVICE``; ``source`` names it in error messages (``"--device"`` when the
    command line set it).

    ``""`` (or a config without ``DEVICE``) means Dassl's rule: cuda if available and ``USE_CUDA``, else cpu.
    """
    requested = cfg.get("DEVICE", "")
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() and cfg.USE_CUDA else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as e:
        raise ValueError(
            f'{source} {requested} is not a device name; use "cpu", "cuda" or "cuda:N", or leave {source} unset (auto)'
        ) from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"{source} {requested}: CUDA is not available on this machine; use {source} cpu, or leave {source} "
                "unset (cuda if available, else cpu)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"{source} {requested}: only {torch.cuda.device_count()} CUDA device(s) exist; "
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

    # False for trainers with nothing to learn or load (e.g. ZeroshotCLIP): their evaluations need no --model-dir.
    LEARNS = True

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

        The file is ``model.pth.tar-<epoch+1>`` unless ``model_name`` is given. Each file also carries
        ``run_state`` (see :meth:`run_state`), so a resume restores the whole training state from one file.
        """
        run_state = self.run_state()
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            save_checkpoint(
                {
                    "state_dict": self._models[name].state_dict(),
                    "epoch": epoch + 1,
                    "optimizer": optim.state_dict() if optim is not None else None,
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "val_result": val_result,
                    "run_state": run_state,
                    **self.checkpoint_record(),
                },
                osp.join(directory, name),
                is_best=is_best,
                model_name=model_name,
            )

    def run_state(self):
        """Training state besides models, optimizers and schedulers, saved in every checkpoint (plain values and
        tensors only). Subclasses with more state extend the dict and :meth:`restore_run_state`."""
        return {}

    def checkpoint_record(self):
        """Entries every checkpoint file carries about what the models were built on (plain values; none here)."""
        return {}

    def check_checkpoint_record(self, checkpoint, path):
        """Raise if checkpoint ``path`` (a loaded dict) was written for something else (see checkpoint_record)."""

    def restore_run_state(self, state):
        """Restore what :meth:`run_state` returned (called on resume, after the models are loaded)."""

    def resume_model_if_exist(self, directory):
        """Resume every registered model from the newest epoch saved completely for all of them in
        ``directory/<name>/``; return the epoch to start from (0 if there is none).

        Files are written atomically, so a kill leaves complete files only; an epoch missing for one of the models
        (a kill between their saves) is passed over for an older one. (Temporary files of a killed save are removed
        by train.py once it holds the output folder's lock; ``directory`` may be another run's folder.)
        """
        names = self.get_model_names()
        folders = [osp.join(directory, name) for name in names]
        common = set.intersection(*(set(checkpoint_epochs(folder)) for folder in folders)) if folders else set()
        if not common:
            print("No checkpoint found, train from scratch")
            return 0
        epoch = max(common)
        print(f"Found checkpoint at {directory} (will resume training)")
        run_state = None
        for name, folder in zip(names, folders):
            fpath = osp.join(folder, checkpoint_file(epoch))
            print(f'Loading checkpoint from "{fpath}"')
            checkpoint = load_checkpoint(fpath)
            self.check_checkpoint_record(checkpoint, fpath)
            restore_checkpoint(checkpoint, self._models[name], self._optims[name], self._scheds[name])
            if run_state is None:
                run_state = checkpoint.get("run_state")
        print(f"Previous epoch: {epoch}")
        if run_state:
            self.restore_run_state(run_state)
        return epoch

    def load_model(self, directory, epoch=None):
        """Load weights for evaluation: ``model-best.pth.tar``, or ``model.pth.tar-<epoch>`` if ``epoch`` is given.

        Each registered model's state dict passes through :meth:`checkpoint_state_for` (trainers map checkpoints
        of other codebases there and drop class-dependent tensors); the result must match the model's keys and
        shapes exactly, else :class:`CheckpointError` says what differs and, when the model folder stores its
        config, which settings differ from this run's.
        """
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = checkpoint_file(epoch)
        self.loaded_checkpoints = {}
        for name in self.get_model_names():
            model_path = osp.join(directory, name, model_file)
            if not osp.exists(model_path):
                raise FileNotFoundError(_missing_checkpoint_message(directory, name, model_file))
            checkpoint = self.load_weights_file(name, model_path, config_dir=directory)
            print(f'Loading weights to {name} from "{model_path}" (epoch = {checkpoint.get("epoch")})')
            stat = os.stat(model_path)
            self.loaded_checkpoints[name] = {"path": osp.abspath(model_path), "epoch": checkpoint.get("epoch"),
                                             "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def load_weights_file(self, name, path, config_dir=None):
        """Load checkpoint file ``path`` into registered model ``name`` through :meth:`checkpoint_state_for`; keys and
        shapes must match exactly (``CheckpointError`` otherwise, naming the settings that differ when ``config_dir``
        stores the training config). Returns the checkpoint dict (a bare state dict is accepted too)."""
        checkpoint = load_checkpoint(path)
        self.check_checkpoint_record(checkpoint, path)
        state_dict = checkpoint.get("state_dict", checkpoint)
        state_dict = self.checkpoint_state_for(name, dict(state_dict))
        try:
            missing, unexpected = self._models[name].load_state_dict(state_dict, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise CheckpointError(self._mismatch_message(path, config_dir, str(err).strip())) from None
        if missing or unexpected:
            detail = f"missing keys {missing[:6]}, unexpected keys {unexpected[:6]}"
            raise CheckpointError(self._mismatch_message(path, config_dir, detail))
        return checkpoint

    def checkpoint_state_for(self, name, state_dict):
        """The state dict to load into model ``name`` from a checkpoint's ``state_dict`` (identity by default)."""
        return state_dict

    def _mismatch_message(self, model_path, directory, detail):
        """Why a checkpoint does not fit the built model, naming the settings that differ when they are known."""
        message = f'Checkpoint "{model_path}" does not fit the model built for this run ({detail.splitlines()[0]}).'
        stored = read_config(directory) if directory else None
        cfg = getattr(self, "cfg", None)
        if stored is not None and cfg is not None:
            # Only the method and backbone decide which tensors a model has and their shapes.
            differences = [d for d in config_differences(stored, flatten_config(cfg))
                           if d[0].startswith(("TRAINER.", "MODEL."))]
            if differences:
                return f"{message} It was trained with other settings: {describe_differences(differences)}."
        return (f"{message} Build the model with the settings it was trained with (--trainer, --config-file, "
                "MODEL.BACKBONE.NAME, N_CTX, PROMPT_DEPTH, ...).")

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
        """Raise :class:`DivergenceError` (a ``FloatingPointError``) if ``loss`` is infinite or NaN."""
        if not torch.isfinite(loss).all():
            where = f" at epoch {self.epoch + 1}, batch {self.batch_idx + 1}" if hasattr(self, "batch_idx") else ""
            raise DivergenceError(
                f"Loss is infinite or NaN{where}! Lower OPTIM.LR, or use PREC fp32 / amp instead of fp16; "
                "the last good checkpoint is kept."
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
            if self.stop_training:  # restored from a checkpoint of a run that had already stopped early
                break
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
        self.num_base_classes = None  # set by build_data_loader when the dataset says which labels are base
        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname, num_base_classes=self.num_base_classes)
        self.best_result = -np.inf
        # Validated epochs since the last strict improvement of the val accuracy (early stopping).
        self.epochs_without_improvement = 0
        self.completed_epochs = 0  # epochs whose weights the models hold (restored on resume)
        self.select_on_val = False  # per-epoch validation chooses the deployed model (decided in before_train)
        self.divergence_reference = None  # {"loss", "param_rms"} of the first epoch (finite-divergence warning)
        self.last_results = None  # the evaluator's results of the latest test()

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
        self.num_base_classes = dm.num_base_classes
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
        """True when the config asks after_epoch() to validate (for best_val selection and early stopping)."""
        test_cfg = self.cfg.TEST
        return (
            not test_cfg.NO_TEST
            and test_cfg.FINAL_MODEL == "best_val"
            and not test_cfg.get("NO_TEST_EARLY", False)
        )

    def val_overlaps_test(self):
        """Why validating would look at test images (Dassl's test(split="val") falls back to the test set), or ""."""
        if self.val_loader is None:
            return "the dataset has no val split, and validation would run on the test set"
        dataset = getattr(getattr(self, "dm", None), "dataset", None)
        if dataset is None or not dataset.val or not dataset.test:
            return ""
        test_images = {item.impath for item in dataset.test}
        shared = sum(item.impath in test_images for item in dataset.val)
        if shared:
            return f"{shared} of its {len(dataset.val)} val images are test images (e.g. ImageNet's val split is its test split)"
        return ""

    def before_train(self):
        directory = self.cfg.RESUME or self.cfg.OUTPUT_DIR
        self.start_epoch = self.resume_model_if_exist(directory)
        self.select_on_val = self.validates_each_epoch()
        if self.select_on_val:
            overlap = self.val_overlaps_test()
            if overlap:
                print(
                    f"Warning: TEST.FINAL_MODEL best_val and TRAIN.EARLY_STOPPING would choose the model on test "
                    f"images: {overlap}. Per-epoch validation is off for this run; the last-epoch model is deployed."
                )
                self.select_on_val = False
        if self.cfg.TRAIN.get("EARLY_STOPPING", False) and not self.select_on_val:
            print(
                "Warning: TRAIN.EARLY_STOPPING is inactive: it needs per-epoch validation on a val split "
                "(TEST.FINAL_MODEL best_val, TEST.NO_TEST False, TEST.NO_TEST_EARLY False)"
            )
        if self.start_epoch > 0:  # a killed run may have saved epoch N but not yet removed epoch N-1
            self._remove_superseded_checkpoints(self.start_epoch)
        truncate_curves(osp.join(self.output_dir, CURVES_FILE), self.start_epoch)
        writer_dir = osp.join(self.output_dir, "tensorboard")
        mkdir_if_missing(writer_dir)
        self.init_writer(writer_dir)
        self.time_start = time.time()

    # -- what a checkpoint carries besides the models ----------------------------------------------------------
    def run_state(self):
        """Selection, early-stopping, loss-scaling and divergence-watch state (saved with every checkpoint)."""
        scaler = getattr(self, "scaler", None)
        return {
            "completed_epochs": self.completed_epochs,
            "best_result": float(self.best_result),
            "epochs_without_improvement": self.epochs_without_improvement,
            "stop_training": self.stop_training,
            "grad_scaler": scaler.state_dict() if scaler is not None else None,
            "divergence_reference": self.divergence_reference,
        }

    def restore_run_state(self, state):
        self.completed_epochs = state.get("completed_epochs", self.completed_epochs)
        self.best_result = state.get("best_result", self.best_result)
        self.epochs_without_improvement = state.get("epochs_without_improvement", 0)
        self.stop_training = state.get("stop_training", False)
        self.divergence_reference = state.get("divergence_reference")
        scaler = getattr(self, "scaler", None)
        if scaler is not None and state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
        if self.best_result > -np.inf:
            print(f"Best val result so far: {self.best_result:.2f}")
        if self.stop_training:
            print("The resumed run had stopped early: nothing left to train")

    # -- the end of an epoch -------------------------------------------------------------------------------------
    def after_epoch(self):
        """Validate (if selecting on val), save a new best, decide early stopping, then save the epoch's checkpoint.

        A checkpoint is saved after every epoch (the resume point); ``model.pth.tar-N`` files that
        ``TRAIN.CHECKPOINT_FREQ`` does not ask to keep are removed once a newer one exists, so a finished run keeps
        Dassl's files (the last epoch, plus every CHECKPOINT_FREQ-th).
        """
        last_epoch = (self.epoch + 1) == self.max_epoch
        val_result = None
        self.completed_epochs = self.epoch + 1  # saved in run_state by both saves below
        if self.select_on_val:
            val_result = self.test(split="val")
            improved = val_result > self.best_result
            if val_result > self.best_result + self._best_val_min_delta():
                self.best_result = val_result
                self.save_model(self.epoch, self.output_dir, val_result=val_result, model_name=BEST_CHECKPOINT)
            self._update_early_stopping(improved)
        if last_epoch or self.stop_training:
            self.finalize_weights()
        self._check_divergence_trend()
        self._write_curves_row(val_result)  # before the checkpoint: a resume from it must not lose this row
        self.save_model(self.epoch, self.output_dir)
        self._remove_superseded_checkpoints(self.epoch + 1)

    def finalize_weights(self):
        """Hook called once training ends (last epoch or early stop), before the final checkpoint is saved: a
        method that deploys other weights than the last step's (e.g. an average over epochs) swaps them in here."""

    def _best_val_min_delta(self):
        """How much (accuracy points) a val result must exceed the best one to become the new best model."""
        return self.cfg.TRAIN.get("BEST_VAL_MIN_DELTA", 0.0)

    def _update_early_stopping(self, improved):
        """Count validated epochs without strict improvement; set ``stop_training`` at PATIENT_COUNT (not before
        EARLY_STOPPING_MIN_EPOCHS epochs have finished, as the released BMIP trainer)."""
        self.epochs_without_improvement = 0 if improved else self.epochs_without_improvement + 1
        if not self.cfg.TRAIN.get("EARLY_STOPPING", False):
            return
        patience = self.cfg.TRAIN.get("PATIENT_COUNT", 3)
        min_epochs = self.cfg.TRAIN.get("EARLY_STOPPING_MIN_EPOCHS", 0)
        finished = self.epoch + 1
        if self.epochs_without_improvement >= patience and finished >= min_epochs and finished < self.max_epoch:
            print(
                f"Early stopping after epoch {finished}: val accuracy has not improved for "
                f"{self.epochs_without_improvement} validated epochs (best {self.best_result:.2f})"
            )
            self.stop_training = True

    def _kept_epoch(self, epoch):
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        return epoch == self.max_epoch or (freq > 0 and epoch % freq == 0)

    def _remove_superseded_checkpoints(self, newest):
        """Delete epoch files older than epoch ``newest`` (the resume point) that CHECKPOINT_FREQ does not keep."""
        for name in self.get_model_names():
            folder = osp.join(self.output_dir, name)
            for epoch in checkpoint_epochs(folder):
                if epoch < newest and not self._kept_epoch(epoch):
                    os.remove(osp.join(folder, checkpoint_file(epoch)))

    def _write_curves_row(self, val_result):
        lr = getattr(self, "epoch_lr", None)
        row = {"epoch": self.epoch + 1, "lr": "" if lr is None else f"{lr:.6g}"}
        meters = getattr(self, "epoch_meters", None)
        if meters is not None:
            row.update({f"train_{name}": f"{meter.avg:.6g}" for name, meter in meters.meters.items()})
        row["val_accuracy"] = "" if val_result is None else f"{val_result:.4f}"
        append_curve_row(osp.join(self.output_dir, CURVES_FILE), row)

    # -- divergence ----------------------------------------------------------------------------------------------
    def _trainable_tensors(self):
        return [p for name in self.get_model_names() for p in self._models[name].parameters() if p.requires_grad]

    def check_finite_step(self, loss_summary):
        """After a training step: stop with :class:`DivergenceError` on a non-finite loss, a collapsed loss scale or
        non-finite parameters. Nothing is saved before the check, so the last checkpoint on disk stays good."""
        where = f"epoch {self.epoch + 1}, batch {self.batch_idx + 1}"
        bad = {k: v for k, v in loss_summary.items() if isinstance(v, float) and not math.isfinite(v)}
        problem = None
        if bad:
            problem = f"the loss is not finite ({', '.join(f'{k}={v}' for k, v in bad.items())})"
        scaler = getattr(self, "scaler", None)
        if problem is None and scaler is not None and scaler.is_enabled() and scaler.get_scale() < 1.0:
            problem = f"the gradients overflow at every step (loss scale fell to {scaler.get_scale():.3g})"
        if problem is None:
            tensors = self._trainable_tensors()
            with torch.no_grad():  # max |p| over all of them: fused per dtype/device, one host sync
                finite = not tensors or bool(torch.isfinite(get_total_norm(tensors, float("inf"))))
            if not finite:
                problem = "the parameters are no longer finite"
        if problem is not None:
            raise DivergenceError(
                f"Training diverged at {where}: {problem}. Lower OPTIM.LR (now {self.get_current_lr():.3g}) or use "
                f"PREC fp32 / amp; the last good checkpoint in {self.output_dir} is kept."
            )

    def _check_divergence_trend(self):
        """Flag (in the log) a run that stays finite but blows up: parameters or loss growing far past epoch 1."""
        meters = getattr(self, "epoch_meters", None)
        loss_meter = meters.meters.get("loss") if meters is not None else None
        tensors = self._trainable_tensors()
        if loss_meter is None or not tensors:
            return
        rms = float(torch.sqrt(sum((t.detach().float() ** 2).sum() for t in tensors) /
                               sum(t.numel() for t in tensors)))
        if self.divergence_reference is None:
            self.divergence_reference = {"loss": float(loss_meter.avg), "param_rms": rms}
            return
        ref = self.divergence_reference
        growth = rms / max(ref["param_rms"], 1e-6)
        if growth > DIVERGENCE_PARAM_GROWTH or loss_meter.avg > DIVERGENCE_LOSS_GROWTH * max(ref["loss"], 1e-6):
            print(
                f"Warning: training looks divergent at epoch {self.epoch + 1}: mean loss {loss_meter.avg:.4g} "
                f"(epoch 1: {ref['loss']:.4g}), parameter RMS {growth:.3g}x that after epoch 1. "
                f"Consider a lower OPTIM.LR (now {self.get_current_lr():.3g})."
            )

    # -- the end of training -------------------------------------------------------------------------------------
    def after_train(self):
        print("Finish training")
        deployed = "none"
        if not self.cfg.TEST.NO_TEST:
            if self.select_on_val and self._best_model_saved():
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
                deployed = "best_val"
            else:
                if self.cfg.TEST.FINAL_MODEL == "best_val":
                    why = ("no validated epoch improved on the previous best" if self.select_on_val else
                           "per-epoch validation was off, e.g. TEST.NO_TEST_EARLY True or val = test")
                    print(f"Warning: TEST.FINAL_MODEL is best_val but no {BEST_CHECKPOINT} was written ({why})")
                print("Deploy the last-epoch model")
                deployed = "last_step"
            self.test()
        self.record_result("train", deployed=deployed)
        elapsed = datetime.timedelta(seconds=round(time.time() - self.time_start))
        print(f"Elapsed: {elapsed}")
        self.close_writer()

    def record_result(self, mode, **extra):
        """Write ``OUTPUT_DIR/result.json`` (the run is finished): the final test's metrics, what was deployed,
        for an evaluation which checkpoint files were loaded, and the run's fingerprint (``fingerprint.py``)."""
        from dassl.engine.fingerprint import run_fingerprint

        results = self.last_results or {}
        record = {
            "mode": mode,
            "trainer": self.cfg.TRAINER.NAME,
            "dataset": self.cfg.DATASET.NAME,
            "split": getattr(self, "last_test_split", None),
            "metrics": {k: float(v) for k, v in results.items() if isinstance(v, (int, float))},
            "epochs_trained": self.completed_epochs,
            "models": getattr(self, "loaded_checkpoints", {}),
            **extra,
            "fingerprint": run_fingerprint(self),
        }
        write_result(self.output_dir, record)

    def precision_used(self):
        """The compute precision this run actually uses (recorded in its fingerprint); None: no precision policy."""
        return None

    def transforms_used(self):
        """``{"train", "test"}``: ``repr`` of the transform pipelines this run applies (recorded in its
        fingerprint); None without the data manager of ``build_data_loader``."""
        dm = getattr(self, "dm", None)
        return {"train": repr(dm.tfm_train), "test": repr(dm.tfm_test)} if dm is not None else None

    def _best_model_saved(self):
        return all(
            osp.exists(osp.join(self.output_dir, name, BEST_CHECKPOINT)) for name in self.get_model_names()
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
        self.last_results, self.last_test_split = results, split
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
    """Draw epoch ``epoch``'s randomness from ``(seed, epoch)`` alone, so a run resumed at any epoch (with any worker
    count) sees the same batches, augmentations and dropout as an uninterrupted one: the global RNGs (dropout and
    other model randomness, in the main process), the sampler's generator (batch order) and the loader's generator
    (the pass seed from which ``SeededPassLoader`` seeds every augmented view, in whichever process makes it)."""
    epoch_seed = seed * 100003 + epoch
    set_random_seed(epoch_seed)
    sampler = getattr(loader, "sampler", None)
    for generator in (getattr(loader, "generator", None), getattr(sampler, "generator", None)):
        if isinstance(generator, torch.Generator):
            generator.manual_seed(epoch_seed)
    if hasattr(sampler, "reseed"):  # dassl's batch-structured samplers (private random.Random)
        sampler.reseed(epoch_seed)


class TrainerX(SimpleTrainer):
    """Trainer on labeled data only (``train_loader_x``): the base of every CoOp-family trainer."""

    def run_epoch(self):
        if self.cfg.SEED >= 0:
            seed_epoch(self.train_loader_x, self.cfg.SEED, self.epoch)
        self.set_model_mode("train")
        self.epoch_lr = self.get_current_lr()
        losses = self.epoch_meters = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        print_freq = self.cfg.TRAIN.PRINT_FREQ

        bar = _progress(self.train_loader_x, desc=f"Epoch {self.epoch + 1}/{self.max_epoch}")
        end = time.time()
        for self.batch_idx, batch in enumerate(bar):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            self.check_finite_step(loss_summary)
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
