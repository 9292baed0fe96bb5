"""One run of a configured trainer, as ``train.py`` makes it; every entry point that builds or runs a training run
imports it from here (nothing imports ``train``).

* :mod:`runs.config` — the run's command-line flags and the config built from them (YAML files only).
* :mod:`runs.checks` — bad arguments and config values, found before anything is written or built.
* :mod:`runs.output_dir` — claiming an output folder for a run (finished, resumed, refused).
* :mod:`runs.reports` — reports an evaluation can also write (``--draw``), registered by the packages that make them.
* :mod:`runs.run` — ``main(argv)``: check, configure, claim, then train or evaluate; ``cli(argv)``: the same with
  exit statuses and one-line errors.
* :mod:`runs.errors` — ``UsageError`` and which error means "fix the input" (exit 2) or "the run failed" (exit 1).

Heavy modules (torch, CLIP, the trainers) are imported inside the functions that need them, so ``--help`` and
argument errors answer at once.
"""
