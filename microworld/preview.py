"""Save a contact sheet of the micro benchmark: one row per task, a few test images per row.

    python -m microworld.preview docs/img/micro_world_samples.png
"""

import argparse

import numpy as np
from PIL import Image

from .benchmark import IMAGES_PER_CLASS, MICRO_TASKS, render_split


def contact_sheet(per_row=12, zoom=3):
    """uint8 [rows * 32 * zoom, per_row * 32 * zoom, 3]: test images of different classes per task."""
    rows = []
    for task in MICRO_TASKS:
        images, _ = render_split(task, "test")
        picks = images[::IMAGES_PER_CLASS["test"]][:per_row]  # first image of each class
        rows.append(np.concatenate(list(picks), axis=1))  # [32, per_row * 32, 3]
    sheet = np.concatenate(rows, axis=0)
    return np.asarray(Image.fromarray(sheet).resize((sheet.shape[1] * zoom, sheet.shape[0] * zoom), Image.NEAREST))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="PNG path")
    parser.add_argument("--per-row", type=int, default=12, help="images per task")
    args = parser.parse_args(argv)
    Image.fromarray(contact_sheet(args.per_row)).save(args.output)
    print(f"Saved {args.output}: rows = {', '.join(task.name for task in MICRO_TASKS)}")


if __name__ == "__main__":
    main()
