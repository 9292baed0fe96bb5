#!/usr/bin/env bash
# Domain generalization: evaluate the ImageNet-trained TRAINER/CFG model (trained first if needed, as in
# cross_dataset.sh) on ImageNet-V2, -Sketch, -A and -R.
#
# usage: DATA=/path/to/datasets bash scripts/domain_generalization.sh TRAINER CFG SEED [options] [-- KEY VALUE ...]
#   options: --dry-run, --device DEV, --output DIR (default: output), --source DATASET, --targets DATASET [...]; details: --help
#   KEY VALUE pairs after -- go to every train.py call (they do not change the output directory).
# A finished job is skipped, an unfinished training run resumes from its checkpoints.
# Relative paths are relative to the repository root (this script runs from there).
# output:  output/evaluation/TRAINER/CFG_16shots/{imagenetv2,imagenet_sketch,imagenet_a,imagenet_r}/seedSEED
set -euo pipefail
if [[ -n "${DATA:-}" && -d "$DATA" ]]; then DATA="$(cd "$DATA" && pwd)"; export DATA; fi  # before the cd below
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/run_protocol.py domain_generalization "$@"
