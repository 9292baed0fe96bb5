"""Run one measurement in a process of its own, so that its peak memory is its own.

On CPU the process is forked from this one after the repository's modules are imported (``preload``), which saves
the interpreter start and imports (about 5 s a measurement); the child's ``ru_maxrss`` is then its own peak, on
top of the same imports a fresh interpreter would hold. CUDA cannot be forked, so on CUDA a fresh interpreter runs
``python -m benchmarks.measure``. Either way the parent enforces a timeout and, optionally, a resident-memory cap:
a measurement above the cap is stopped and reported as needing more than the cap.

Fork only from a process that has run no torch computation yet (the benchmark's command line): OpenMP thread
pools do not survive a fork.
"""
import json
import multiprocessing
import os
import os.path as osp
import subprocess
import sys
import time
import traceback

from . import measure
from .subjects import REPO_ROOT

POLL_S = 0.2


def preload():
    """Import what every measurement imports (train.py's library, every trainer and dataset, the clip package), once,
    before forking."""
    import dassl.data.data_manager  # noqa: F401  (the engine imports it lazily)
    import datasets  # noqa: F401
    import runs.config  # noqa: F401
    import trainers  # noqa: F401
    from clip_patch.openai_clip import openai_clip

    openai_clip()


def _rss_mb(pid):
    """Resident set size of process ``pid`` in MB (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _measure_in_child(spec, result_path, log_path):
    """Body of a forked measurement: output to ``log_path``, result to ``result_path``, exit 0 or 1."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    try:
        result = measure.measure(spec)
        with open(result_path + ".part", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(result_path + ".part", result_path)
    except BaseException:  # reported to the parent through the log and the exit code
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


class _Child:
    """A started measurement process, forked or a fresh interpreter, behind one interface."""

    def __init__(self, spec, result_path, log_path):
        if spec["device"] == "cpu" and "fork" in multiprocessing.get_all_start_methods():
            self.process = multiprocessing.get_context("fork").Process(
                target=_measure_in_child, args=(spec, result_path, log_path))
            self.process.start()
            self.forked = True
        else:
            env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
            command = [sys.executable, "-m", "benchmarks.measure", "--spec", json.dumps(spec), "--result",
                       result_path]
            with open(log_path, "w") as log:
                self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                                stderr=subprocess.STDOUT)
            self.forked = False

    @property
    def pid(self):
        return self.process.pid

    def running(self):
        return self.process.is_alive() if self.forked else self.process.poll() is None

    def exit_code(self):
        if self.forked:
            self.process.join()
            return self.process.exitcode
        return self.process.wait()

    def kill(self):
        self.process.kill()
        self.exit_code()


def run_measurement(spec, workdir, index, timeout, memory_cap_mb=None):
    """Run ``spec`` in its own process; returns its result, or the spec plus ``error`` (and, when the memory cap
    stopped it, ``peak_memory_mb_above`` = the cap)."""
    result_path = osp.join(workdir, f"measurement_{index:03d}.json")
    log_path = osp.join(workdir, f"measurement_{index:03d}.log")
    child = _Child(spec, result_path, log_path)
    start = time.time()
    while child.running():
        if time.time() - start > timeout:
            child.kill()
            return {**spec, "error": f"timed out after {timeout:.0f} s"}
        if memory_cap_mb is not None and _rss_mb(child.pid) > memory_cap_mb:
            child.kill()
            return {**spec, "error": f"stopped: resident memory above the {memory_cap_mb:.0f} MB cap",
                    "peak_memory_mb_above": memory_cap_mb}
        time.sleep(POLL_S)
    code = child.exit_code()
    if code != 0 or not osp.isfile(result_path):
        with open(log_path) as f:
            tail = "\n".join(f.read().strip().splitlines()[-8:])
        return {**spec, "error": f"exit code {code}: {tail}"}
    with open(result_path) as f:
        return json.load(f)
