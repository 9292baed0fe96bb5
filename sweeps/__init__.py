"""Running sweeps: jobs (one ``train.py`` call each) in chains, the protocols that build them, sweep files, and the
executors that run them.

``jobs`` (a job, its command, the skip / resume / run decision), ``processes`` (the jobs' process groups, stopping
them), ``protocols`` (the five protocols as chains), ``sweep_files`` (YAML sweep files), ``preflight`` (the checks
before any job), ``status`` (every job's state), ``cli`` (the runners' shared options), ``executors/`` (one module
per executor: ``local``, ``slurm``), and the two command lines: ``runner`` (``python scripts/sweep.py``) and
``protocol_runner`` (``python scripts/run_protocol.py``, behind ``scripts/<protocol>.sh``). It reads the output
tree's layout and the run logs through the ``results`` package, which never imports this one.
"""
