"""The ``train.py`` processes a runner starts, and stopping them all when the runner is told to stop.

Every job runs in its own session (so its own process group): a Ctrl-C in the terminal reaches the runner only,
and the runner ends whole jobs, including anything a ``train.py`` started (data-loader workers). On SIGINT or
SIGTERM (:func:`stop_on_signals`) the runner sends SIGTERM to every running job's group, SIGKILL to what is left
after a grace period, starts no further job, and the jobs it stopped are reported as ``interrupted``. What a
killed training leaves behind is safe: checkpoints are written atomically after each epoch, and re-running the
same command resumes from the newest one. A runner killed with SIGKILL cannot stop its jobs; a re-run then sees
them through their output-folder lock (``running elsewhere``) and does not start a twin.
"""
import contextlib
import os
import signal
import subprocess
import threading
import time

STOP_GRACE_S = 10.0  # seconds from SIGTERM to SIGKILL
POLL_S = 0.05


def _signal_group(pgid, signum):
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _exited(pid):
    """Whether child ``pid`` has exited, without reaping it (its ``Popen.wait`` may be running in another thread)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


class ChildProcesses:
    """The jobs this process runs, one process group each; :meth:`stop` ends them and prevents new ones.

    Thread-safe, and :meth:`stop` may be called from a signal handler that interrupted :meth:`run` in the same
    thread (hence the re-entrant lock, and the stop check after ``Popen``).
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._running = {}  # pid (= process group id) -> command
        self.stop_reason = None

    def run(self, cmd, env=None, stdout=None):
        """Run ``cmd`` in a new session and wait; its exit status, or None when the runner is stopping (not started).

        ``stdout``: an open file that receives the job's stdout and stderr (None: inherit the runner's).
        """
        with self._lock:
            if self.stop_reason is not None:
                return None
            proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
                                    start_new_session=True)
            self._running[proc.pid] = cmd
            stopping = self.stop_reason is not None  # a signal handler ran while Popen was starting it
        if stopping:
            _signal_group(proc.pid, signal.SIGTERM)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._running.pop(proc.pid, None)
            _signal_group(proc.pid, signal.SIGKILL)  # what the job started ends with it

    def stop(self, reason, grace_s=STOP_GRACE_S):
        """Start no more jobs; SIGTERM every running job's group, SIGKILL the groups still alive after ``grace_s``.

        Returns when every job's main process has exited. A second call kills at once.
        """
        with self._lock:
            first = self.stop_reason is None
            if first:
                self.stop_reason = reason
            pids = list(self._running)
        for pid in pids:
            _signal_group(pid, signal.SIGTERM if first else signal.SIGKILL)
        deadline = time.monotonic() + (grace_s if first else 0)
        while time.monotonic() < deadline and not all(_exited(pid) for pid in pids):
            time.sleep(POLL_S)
        for pid in pids:
            _signal_group(pid, signal.SIGKILL)

    @property
    def stopping(self):
        return self.stop_reason is not None


CHILDREN = ChildProcesses()  # the jobs of this process (signals are per process)


@contextlib.contextmanager
def stop_on_signals(children=CHILDREN, signals=(signal.SIGINT, signal.SIGTERM)):
    """While active, SIGINT / SIGTERM stop ``children`` (see :meth:`ChildProcesses.stop`) instead of ending
    this process abruptly; yields a dict whose ``"signal"`` is the first signal received (None if none)."""
    received = {"signal": None}

    def handler(signum, frame):
        received["signal"] = received["signal"] or signum
        children.stop(f"the runner received {signal.Signals(signum).name}")

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
