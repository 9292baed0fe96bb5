# Sourced by the wrappers in this folder: TRAINER (default PromptSRC) must be PromptSRC or PromptSRC_BMIP.
set -euo pipefail
TRAINER="${TRAINER:-PromptSRC}"
if [[ "$TRAINER" != PromptSRC && "$TRAINER" != PromptSRC_BMIP ]]; then
  echo "error: TRAINER must be PromptSRC or PromptSRC_BMIP, got '$TRAINER'" >&2
  exit 2
fi
