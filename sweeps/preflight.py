"""What the runners check once, before any job: that the jobs' Python packages work and that their datasets exist.

Without it a broken environment (e.g. a torchvision wheel built for another torch) or a missing dataset folder
makes every job of a sweep fail the same way, one traceback per job. Both checks raise ``SetupError`` with one
line saying what is wrong and how to fix it; the runners print it and exit with status 2. They run in the
runner's own interpreter (the jobs' interpreter unless ``--python`` names another), before the first job, for the
repository's train.py: a dry run, which runs no job, checks only ``$DATA`` and the config files.
"""
import contextlib
import io
import re
import warnings
from pathlib import Path

from sweeps.jobs import FINISHED, REPO_ROOT, SetupError, check_config_files, config_files, job_state

PYTORCH_WHEELS = "https://download.pytorch.org/whl"


def matching_pair_command(torch_version):
    """``pip install`` of ``torch_version`` (``torch.__version__``) with the torchvision release made for it
    (torch 2.N goes with torchvision 0.(N+15)), from the index of its build (``+cpu``, ``+cu130``, ...), if any."""
    release, _, build = torch_version.partition("+")
    major, minor = (release.split(".") + ["0"])[:2]
    if major != "2" or not minor.isdigit():
        return f"pip install torch=={release} with the torchvision release made for it"
    index = f" --index-url {PYTORCH_WHEELS}/{build}" if re.fullmatch(r"cpu|cu\d+|rocm[\d.]+|xpu", build) else ""
    return f"pip install torch=={release} 'torchvision==0.{int(minor) + 15}.*'{index}"


def check_imports():
    """Import torch, torchvision and clip and build the test-time image transform, as every job does."""
    step = "torch"
    try:
        import torch  # noqa: F401

        step = "torchvision"
        import torchvision  # noqa: F401

        step = "clip"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # clip-anytorch's pkg_resources deprecation: the jobs' logs show it
            import clip  # noqa: F401

        step = "the image transform"
        from PIL import Image

        from dassl.config import get_cfg_default
        from dassl.data.transforms import build_transform

        with contextlib.redirect_stdout(io.StringIO()):  # build_transform describes itself
            build_transform(get_cfg_default(), is_train=False)(Image.new("RGB", (8, 8)))
    except Exception as error:  # noqa: BLE001 (a broken install fails in many ways; each is reported)
        raise SetupError(_import_failure(step, error)) from None


def _import_failure(step, error):
    """The one-line message for a failed ``step`` of :func:`check_imports`."""
    reason = " ".join(f"{type(error).__name__}: {error}".split())
    if step in ("torchvision", "the image transform"):
        from importlib.metadata import version

        import torch  # (imported by the step before)

        versions = f"torchvision {version('torchvision')} with torch {torch.__version__}"
        return (f"{step} does not work here ({versions}: {reason}); every job would fail the same way. Install "
                f"the torchvision release made for this torch: {matching_pair_command(torch.__version__)}")
    package = "clip-anytorch (import name clip)" if step == "clip" else "torch"
    return (f"{package} cannot be imported ({reason}); every job would fail the same way. Install the requirements: "
            f"pip install -r requirements.txt")


def check_datasets(jobs, ctx):
    """Raise ``SetupError`` when a dataset of ``jobs`` is not under ``ctx.data_root``: train.py's check of the
    dataset folder (:func:`runs.checks.check_dataset`), once per dataset config before any job. Dataset names the
    registry does not know are left to train.py, which lists the known ones."""
    from dassl.data.datasets import DATASET_REGISTRY
    from runs.checks import check_dataset
    from runs.config import build_parser, setup_cfg

    checked, missing = set(), {}  # missing: {DATASET.NAME: the check's message}
    for job in jobs:
        dataset_yaml = config_files(job, ctx)[0]
        location = tuple(_dataset_opts(list(job.opts) + list(ctx.extra_opts)))  # what can move the folder
        if (dataset_yaml, location) in checked:
            continue
        checked.add((dataset_yaml, location))
        try:
            cfg = setup_cfg(build_parser().parse_args(
                ["--root", str(ctx.data_root), "--dataset-config-file", str(dataset_yaml), *location]))
        except KeyError as error:  # a misspelt DATASET key in the opts: train.py's message, which names it
            raise SetupError(error.args[0]) from None
        if cfg.DATASET.NAME not in DATASET_REGISTRY.registered_names():
            continue
        try:
            check_dataset(cfg)
        except (FileNotFoundError, ValueError) as error:
            missing.setdefault(cfg.DATASET.NAME, " ".join(str(error).split()))
    if missing:
        first, *others = missing
        also = f" (also missing: {', '.join(others)})" if others else ""
        raise SetupError(missing[first] + also)


def _dataset_opts(opts):
    """The ``DATASET.*`` KEY VALUE pairs of ``opts`` (the only keys that decide where a dataset's files are)."""
    return [item for i in range(0, len(opts) - 1, 2) if opts[i].startswith("DATASET.") for item in opts[i:i + 2]]


def check_before_jobs(jobs, ctx, dry_run=False):
    """What a runner checks before it starts ``jobs`` with ``ctx``: every config file they name, then (unless
    ``dry_run``) the packages and the datasets of the jobs that have not finished. The last two are what the
    repository's train.py needs: another training script (``--train-py``) is not checked, and a re-run whose jobs
    have all finished has nothing to check (it only skips them)."""
    check_config_files(jobs, ctx)
    if dry_run or Path(ctx.train_py).resolve() != (REPO_ROOT / "train.py").resolve():
        return
    to_run = [job for job in jobs if job_state(job)[0] != FINISHED]
    if to_run:
        check_imports()
        check_datasets(to_run, ctx)
