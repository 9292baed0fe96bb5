"""The warm Python of the shell-script tests (tests/warm_python.py) runs a command as ``python`` would: in the caller's
directory and environment, with its arguments, input, output, errors and exit status."""
import os
import subprocess
import sys


def run(warm_python, *argv, cwd, env=None, stdin=""):
    return subprocess.run([warm_python, *argv], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=120)


def test_a_script_gets_its_arguments_directory_environment_input_and_exit_status(warm_python, tmp_path):
    script = tmp_path / "tool.py"
    script.write_text("import os, sys\n"
                      "print(sys.argv, os.getcwd(), os.environ['PROBE'], sys.path[0])\n"
                      "print('to stderr', file=sys.stderr)\n"
                      "sys.exit(int(sys.stdin.read()))\n")
    (tmp_path / "work").mkdir()
    done = run(warm_python, str(script), "a", "b c", cwd=tmp_path / "work", env={**os.environ, "PROBE": "x"},
               stdin="5")
    assert (done.returncode, done.stderr) == (5, "to stderr\n")
    assert done.stdout == f"{[str(script), 'a', 'b c']} {tmp_path / 'work'} x {tmp_path}\n"


def test_modules_code_errors_and_threads_behave_as_in_a_fresh_python(warm_python, tmp_path):
    (tmp_path / "probe_module.py").write_text("import sys\nprint(__name__, sys.argv[1:])\n")
    done = run(warm_python, "-m", "probe_module", "x", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "__main__ ['x']\n")
    done = run(warm_python, "-c", "raise ValueError('boom')", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == "ValueError: boom"
    done = run(warm_python, "-c", "import sys; sys.exit('bad input')", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (1, "bad input\n")
    done = run(warm_python, "-c", "import torch; print(torch.get_num_threads())", cwd=tmp_path,
               env={**os.environ, "OMP_NUM_THREADS": "3"})
    assert (done.returncode, done.stdout) == (0, "3\n")
    done = run(warm_python, "-V", cwd=tmp_path)  # an interpreter flag: a fresh interpreter answers
    assert (done.returncode, done.stdout.strip()) == (0, f"Python {sys.version.split()[0]}")
