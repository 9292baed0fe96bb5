#!/usr/bin/env bash
# PromptSRC / PromptSRC+BMIP base-to-novel: train on the base classes of DATASET (16 shots, seed SEED), then test the
# final model (the Gaussian prompt aggregate, model.pth.tar-N) on the base and on the novel classes.
# Replaces the releases' base2new_train.sh + base2new_test.sh (PromptSRC) and base2new_{train,test}_promptsrc*.sh
# (BMIP code; see docs/PROMPTSRC.md for what was broken in them).
#
# usage: DATA=/path/to/datasets [TRAINER=PromptSRC|PromptSRC_BMIP] [CFG=name] \
#            bash scripts/promptsrc/base2new.sh DATASET SEED [options] [-- KEY VALUE ...]
#   TRAINER  PromptSRC (default) or PromptSRC_BMIP
#   CFG      configs/trainers/TRAINER/CFG.yaml; default: the published base-to-novel recipe,
#            PromptSRC: vit_b16_c2_ep20_batch4_4+4ctx, PromptSRC_BMIP: vit_bitp_ctx4_ep20TT_adam_PromptSRC
#   options: those of scripts/base2new.sh (--dry-run, --device DEV, --output DIR, --shots K)
# output:  output/base2new/{train_base,test_base,test_new}/DATASET/shots_16/TRAINER/CFG/seedSEED
source "$(dirname "$0")/_trainer.sh"
case "$TRAINER" in
  PromptSRC) DEFAULT_CFG="vit_b16_c2_ep20_batch4_4+4ctx" ;;
  PromptSRC_BMIP) DEFAULT_CFG="vit_bitp_ctx4_ep20TT_adam_PromptSRC" ;;
esac
if [[ $# -lt 2 ]]; then echo "usage: bash $0 DATASET SEED [options] [-- KEY VALUE ...]" >&2; exit 2; fi
exec bash "$(dirname "$0")/../base2new.sh" "$TRAINER" "${CFG:-$DEFAULT_CFG}" "$@"
