"""train.py with one pause, for the SLURM end-to-end test (``--train-py tests/slurm/pausing_train.py``).

The first attempt of a training run waits after saving its first epoch's checkpoint, as a long run would, so
that the test can preempt it at a known point; ``paused_once.txt`` in the output folder marks that attempt.
Every other run, including the requeued attempt, is plain ``train.py``.
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dassl.engine.trainer import SimpleTrainer  # noqa: E402
from runs.run import cli  # noqa: E402

MARKER = "paused_once.txt"
PAUSE_S = 600
_after_epoch = SimpleTrainer.after_epoch


def after_epoch_then_pause_once(self):
    _after_epoch(self)  # validation, the epoch's checkpoint
    marker = Path(self.output_dir) / MARKER
    if self.epoch == 0 and not marker.exists():
        marker.write_text(f"{os.getpid()}\n")
        time.sleep(PAUSE_S)


SimpleTrainer.after_epoch = after_epoch_then_pause_once

if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))  # what `python train.py` runs
