#!/usr/bin/env bash
# PromptSRC few-shot learning: all classes of DATASET with 1, 2, 4, 8 and 16 shots (seed SEED), 50 epochs, with the
# published few-shot config. As that config's comment asks, StanfordCars, Flowers102, FGVCAircraft, DTD and EuroSAT
# use GPA mean 45 / std 5 instead of 30 / 30 (passed as KEY VALUE options, recorded in each run's config.yaml).
#
# usage: DATA=/path/to/datasets [TRAINER=PromptSRC|PromptSRC_BMIP] [CFG=name] \
#            bash scripts/promptsrc/few_shot.sh DATASET SEED [options] [-- KEY VALUE ...]
#   CFG default: PromptSRC: vit_b16_c2_ep50_batch4_4+4ctx_few_shot; PromptSRC_BMIP (no published few-shot config):
#   vit_bitp_ctx4_ep20TT_adam_PromptSRC
#   options: those of scripts/few_shot.sh (--dry-run, --device DEV, --output DIR, --shots K [K ...])
# output:  output/few_shot/DATASET/TRAINER/CFG_Kshots/seedSEED
source "$(dirname "$0")/_trainer.sh"
case "$TRAINER" in
  PromptSRC) DEFAULT_CFG="vit_b16_c2_ep50_batch4_4+4ctx_few_shot" ;;
  PromptSRC_BMIP) DEFAULT_CFG="vit_bitp_ctx4_ep20TT_adam_PromptSRC" ;;
esac
if [[ $# -lt 2 ]]; then echo "usage: bash $0 DATASET SEED [options] [-- KEY VALUE ...]" >&2; exit 2; fi
CFG="${CFG:-$DEFAULT_CFG}"
args=("$@")
if [[ "$TRAINER" == PromptSRC && "$CFG" == "vit_b16_c2_ep50_batch4_4+4ctx_few_shot" ]]; then
  case "$1" in
    stanford_cars|oxford_flowers|fgvc_aircraft|dtd|eurosat)
      [[ " ${args[*]} " == *" -- "* ]] || args+=(--)
      args+=(TRAINER.PROMPTSRC.GPA_MEAN 45 TRAINER.PROMPTSRC.GPA_STD 5) ;;
  esac
fi
exec bash "$(dirname "$0")/../few_shot.sh" "$TRAINER" "$CFG" "${args[@]}"
