#!/usr/bin/env bash
# BMIP cross-dataset / domain-generalisation test: the released scripts/bmip/xd_test.sh (same arguments, train.py
# command and output folder), on this project's train.py. Evaluates the ImageNet model of xd_train.sh at epoch
# LOAD_EPOCH on DATASET.
# usage: DATA=/path/to/datasets bash scripts/bmip/xd_test.sh DATASET SEED DEVICE CFG LOAD_EPOCH
#   e.g. bash scripts/bmip/xd_test.sh caltech101 1 cuda:0 BMIP_ctx2_dp3_cross_datasets 2
# model:  output/imagenet/BMIP/CFG_16shots/seedSEED (SOURCE=<dataset> replaces imagenet; the release fixes it)
# output: output/evaluation/BMIP/CFG/DATASET/seedSEED (skipped if it exists, as in the release)
# environment: DATA (required), CONFIGS, PYTHON (scripts/bmip/_setup.sh), SOURCE
TRAINER=BMIP
source "$(dirname "$0")/_setup.sh"
script_args "DATASET SEED DEVICE CFG LOAD_EPOCH" "$@"
SHOTS=16
SOURCE="${SOURCE:-imagenet}"

DIR=output/evaluation/${TRAINER}/${CFG}/${DATASET}/seed${SEED}
if [[ -d "$DIR" ]]; then
    echo "Results are available in ${DIR}. Skip this job"
    exit 0
fi
echo "Run this job and save the output to ${DIR}"
run_train "$DIR" \
    --model-dir "output/${SOURCE}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}" \
    --load-epoch "$LOAD_EPOCH" \
    --eval-only
