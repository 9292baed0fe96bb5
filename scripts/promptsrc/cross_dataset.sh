#!/usr/bin/env bash
# PromptSRC / PromptSRC+BMIP cross-dataset transfer: train on ImageNet (all classes, 16 shots, seed SEED) with the
# published cross-dataset config, then evaluate the final model (the Gaussian prompt aggregate) on the 10 other
# datasets. Replaces the releases' xd_train.sh + xd_test.sh (which named a missing ep5 config in PromptSRC, and an
# unregistered trainer in the BMIP code).
#
# usage: DATA=/path/to/datasets [TRAINER=PromptSRC|PromptSRC_BMIP] [CFG=name] \
#            bash scripts/promptsrc/cross_dataset.sh SEED [options] [-- KEY VALUE ...]
#   CFG default: vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets (each trainer's own file of that name; PromptSRC_BMIP's
#   runs at depth 9 with 2 tokens, as in the release: docs/PROMPTSRC.md)
#   options: those of scripts/cross_dataset.sh (--dry-run, --device DEV, --output DIR, --source, --targets)
# output:  output/imagenet/TRAINER/CFG_16shots/seedSEED and output/evaluation/TRAINER/CFG_16shots/TARGET/seedSEED
source "$(dirname "$0")/_trainer.sh"
if [[ $# -lt 1 ]]; then echo "usage: bash $0 SEED [options] [-- KEY VALUE ...]" >&2; exit 2; fi
exec bash "$(dirname "$0")/../cross_dataset.sh" "$TRAINER" "${CFG:-vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets}" "$@"
