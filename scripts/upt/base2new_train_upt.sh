#!/usr/bin/env bash
# UPT base-to-novel training: the released scripts/upt/base2new_train_upt.sh (same arguments, config, train.py command
# and output folder), on this project's train.py. Train on the base classes of DATASET, 16 shots.
# usage: DATA=/path/to/datasets bash scripts/upt/base2new_train_upt.sh DATASET SEED DEVICE
#   e.g. bash scripts/upt/base2new_train_upt.sh eurosat 1 cuda:0
# output: ./output/base2new/train_base/vit_b16_c2_ep5_batch4_1ctxUPT/DATASET/seedSEED (an existing run is resumed)
# environment: DATA (required), CONFIGS, PYTHON (scripts/bmip/_setup.sh)
TRAINER=UPT
source "$(dirname "$0")/../bmip/_setup.sh"
CFG=vit_b16_c2_ep5_batch4_1ctxUPT
script_args "DATASET SEED DEVICE" "$@"
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
