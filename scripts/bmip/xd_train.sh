#!/usr/bin/env bash
# BMIP cross-dataset training: the released scripts/bmip/xd_train.sh (same arguments, train.py command and output
# folder), on this project's train.py. Trains on all classes of DATASET (ImageNet in the protocol), 16 shots.
# usage: DATA=/path/to/datasets bash scripts/bmip/xd_train.sh DATASET SEED DEVICE CFG
#   e.g. bash scripts/bmip/xd_train.sh imagenet 1 cuda:0 BMIP_ctx2_dp3_cross_datasets
# output: output/DATASET/BMIP/CFG_16shots/seedSEED (skipped if it exists, as in the release)
# environment: DATA (required), CONFIGS, PYTHON (scripts/bmip/_setup.sh)
TRAINER=BMIP
source "$(dirname "$0")/_setup.sh"
script_args "DATASET SEED DEVICE CFG" "$@"
SHOTS=16

DIR=output/${DATASET}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}
if [[ -d "$DIR" ]]; then
    echo "Results are available in ${DIR}."
    exit 0
fi
echo "Run this job and save the output to ${DIR}"
run_train "$DIR" \
    DATASET.NUM_SHOTS "$SHOTS"
