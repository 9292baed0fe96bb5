"""Collecting results: read an output tree and turn its finished runs into tables and plots.

``layout`` (the output tree of every protocol), ``logparse`` (which runs finished, the result lines of their logs),
``collect`` (every run's result), ``stats`` / ``aggregate`` (seeds and datasets summarised), ``tables`` / ``plots`` /
``curves`` (markdown, CSV, PNG) and ``report`` (``python scripts/results.py``). These modules import no torch, so
``parse_test_res.py`` and ``sweep.py status`` answer at once; the tables' method order comes from the trainer registry
(``trainers/display.py``), imported once a table is made.
Running sweeps is the ``sweeps`` package, which reads ``layout`` and ``logparse`` from here (never the reverse).
"""
