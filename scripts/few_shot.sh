#!/usr/bin/env bash
# Few-shot learning: train TRAINER/CFG on all classes of DATASET with 1, 2, 4, 8 and 16 shots (seed SEED);
# each run's final test is its result.
#
# usage: DATA=/path/to/datasets bash scripts/few_shot.sh TRAINER CFG DATASET SEED [options] [-- KEY VALUE ...]
#   options: --dry-run, --device DEV, --output DIR (default: output), --shots K [K ...]; details: --help
#   KEY VALUE pairs after -- go to every train.py call (they do not change the output directory).
# A finished job is skipped, an unfinished training run resumes from its checkpoints.
# Relative paths are relative to the repository root (this script runs from there).
# output:  output/few_shot/DATASET/TRAINER/CFG_Kshots/seedSEED
set -euo pipefail
if [[ -n "${DATA:-}" && -d "$DATA" ]]; then DATA="$(cd "$DATA" && pwd)"; export DATA; fi  # before the cd below
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/run_protocol.py few_shot "$@"
