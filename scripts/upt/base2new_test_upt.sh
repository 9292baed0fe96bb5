#!/usr/bin/env bash
# UPT base-to-novel test: the released scripts/upt/base2new_test_upt.sh (same config, train.py command and output
# folder), on this project's train.py. Evaluates epoch 5 of base2new_train_upt.sh on the novel classes. The release
# takes DATASET SEED and always runs on cuda:0 (its batch scripts pass a device that it ignores); here the third
# argument is the device.
# usage: DATA=/path/to/datasets bash scripts/upt/base2new_test_upt.sh DATASET SEED DEVICE
# output: ./output/base2new/test_new/vit_b16_c2_ep5_batch4_1ctxUPT/DATASET/seedSEED
# environment: DATA (required), CONFIGS, PYTHON (scripts/bmip/_setup.sh)
TRAINER=UPT
source "$(dirname "$0")/../bmip/_setup.sh"
CFG=vit_b16_c2_ep5_batch4_1ctxUPT
script_args "DATASET SEED DEVICE" "$@"
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
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES "$SUB"
