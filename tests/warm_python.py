"""A warm Python for tests that run shell scripts: ``PYTHON=<client> bash scripts/...`` runs each ``$PYTHON ...``
command as a fork of a server that imported torch, the clip package and this repository once, instead of a fresh
interpreter that imports them again (most of a toy train.py run's time).

    python -m tests.warm_python SOCKET       # the server (tests/conftest.py's ``warm_python`` fixture starts it)

The client (``write_client``) is a stdlib-only script run with ``python -S``: it passes its arguments, working
directory, environment and its stdin / stdout / stderr to the server and exits with the command's exit status. The
server forks; the fork takes over those three files, the directory and the environment, and runs the command as
``python`` would (``SCRIPT.py ARGS``, ``-m MODULE ARGS`` or ``-c CODE ARGS``), uncaught exceptions and
``sys.exit`` included. Whatever else is asked for (another interpreter flag) runs in a fresh interpreter.
"""
import json
import os
import runpy
import signal
import socket
import struct
import sys
import traceback

CLIENT = '''\
import json, os, socket, struct, sys
request = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
with socket.socket(socket.AF_UNIX) as server:
    server.connect({socket!r})
    socket.send_fds(server, [struct.pack("!Q", len(request)) + request], [0, 1, 2])
    status = server.makefile("rb").read()
sys.exit(int(status) if status else "warm python: the server ended without an exit status")
'''


def write_client(path, socket_path):
    """Write the client script to ``path``, executable; returns ``path``."""
    with open(path, "w") as f:
        f.write(f"#!{sys.executable} -S\n" + CLIENT.format(socket=str(socket_path)))
    os.chmod(path, 0o755)
    return path


def preload():
    """What a train.py run or a sweep / protocol command would otherwise import (or read) on its own."""
    import dassl.engine.fingerprint  # noqa: F401
    import sweeps.runner  # noqa: F401
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401

    from benchmarks.runner import preload as preload_library
    from clip_patch.backbones.openai import _bpe

    preload_library()  # train.py's library, every trainer and dataset, the clip package
    Image.init()
    _bpe()


def run_command(argv):
    """Run ``python ARGV`` in this process as the interpreter would; returns the exit status."""
    try:
        if argv[:1] == ["-m"]:
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[:1] == ["-c"]:
            sys.argv = ["-c", *argv[2:]]
            sys.path[0] = ""
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001  (what the interpreter does with an uncaught exception)
        traceback.print_exc()
        return 1


def serve_one(connection):
    """In a forked handler: read one request, run it in a further fork, send its exit status back."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
    (length,) = struct.unpack("!Q", message[:8])
    payload = message[8:]
    while len(payload) < length:
        payload += connection.recv(1 << 16)
    request = json.loads(payload)
    pid = os.fork()
    if pid == 0:  # the command
        connection.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv = request["argv"]
        if not argv or argv[0].startswith("-") and argv[0] not in ("-m", "-c"):  # no script, or another flag
            os.execv(sys.executable, [sys.executable, *argv])  # a fresh interpreter
        if "OMP_NUM_THREADS" in os.environ:  # what torch reads when a fresh interpreter imports it
            import torch

            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        code = run_command(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    for fd in fds:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    connection.sendall(str(code).encode())


def main(socket_path):
    parent = os.getppid()
    preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped without waiting
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(socket_path)
        listener.listen(8)
        listener.settimeout(5)
        print("ready", flush=True)
        while os.getppid() == parent:  # ends with the test session that started it, however that ends
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(None)
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                try:
                    serve_one(connection)
                finally:
                    os._exit(0)
            connection.close()


if __name__ == "__main__":
    main(sys.argv[1])
