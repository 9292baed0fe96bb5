# Sourced by the scripts in this folder (the released BMIP scripts' forms) and in scripts/bitp/, scripts/proda/ and
# scripts/upt/: sets REPO, CONFIGS, PYTHON and TRAIN_PY (the sourcing script sets TRAINER first), and defines
# script_args (the arguments, DATA and the config files checked) and run_train.
#   DATA     the datasets root (the released scripts hard-code DATA="/mnt/hdd/DATA"); required
#   CONFIGS  folder holding datasets/DATASET.yaml and trainers/TRAINER/CFG.yaml (default: the repository's configs/)
#   PYTHON   interpreter (default: python3)
# Like the release, the scripts write ./output/... relative to the directory they are run from (the repository
# root in the release's usage); train.py and the configs are found wherever that is.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONFIGS="${CONFIGS:-$REPO/configs}"
PYTHON="${PYTHON:-python3}"
TRAIN_PY="$REPO/train.py"
TRAINER="${TRAINER:?set TRAINER before sourcing _setup.sh}"
# script_args "DATASET SEED DEVICE CFG [MORE...]" "$@": exactly these arguments (else the usage line), set as shell
# variables of those names; then DATA and the two config files must exist. Every failure is one line, exit 2.
script_args() {
    local names=($1) name file
    shift
    if [[ $# -ne ${#names[@]} ]]; then
        echo "usage: DATA=/path/to/datasets bash $0 ${names[*]}" >&2
        exit 2
    fi
    for name in "${names[@]}"; do
        printf -v "$name" '%s' "$1"
        shift
    done
    if [[ -z "${DATA:-}" || ! -d "$DATA" ]]; then
        echo "error: set DATA to the datasets root (got '${DATA:-}')" >&2
        exit 2
    fi
    for file in "$CONFIGS/datasets/$DATASET.yaml" "$CONFIGS/trainers/$TRAINER/$CFG.yaml"; do
        if [[ ! -f "$file" ]]; then
            echo "error: config file $file does not exist (check DATASET / CFG, or CONFIGS)" >&2
            exit 2
        fi
    done
}

# run_train OUTPUT_DIR [more train.py arguments...]: the released scripts' train.py call, for the TRAINER, DATASET,
# SEED, DEVICE and CFG that script_args set
run_train() {
    local dir=$1
    shift
    "$PYTHON" "$TRAIN_PY" \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer "$TRAINER" \
        --dataset-config-file "$CONFIGS/datasets/${DATASET}.yaml" \
        --config-file "$CONFIGS/trainers/${TRAINER}/${CFG}.yaml" \
        --output-dir "$dir" \
        --device "$DEVICE" \
        "$@"
}
