"""Configuration: Dassl defaults plus a registry of project extensions.

``get_cfg_default()`` gives a fresh copy of Dassl 0.6.3's 135 default keys. Modules that need more keys
(trainers, datasets, the engine itself) declare them with ``@register_config``; ``extend_cfg(cfg)``
applies every recorded function once to ``cfg``.
"""

import math

from .defaults import _C as cfg_default

__all__ = ["get_cfg_default", "clean_cfg", "register_config", "extend_cfg", "registered_config_names",
           "check_range", "check_engine_keys"]

# Extension functions in registration order, keyed by "module.qualname" (a reloaded module replaces its entry).
_CONFIG_EXTENSIONS = {}
# Instance attribute (not a config key) recording which extensions a cfg already received.
_APPLIED_ATTR = "_applied_config_extensions"


def get_cfg_default():
    """Return a fresh, mutable copy of the Dassl 0.6.3 default config."""
    return cfg_default.clone()


def clean_cfg(cfg, trainer):
    """Drop the ``TRAINER.*`` nodes of other trainers so ``print(cfg)`` shows only relevant keys.

    Unlike Dassl, the node name is compared case-insensitively, so mixed-case nodes such as
    ``TRAINER.CoPrompt`` survive for trainer ``CoPrompt``.
    """
    for key in list(cfg.TRAINER.keys()):
        if key == "NAME" or key.upper() == trainer.upper():
            continue
        cfg.TRAINER.pop(key, None)


def check_range(key, value, minimum, meaning=""):
    """Raise ``ValueError`` — one line naming ``key``, its valid range and what it means — unless ``value`` is a
    finite number (an integer where ``minimum`` is one) with ``minimum <= value``."""
    integer = isinstance(minimum, int)
    kinds = int if integer else (int, float)
    if not isinstance(value, bool) and isinstance(value, kinds) and math.isfinite(value) and value >= minimum:
        return
    wanted = f"{'an integer' if integer else 'a number'} >= {minimum}"
    raise ValueError(f"{key} = {value!r} is out of range: use {wanted}" + (f" ({meaning})" if meaning else ""))


def _extension_key(fn):
    return f"{fn.__module__}.{fn.__qualname__}"


def register_config(fn):
    """Decorator: record ``fn(cfg)``, a function adding keys (each with a one-line comment) to a config."""
    if not callable(fn):
        raise TypeError(f"register_config() expects a function fn(cfg), got {type(fn).__name__}")
    _CONFIG_EXTENSIONS[_extension_key(fn)] = fn
    return fn


def registered_config_names():
    """Keys ("module.qualname") of the recorded extension functions, in registration order."""
    return list(_CONFIG_EXTENSIONS.keys())


def extend_cfg(cfg):
    """Apply every recorded extension to ``cfg`` that it has not received yet; returns ``cfg``.

    Idempotent: a second call adds only extensions registered since the first one, and never resets
    values already merged into the keys of earlier extensions. ``cfg.clone()`` keeps the record.
    """
    applied = cfg.__dict__.setdefault(_APPLIED_ATTR, set())
    for key, fn in _CONFIG_EXTENSIONS.items():
        if key in applied:
            continue
        fn(cfg)
        applied.add(key)
    return cfg


@register_config
def _engine_keys(cfg):
    """Keys read by dassl.engine beyond Dassl 0.6.3 (the engine falls back to these defaults if absent)."""
    cfg.DEVICE = ""  # "" = auto (cuda if available and USE_CUDA, else cpu); or "cpu", "cuda", "cuda:N"
    cfg.TRAIN.EARLY_STOPPING = False  # stop when val accuracy has not improved for PATIENT_COUNT validated epochs
    cfg.TRAIN.PATIENT_COUNT = 3  # validated epochs without strict improvement before early stopping
    cfg.TRAIN.EARLY_STOPPING_MIN_EPOCHS = 6  # epochs that must finish before early stopping may end a run (released BMIP: 6)
    cfg.TRAIN.BEST_VAL_MIN_DELTA = 0.01  # a val accuracy (points) must beat the best by more than this to become model-best (released BMIP: 0.01)
    cfg.TEST.NO_TEST_EARLY = False  # True skips per-epoch validation (BMIP-compat key; disables best_val / early stop)
    cfg.OPTIM.ADAM_EPS = 1e-8  # eps of the Adam-family optimizers (torch's default; TCP's README sets 1e-3 in Dassl)


def check_engine_keys(cfg):
    """Raise ``ValueError`` (one line) unless the engine's training keys above are in range."""
    check_range("TRAIN.PATIENT_COUNT", cfg.TRAIN.PATIENT_COUNT, 0,
                meaning="validated epochs without improvement before early stopping")
    check_range("TRAIN.EARLY_STOPPING_MIN_EPOCHS", cfg.TRAIN.EARLY_STOPPING_MIN_EPOCHS, 0,
                meaning="epochs that finish before early stopping may end a run")
    check_range("TRAIN.BEST_VAL_MIN_DELTA", cfg.TRAIN.BEST_VAL_MIN_DELTA, 0.0,
                meaning="accuracy points a val result must gain to become model-best")
