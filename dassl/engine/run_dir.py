"""One output folder belongs to one run: its lock, its stored config and its final result.

``OUTPUT_DIR`` of a run holds, besides the ecosystem's ``log.txt*``, ``tensorboard/`` and checkpoint folders:

* ``.lock`` — locked (``flock``) by the process that runs in the folder, for as long as it runs. A second run in
  the same folder fails at once (:class:`OutputDirBusy`); :func:`lock_holder` tells a sweep runner that a job is
  still running elsewhere. The lock disappears with its process (also on SIGKILL). The file's text says who holds
  it (pid, host, start time) for messages. On NFS, flock needs NFSv4 (Linux maps it onto POSIX locks there).
* ``config.yaml`` — the run's effective config, written when the run starts. A later command in the same folder
  whose config differs in a key that changes results is refused (:class:`ConfigMismatch`) with the keys listed,
  unless the user explicitly accepts the change.
* ``result.json`` — written atomically once the final evaluation has printed its result. A run is *finished*
  exactly when this file exists; re-running a finished run's command trains and evaluates nothing.

Reading (``lock_holder``, ``read_result``, ``read_config``) needs only the standard library, so result parsers and
sweep runners import this module without torch; the writers import ``dassl.utils.tools`` when they run.
"""
import datetime
import fcntl
import json
import os
import os.path as osp
import re
import shutil
import socket

__all__ = [
    "BEST_CHECKPOINT", "EPOCH_CHECKPOINT_PREFIX", "checkpoint_file", "checkpoint_epochs", "has_checkpoints",
    "LOCK_FILE", "CONFIG_FILE", "RESULT_FILE", "RESULT_NEUTRAL_KEYS",
    "OutputDirBusy", "ConfigMismatch", "OutputDirLock", "lock_holder",
    "read_result", "write_result", "NoDeployedModel", "deployed_epoch",
    "read_config", "write_config", "config_differences", "describe_differences", "describe_mismatch",
]

LOCK_FILE = ".lock"
CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.json"

# Keys that never change what a run computes: where things are written or read from, logging, data loading
# parallelism (a seeded run augments each item from its own seed in whichever process makes it: see
# dassl/data/data_manager.py), which device (it can change rounding, but a run may move to another machine), and what
# the final evaluation prints besides its numbers. Every other key counts.
RESULT_NEUTRAL_KEYS = frozenset({
    "OUTPUT_DIR", "RESUME", "DATASET.ROOT", "DATALOADER.NUM_WORKERS", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ",
    "VERBOSE", "USE_CUDA", "DEVICE", "TEST.PER_CLASS_RESULT", "TEST.COMPUTE_CMAT",
})


class OutputDirBusy(RuntimeError):
    """Another live process runs in this output folder."""


class ConfigMismatch(ValueError):
    """The folder holds a run whose stored config differs from the requested one in keys that change results."""


