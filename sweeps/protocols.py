"""The five evaluation protocols as chains of jobs (see ``sweeps.jobs``), with the ecosystem's options.

Each builder returns a chain (or a list of chains) whose directories come from ``results.layout``.
Training-free trainers (ZeroshotCLIP) get evaluation-only jobs in the place of the training job. ``name``
(default: the config name) is the config's folder name in the output tree: runs of one config with different
options need different names.
"""
from results.layout import (
    BASE2NEW_SHOTS, DEFAULT_SOURCE, base2new_dir, evaluation_dir, few_shot_dir, ratio_split, source_dir, trains,
)
from sweeps.jobs import Job

PROTOCOLS = ("base2new", "open_world", "cross_dataset", "domain_generalization", "few_shot")


def _shots_opts(shots):
    return ("DATASET.NUM_SHOTS", str(shots))


def _base2new_training(root, trainer, cfg, dataset, seed, shots, folder):
    """The base-class training job shared by base-to-novel and open-world (``folder``: the config's folder)."""
    return Job(trainer, cfg, dataset, seed,
               output_dir=base2new_dir(root, "train_base", dataset, shots, trainer, folder, seed),
               opts=_shots_opts(shots) + ("DATASET.SUBSAMPLE_CLASSES", "base"),
               training=trains(trainer))


def _base2new_eval(root, train_job, split, shots, opts, folder):
    """An evaluation of the base-trained model, written to the ``split`` tree."""
    return Job(train_job.trainer, train_job.cfg, train_job.dataset, train_job.seed,
               output_dir=base2new_dir(root, split, train_job.dataset, shots, train_job.trainer,
                                       folder, train_job.seed),
               opts=_shots_opts(shots) + tuple(opts),
               model_dir=train_job.output_dir if train_job.training else None)


def base2new(root, trainer, cfg, dataset, seed, shots=BASE2NEW_SHOTS, name=None):
    """Train on the base classes, then test the trained model on the base and on the novel classes."""
    folder = name or cfg
    train = _base2new_training(root, trainer, cfg, dataset, seed, shots, folder)
    chain = [train] if train.training else []
    return chain + [
        _base2new_eval(root, train, "test_base", shots, ("DATASET.SUBSAMPLE_CLASSES", "base"), folder),
        _base2new_eval(root, train, "test_new", shots, ("DATASET.SUBSAMPLE_CLASSES", "new"), folder),
    ]


def open_world(root, trainer, cfg, dataset, seed, ratios, shots=BASE2NEW_SHOTS, name=None):
    """Evaluate the base-trained model on label spaces with r% base classes, and on base ∪ novel (``all``)."""
    folder = name or cfg
    train = _base2new_training(root, trainer, cfg, dataset, seed, shots, folder)
    chain = [train] if train.training else []
    for ratio in ratios:
        if not 0 <= int(ratio) <= 100:
            raise ValueError(f"open-world ratio {ratio} is outside 0..100 (percent of base classes)")
        chain.append(_base2new_eval(root, train, ratio_split(int(ratio)), shots, (
            "DATASET.SUBSAMPLE_CLASSES", "all", "DATASET.USE_RATIO", "True",
            "DATASET.SUBSAMPLE_RATIO", str(int(ratio))), folder))
    chain.append(_base2new_eval(root, train, "test_all", shots, (
        "DATASET.SUBSAMPLE_CLASSES", "all", "TEST.EVALUATOR", "BaseNovelClassification"), folder))
    return chain


def cross_dataset(root, trainer, cfg, seed, targets, source=DEFAULT_SOURCE, shots=BASE2NEW_SHOTS, name=None):
    """Train on ``source`` (all classes, ``shots`` shots), then evaluate that model on every target.

    Domain generalization is the same chain with the ImageNet variants as targets.
    """
    train = Job(trainer, cfg, source, seed,
                output_dir=source_dir(root, source, trainer, name or cfg, shots, seed),
                opts=_shots_opts(shots), training=trains(trainer))
    evals = [Job(trainer, cfg, target, seed,
                 output_dir=evaluation_dir(root, trainer, name or cfg, shots, source, target, seed),
                 model_dir=train.output_dir if train.training else None)
             for target in targets]
    return [train] + evals


def few_shot(root, trainer, cfg, dataset, seed, shots_list, name=None):
    """One training run per number of shots on all classes; each run's final test is its result."""
    chains = []
    for shots in shots_list:
        if int(shots) < 1:
            raise ValueError(f"few-shot needs shots >= 1, got {shots}")
        chains.append([Job(trainer, cfg, dataset, seed,
                           output_dir=few_shot_dir(root, dataset, trainer, name or cfg, int(shots), seed),
                           opts=_shots_opts(int(shots)), training=trains(trainer))])
    return chains
