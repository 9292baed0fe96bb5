#!/usr/bin/env bash
# Base-to-novel generalization, any trainer: train TRAINER (configs/trainers/TRAINER/CFG.yaml) on the
# base classes of DATASET (16 shots, seed SEED), then test the trained model on the base and on the novel classes.
#
# usage: DATA=/path/to/datasets bash scripts/base2new.sh TRAINER CFG DATASET SEED [options] [-- KEY VALUE ...]
#   options: --dry-run, --device DEV, --output DIR (default: output), --shots K; details: --help
#   KEY VALUE pairs after -- go to every train.py call (they do not change the output directory).
# A finished job is skipped, an unfinished training run resumes from its checkpoints.
# Relative paths are relative to the repository root (this script runs from there).
# output:  output/base2new/{train_base,test_base,test_new}/DATASET/shots_16/TRAINER/CFG/seedSEED
set -euo pipefail
if [[ -n "${DATA:-}" && -d "$DATA" ]]; then DATA="$(cd "$DATA" && pwd)"; export DATA; fi  # before the cd below
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/run_protocol.py base2new "$@"
