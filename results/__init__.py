"""Collecting results: read an output tree and turn its finished runs into tables and plots.

``layout`` (the output tree of every protocol), ``logparse`` (which runs finished, the result lines of their logs),
``collect`` (every run's result), ``stats`` / ``aggregate`` (seeds and datasets summarised), ``tables`` / ``plots`` /
``curves`` (markdown, CSV, PNG), ``calibration`` (the ECE / NLL / open-set AUROC table), ``published`` /
``versus_published`` (the published numbers, ``published.yaml``, and ours next to them), ``fingerprints`` (why two
runs differ; what a sweep's runs share) and ``report`` (``python scripts/results.py``). Importing them imports no
torch, so ``parse_test_res.py`` answers at once; what depends on a trainer's class (whether it learns,
``layout.trains``; the tables' method order, ``trainers/display.py``) imports the trainers, and so torch, on first use.
Running sweeps is the ``sweeps`` package, which reads ``layout`` and ``logparse`` from here (never the reverse).
"""