def _now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class OutputDirLock:
    """Exclusive, non-blocking ``flock`` on ``OUTPUT_DIR/.lock``; a context manager.

    ``acquire()`` creates the folder if needed and raises :class:`OutputDirBusy` (naming the holder) when another
    process holds the lock. The lock is per open file, so a second lock in the same process also conflicts.
    ``remove_created()`` deletes the folders ``acquire()`` created, for a run that leaves nothing behind.
    """

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.path = osp.join(output_dir, LOCK_FILE)
        self._file = None
        self.created = []  # the folders acquire() created, the output folder first, then its new parents

    def acquire(self):
        self.created = _missing_folders(self.output_dir)
        os.makedirs(self.output_dir, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputDirBusy(
                f"{self.output_dir} is in use by another run ({holder}); wait for it to finish, stop it, or use "
                "another --output-dir"
            ) from None
        self._file = handle
        try:
            _record_holder(handle.fileno())
        except OSError as error:  # e.g. a full disk: hold nothing, leave nothing
            self.remove_created()
            self.release()
            from dassl.utils.tools import DiskFull, is_disk_full

            if is_disk_full(error):
                raise DiskFull(self.path) from error
            raise
        return self

    def remove_created(self):
        """Delete the output folder and the parents :meth:`acquire` created (while the lock is held: the run in it
        is this one), e.g. after a run that saved nothing; a parent that meanwhile holds other files stays."""
        if not self.created:
            return
        shutil.rmtree(self.created[0], ignore_errors=True)
        for parent in self.created[1:]:
            try:
                os.rmdir(parent)
            except OSError:  # not empty: another run's folder is in it
                break
        self.created = []

    def release(self):
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _record_holder(fd):
    """Write who holds the lock into the lock file ``fd`` (unbuffered), replacing an earlier holder's line."""
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n".encode())


def _missing_folders(path):
    """The folders that creating ``path`` would create, ``path`` first, then its missing parents upwards."""
    missing = []
    path = osp.abspath(path)
    while not osp.isdir(path) and path != osp.dirname(path):
        missing.append(path)
        path = osp.dirname(path)
    return missing


def lock_holder(output_dir):
    """Who holds ``output_dir``'s lock ("pid N on HOST since T"), or None when no live process does."""
    path = osp.join(output_dir, LOCK_FILE)
    if not osp.exists(path):
        return None
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            return handle.read().strip() or "another process"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


# -- checkpoint files (OUTPUT_DIR/<model name>/, written by dassl.utils.save_checkpoint) ---------------------------

BEST_CHECKPOINT = "model-best.pth.tar"
EPOCH_CHECKPOINT_PREFIX = "model.pth.tar-"
EPOCH_CHECKPOINT = re.compile(r"^model\.pth\.tar-(\d+)$")


def checkpoint_file(epoch=None):
    """``model.pth.tar-<epoch>``, or ``model-best.pth.tar`` when ``epoch`` is None."""
    return BEST_CHECKPOINT if epoch is None else f"{EPOCH_CHECKPOINT_PREFIX}{epoch}"


def checkpoint_epochs(fdir):
    """Epochs N of the ``model.pth.tar-N`` files in ``fdir``, ascending (empty when the folder does not exist)."""
    if not osp.isdir(fdir):
        return []
    return sorted(int(m.group(1)) for m in map(EPOCH_CHECKPOINT.match, os.listdir(fdir)) if m)


def has_checkpoints(output_dir):
    """Whether a model folder of ``output_dir`` holds an epoch checkpoint (a training run saved something)."""
    return osp.isdir(output_dir) and any(checkpoint_epochs(osp.join(output_dir, d)) for d in os.listdir(output_dir))


# -- result ------------------------------------------------------------------------------------------------------


def write_result(output_dir, record):
    """Write ``result.json`` atomically: ``record`` (plain JSON values) plus the time it was written."""
    from dassl.utils.tools import write_json  # torch-side helpers: only the run that writes imports them

    write_json(dict(record, written=_now()), osp.join(output_dir, RESULT_FILE))


def read_result(output_dir):
    """The finished run's result record, or None when the run has not finished (or the file is unreadable)."""
    path = osp.join(output_dir, RESULT_FILE)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("metrics"), dict) else None


class NoDeployedModel(FileNotFoundError):
    """The folder holds no model to evaluate: its training run has not finished, or its checkpoints are gone."""


