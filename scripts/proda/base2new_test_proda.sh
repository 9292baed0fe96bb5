#!/usr/bin/env bash
# ProDA base-to-novel test: the released scripts/proda/base2new_test_proda.sh (same arguments, config, train.py
# command and output folder), on this project's train.py. Evaluates the best-validation model of
# base2new_train_proda.sh (`--best` overrides `--load-epoch 100`) with DATASET.SUBSAMPLE_CLASSES new. The published
# config sets DATASET.USE_RATIO True and SUBSAMPLE_RATIO 0, so this is the open-world label space at r = 0: the novel
# half, plus one base class when the class count is odd (docs/DATASETS.md). BEST is accepted and unused, as released.
# usage: DATA=/path/to/datasets bash scripts/proda/base2new_test_proda.sh DATASET SEED DEVICE BEST
# output: output/base2new/test_new/DATASET/vit_b16_c2_e100_ctx16_warmup5_BZ64_ProDA/seedSEED
# environment: DATA (required), CONFIGS, PYTHON (scripts/bmip/_setup.sh)
TRAINER=ProDA
CFG=vit_b16_c2_e100_ctx16_warmup5_BZ64_ProDA
source "$(dirname "$0")/../bmip/_setup.sh"
script_args "DATASET SEED DEVICE BEST" "$@"
SHOTS=16
LOADEP=100
SUB=new

COMMON_DIR=${DATASET}/${CFG}/seed${SEED}
MODEL_DIR=output/base2new/train_base/${COMMON_DIR}
DIR=output/base2new/test_${SUB}/${COMMON_DIR}
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
