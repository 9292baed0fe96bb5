#!/usr/bin/env bash
# Open-world evaluation of a base-trained model (trained first if needed, as in base2new.sh): label spaces
# with r% base classes for r = 100, 90, ..., 0, and the whole base+novel label space (base / novel / HM).
#
# usage: DATA=/path/to/datasets bash scripts/open_world.sh TRAINER CFG DATASET SEED [options] [-- KEY VALUE ...]
#   options: --dry-run, --device DEV, --output DIR (default: output), --ratios R [R ...], --shots K; details: --help
#   KEY VALUE pairs after -- go to every train.py call (they do not change the output directory).
# A finished job is skipped, an unfinished training run resumes from its checkpoints.
# Relative paths are relative to the repository root (this script runs from there).
# output:  output/base2new/{test_ratio_R,test_all}/DATASET/shots_16/TRAINER/CFG/seedSEED
set -euo pipefail
if [[ -n "${DATA:-}" && -d "$DATA" ]]; then DATA="$(cd "$DATA" && pwd)"; export DATA; fi  # before the cd below
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/run_protocol.py open_world "$@"
