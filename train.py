"""Train or evaluate a CLIP prompt learner — the CoOp-ecosystem command line (Dassl's tools/train.py) plus --device.

Config merge order: Dassl defaults -> keys declared by trainers/ and datasets/ -> --dataset-config-file ->
--config-file -> CLI flags -> trailing KEY VALUE pairs. Example:

    python train.py --root $DATA --seed 1 --trainer BMIP \\
        --dataset-config-file configs/datasets/caltech101.yaml \\
        --config-file configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml \\
        --output-dir output/base2new/train_base/caltech101/shots_16/BMIP/BMIP_ctx2_dp9_lr2/seed1 \\
        DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base

An output folder belongs to one run (docs/ENGINE.md, "Runs"): a second run in it fails at once, a re-run of a
finished run prints its stored result and does nothing else, an unfinished run resumes exactly, and a re-run whose
config differs in a key that changes results is refused unless --accept-config-change is given.
"""
import sys

import analysis.draw  # noqa: F401  (registers the report of --draw: runs.reports)
from runs.run import cli

# Heavy modules (torch, CLIP, the trainers) are imported when a run starts, so --help and argument errors answer at
# once. The library (config, checks, the output folder, running, errors) is the package runs/: every other entry
# point imports it from there, never this file.

if __name__ == "__main__":
    sys.exit(cli())
