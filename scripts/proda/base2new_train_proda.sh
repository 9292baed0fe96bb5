#!/usr/bin/env bash
# ProDA base-to-novel training: the released scripts/proda/base2new_train_proda.sh (same arguments, config, train.py
# command and output folder), on this project's train.py. Train on the base classes of DATASET, 16 shots.
# usage: DATA=/path/to/datasets bash scripts/proda/base2new_train_proda.sh DATASET SEED DEVICE
#   e.g. bash scripts/proda/base2new_train_proda.sh eurosat 1 cuda:0
# output: output/base2new/train_base/DATASET/vit_b16_c2_e100_ctx16_warmup5_BZ64_ProDA/seedSEED (resumed if there)
# environment: DATA (required), CONFIGS, PYTHON (scripts/bmip/_setup.sh)
TRAINER=ProDA
CFG=vit_b16_c2_e100_ctx16_warmup5_BZ64_ProDA
source "$(dirname "$0")/../bmip/_setup.sh"
script_args "DATASET SEED DEVICE" "$@"
SHOTS=16

DIR=output/base2new/train_base/${DATASET}/${CFG}/seed${SEED}
if [[ -d "$DIR" ]]; then
    echo "Results are available in ${DIR}. Resuming..."
else
    echo "Run this job and save the output to ${DIR}"
fi
run_train "$DIR" \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES base
