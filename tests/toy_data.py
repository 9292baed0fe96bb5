"""A tiny image-classification tree for end-to-end tests: class folders of 32x32 PNGs plus a CoOp split json."""
import json
import os

import numpy as np
from PIL import Image

CLASSNAMES = ["red_circle", "blue_square", "green_star", "yellow_ring", "black_cross", "white_heart"]


def make_toy_dataset(root, name="toy", per_class=(6, 2, 3), seed=0, classnames=CLASSNAMES):
    """Write ``root/name/<class>/<i>.png`` and ``split.json``; returns the folder. Each class has its own colour
    bias, so a model can learn something; ``per_class`` = images per class in (train, val, test)."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, name)
    split = {"train": [], "val": [], "test": []}
    for label, classname in enumerate(sorted(classnames)):
        os.makedirs(os.path.join(folder, classname), exist_ok=True)
        colour = rng.integers(0, 256, size=3)
        index = 0
        for part, count in zip(("train", "val", "test"), per_class):
            for _ in range(count):
                pixels = np.clip(colour + rng.normal(0, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                relpath = f"{classname}/{index}.png"
                Image.fromarray(pixels).save(os.path.join(folder, relpath))
                split[part].append([relpath, label, classname.replace("_", " ")])
                index += 1
    with open(os.path.join(folder, "split.json"), "w") as f:
        json.dump(split, f)
    return folder


def toy_opts(root, name="toy", epochs=2, batch=4, lr=0.002, optim="sgd"):
    """KEY VALUE options that run a trainer on the toy tree with the tiny random ViT."""
    return [
        "DATASET.NAME", "ImageFolder", "DATASET.IMAGE_FOLDER.DIR", name,
        "MODEL.BACKBONE.NAME", "tiny-ViT", "INPUT.SIZE", "(32, 32)",
        "INPUT.TRANSFORMS", "['random_flip', 'normalize']",
        "OPTIM.NAME", optim, "OPTIM.LR", str(lr), "OPTIM.MAX_EPOCH", str(epochs),
        "OPTIM.LR_SCHEDULER", "cosine",
        "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch), "DATALOADER.TEST.BATCH_SIZE", "8",
        "DATALOADER.NUM_WORKERS", "0", "DEVICE", "cpu",
    ]
