#!/usr/bin/env bash
# BMIP base-to-novel test: the released scripts/bmip/base2new_test_bmip.sh (same arguments, train.py command and
# output folder), on this project's train.py. Evaluates the model of base2new_train_bmip.sh on the novel classes;
# `--best` loads its model-best.pth.tar (the best-validation model), which overrides `--load-epoch 5`.
# usage: DATA=/path/to/datasets bash scripts/bmip/base2new_test_bmip.sh DATASET SEED DEVICE CFG
# output: ./output/base2new/test_new/CFG/DATASET/seedSEED
# environment: DATA (required), CONFIGS, PYTHON (scripts/bmip/_setup.sh)
TRAINER=BMIP
source "$(dirname "$0")/_setup.sh"
script_args "DATASET SEED DEVICE CFG" "$@"
SHOTS=16
LOADEP=5
SUB=new

COMMON_DIR=${CFG}/${DATASET}/seed${SEED}
MODEL_DIR=./output/base2new/train_base/${COMMON_DIR}
DIR=./output/base2new/test_${SUB}/${COMMON_DIR}
echo "Evaluating model"
if [[ -d "$DIR" ]]; then
    echo "Results are available in ${DIR}. Resuming..."
else
    echo "Runing the first phase job and save the output to ${DIR}"
fi
run_train "$DIR" \
    --model-dir "$MODEL_DIR" \
    --load-epoch "$LOADEP" \
    --eval-only \
    --best \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES "$SUB"
