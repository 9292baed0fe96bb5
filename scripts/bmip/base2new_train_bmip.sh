#!/usr/bin/env bash
# BMIP base-to-novel training: the released scripts/bmip/base2new_train_bmip.sh (same arguments, train.py command
# and output folder), on this project's train.py. Train on the base classes of DATASET, 16 shots.
# usage: DATA=/path/to/datasets bash scripts/bmip/base2new_train_bmip.sh DATASET SEED DEVICE CFG
#   e.g. bash scripts/bmip/base2new_train_bmip.sh eurosat 1 cuda:0 BMIP_ctx2_dp9_lr2
# output: ./output/base2new/train_base/CFG/DATASET/seedSEED (an existing run is resumed from its checkpoints)
# environment: DATA (required), CONFIGS, PYTHON (scripts/bmip/_setup.sh)
TRAINER=BMIP
source "$(dirname "$0")/_setup.sh"
script_args "DATASET SEED DEVICE CFG" "$@"
SHOTS=16

DIR=./output/base2new/train_base/${CFG}/${DATASET}/seed${SEED}
if [[ -d "$DIR" ]]; then
    echo "Results are available in ${DIR}. Resuming..."
else
    echo "Run this job and save the output to ${DIR}"
fi
run_train "$DIR" \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES base
