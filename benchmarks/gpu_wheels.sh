#!/usr/bin/env bash
# Download into .whl/ (ignored by git) the pure-Python wheels that a GPU machine without internet access needs when
# its Python 3.12 has torch, torchvision, numpy, PIL, regex, tqdm, tabulate and PyYAML but not yacs or OpenAI's clip
# package. docs/BENCHMARK.md ("GPU check") says how to install them there and run the check.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    yacs==0.1.8 clip-anytorch==2.6.0 ftfy==6.3.1 wcwidth==0.2.13 setuptools==80.9.0  # setuptools: pkg_resources
ls -l .whl