def deployed_epoch(output_dir, require_finished=True):
    """Which checkpoint of a training run to evaluate: the model its final test used. ``None`` =
    ``model-best.pth.tar`` (``result.json`` says the run deployed ``best_val``), else the newest epoch N of
    ``model.pth.tar-N`` (the last epoch, or the early-stopping epoch).

    Checkpoints live in ``output_dir/<model-name>/``; raises ``NoDeployedModel`` when the run has not finished or
    has no checkpoint. With ``require_finished`` False a folder without ``result.json`` (e.g. written by the
    ecosystem's own code) is accepted: ``model-best.pth.tar`` if it holds one, else the newest epoch.
    """
    result = read_result(output_dir)
    if result is None and require_finished:
        raise NoDeployedModel(f"the training run in {output_dir} has not finished (no result.json): run its "
                              "training job first")
    if result is not None and result.get("deployed") == "best_val":
        return None
    folders = [osp.join(output_dir, d) for d in sorted(os.listdir(output_dir))
               if osp.isdir(osp.join(output_dir, d))] if osp.isdir(output_dir) else []
    if result is None and any(osp.isfile(osp.join(folder, BEST_CHECKPOINT)) for folder in folders):
        return None
    epochs = [epoch for folder in folders for epoch in checkpoint_epochs(folder)]
    if not epochs:
        raise NoDeployedModel(f"no checkpoint (model.pth.tar-N or {BEST_CHECKPOINT}) under {output_dir}: its "
                              "training run did not finish or the checkpoints were deleted; re-run training")
    return max(epochs)


# -- config ------------------------------------------------------------------------------------------------------


def write_config(output_dir, cfg):
    """Store the effective config as ``OUTPUT_DIR/config.yaml`` (atomically)."""
    from dassl.utils.tools import atomic_write  # torch-side helpers: only the run that writes imports them

    text = cfg.dump()

    def write(tmp_path):
        with open(tmp_path, "w") as f:
            f.write(text)

    os.makedirs(output_dir, exist_ok=True)
    atomic_write(osp.join(output_dir, CONFIG_FILE), write)


def read_config(output_dir):
    """The stored config as a flat ``{dotted key: value}`` dict, or None when the folder has none."""
    import yaml

    path = osp.join(output_dir, CONFIG_FILE)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return flatten_config(yaml.safe_load(f) or {})


def flatten_config(node, prefix=""):
    """A (nested) config mapping as ``{dotted key: value}``; tuples become lists (as after a YAML round trip)."""
    flat = {}
    for key, value in node.items():
        if hasattr(value, "items"):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def config_differences(stored, current, defaults=None):
    """``[(key, stored value, current value)]`` for every result-relevant key whose value differs.

    ``stored`` / ``current`` are flat dicts (:func:`flatten_config`). A key only in ``current`` (added to the code
    after the run started) counts only when its value differs from ``defaults`` (flat); a key only in ``stored``
    (since removed from the code) is ignored.
    """
    differences = []
    for key in sorted(current):
        if key in RESULT_NEUTRAL_KEYS:
            continue
        if key not in stored:
            if defaults is not None and key in defaults and defaults[key] == current[key]:
                continue
            differences.append((key, "(absent)", current[key]))
        elif stored[key] != current[key]:
            differences.append((key, stored[key], current[key]))
    return differences


def describe_differences(differences, limit=8):
    """``KEY: old -> new; ...`` for a message."""
    shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in differences[:limit])
    return shown + (f"; ... ({len(differences) - limit} more)" if len(differences) > limit else "")


# Keys that make a run another kind of run: when one differs, the method's own keys differ as a matter of course.
RUN_KIND_KEYS = ("TRAINER.NAME", "DATASET.NAME")


def describe_mismatch(differences):
    """What a message says of a stored run whose config has ``differences`` (:func:`config_differences`): "it
    holds a CoOp run, this is a BMIP run" when the trainer or dataset changed, else the keys that differ."""
    changed = {key: (old, new) for key, old, new in differences if key in RUN_KIND_KEYS}
    if not changed:
        return f"its config differs in {describe_differences(differences)}"

    def kind(side):
        trainer, dataset = (changed.get(key, (None, None))[side] for key in RUN_KIND_KEYS)
        return " ".join(filter(None, ["a", trainer, "run", dataset and f"on {dataset}"]))

    return f"it holds {kind(0)}, this is {kind(1)}"
