#!/usr/bin/env bash
# Download the pure-Python wheels that the lent GPU machine's image lacks (it has torch, torchvision, numpy, PIL,
# regex, tqdm, tabulate, PyYAML, but not yacs or OpenAI's clip package) into .whl/ (ignored by git), for Python 3.12
# there. docs/BENCHMARK.md ("GPU check") gives the command that installs them on the machine and runs the check.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    yacs==0.1.8 clip-anytorch==2.6.0 ftfy==6.3.1 wcwidth==0.2.13 setuptools==80.9.0  # setuptools: pkg_resources
ls -l .whl
