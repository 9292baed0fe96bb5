#!/usr/bin/env bash
# ProDA open-world ratio test: the released scripts/proda/base2new_ratio.sh (same arguments, config, train.py command
# and output folder), on this project's train.py. Evaluates the best-validation model of base2new_train_proda.sh on
# the open-world label space with RATIO % base classes (DATASET.SUBSAMPLE_CLASSES new with the published config's
# DATASET.USE_RATIO True; docs/DATASETS.md). The released batch_ratio.sh runs RATIO 10 and 0.
# usage: DATA=/path/to/datasets bash scripts/proda/base2new_ratio.sh DATASET SEED DEVICE RATIO
# output: output/RATIO/vit_b16_c2_e100_ctx16_warmup5_BZ64_ProDA/DATASET/seedSEED/RATIO_RATIO
# environment: DATA (required), CONFIGS, PYTHON (scripts/bmip/_setup.sh)
TRAINER=ProDA
CFG=vit_b16_c2_e100_ctx16_warmup5_BZ64_ProDA
source "$(dirname "$0")/../bmip/_setup.sh"
script_args "DATASET SEED DEVICE RATIO" "$@"
SHOTS=16
SUB=new
LOADEP=100

MODEL_DIR=output/base2new/train_base/${DATASET}/${CFG}/seed${SEED}
DIR=output/RATIO/${CFG}/${DATASET}/seed${SEED}/RATIO_${RATIO}
echo "Evaluating model"
echo "Current ratio is ${RATIO}"
run_train "$DIR" \
    --model-dir "$MODEL_DIR" \
    --load-epoch "$LOADEP" \
    --best \
    --eval-only \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES "$SUB" \
    DATASET.SUBSAMPLE_RATIO "$RATIO"
