#!/usr/bin/env bash
# PromptSRC / PromptSRC+BMIP domain generalization: evaluate the ImageNet model of cross_dataset.sh (trained first if
# needed) on ImageNet-V2, -Sketch, -A and -R.
#
# usage: DATA=/path/to/datasets [TRAINER=PromptSRC|PromptSRC_BMIP] [CFG=name] \
#            bash scripts/promptsrc/domain_generalization.sh SEED [options] [-- KEY VALUE ...]
#   CFG default: vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets; options: those of scripts/domain_generalization.sh
# output:  output/evaluation/TRAINER/CFG_16shots/{imagenetv2,imagenet_sketch,imagenet_a,imagenet_r}/seedSEED
source "$(dirname "$0")/_trainer.sh"
if [[ $# -lt 1 ]]; then echo "usage: bash $0 SEED [options] [-- KEY VALUE ...]" >&2; exit 2; fi
exec bash "$(dirname "$0")/../domain_generalization.sh" "$TRAINER" \
  "${CFG:-vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets}" "$@"
