#!/usr/bin/env bash
# Cross-dataset transfer: train TRAINER/CFG on ImageNet (all classes, 16 shots, seed SEED), then evaluate
# that model on the 10 other datasets.
#
# usage: DATA=/path/to/datasets bash scripts/cross_dataset.sh TRAINER CFG SEED [options] [-- KEY VALUE ...]
#   options: --dry-run, --device DEV, --output DIR (default: output), --source DATASET, --targets DATASET [...]; details: --help
#   KEY VALUE pairs after -- go to every train.py call (they do not change the output directory).
# A finished job is skipped, an unfinished training run resumes from its checkpoints.
# Relative paths are relative to the repository root (this script runs from there).
# output:  output/imagenet/TRAINER/CFG_16shots/seedSEED and output/evaluation/TRAINER/CFG_16shots/TARGET/seedSEED
set -euo pipefail
if [[ -n "${DATA:-}" && -d "$DATA" ]]; then DATA="$(cd "$DATA" && pwd)"; export DATA; fi  # before the cd below
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/run_protocol.py cross_dataset "$@"
