"""Fidelity of the open_clip family on ViT-B/16 shapes (random weights, fp32, CPU), the check docs/BACKBONES.md reports.

    python -m benchmarks.backbone_check                     # every benchmark trainer, both paths (a few minutes)
    python -m benchmarks.backbone_check --trainers CoOp MaPLe

1. open_clip's own ``ViT-B-16`` (project tag ``random``): the project's encoders without prompts against open_clip's
   ``encode_text`` / ``encode_image`` (max absolute difference of the features, fast and straightforward paths).
2. OpenAI's ``ViT-B/16`` shapes with random weights, saved as an OpenAI-format file and read through both families
   (``openai``; ``open_clip`` by its OpenAI converter): each trainer's training-mode logits and learner gradients on
   one batch (its own ``compute_loss``), max absolute difference between the families, fast and straightforward paths.
"""
import contextlib
import io
import sys
import tempfile

import torch

from clip_patch import BackboneSpec, load_backbone
from dassl.cli import OneLineArgumentParser

from .parity import logits_and_gradients, precision_for
from .subjects import (benchmark_subjects, build_cfg, build_trainer_without_data, real_classnames,
                       write_openai_format)

BACKBONE = "ViT-B/16"


def encoder_errors(batch=2):
    """{path: (text error, image error)} of open_clip's random ViT-B-16 against its own encode_text / encode_image."""
    backbone = load_backbone(BackboneSpec("open_clip", "ViT-B-16", "random"))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=generator)
    tokens = backbone.tokenize([f"a photo of a {name}." for name in real_classnames(4)])
    errors = {}
    with torch.no_grad():
        text_ref, image_ref = backbone.model.encode_text(tokens), backbone.model.encode_image(images)
        for straightforward in (False, True):
            text = backbone.text_encoder(backbone.text_encoder.embed(tokens), tokens, straightforward=straightforward)
            image = backbone.image_encoder(images, straightforward=straightforward)
            errors["straightforward" if straightforward else "fast"] = (
                float((text - text_ref).abs().max()), float((image - image_ref).abs().max()))
    return errors


def family_errors(trainer_id, weights, straightforward, classes=4, batch=2):
    """(max |Δlogits|, max |Δgrad| relative to the largest gradient) between the openai and open_clip families."""
    results = []
    for family_weights in ("", weights):
        cfg = build_cfg(trainer_id, BACKBONE, "cpu", "fp32", straightforward, family_weights)
        with contextlib.redirect_stdout(io.StringIO()):
            torch.manual_seed(0)
            trainer = build_trainer_without_data(cfg, real_classnames(classes))
        generator = torch.Generator().manual_seed(1)
        images = torch.randn(batch, 3, 224, 224, generator=generator)
        labels = torch.randint(0, classes, (batch,), generator=generator)
        logits, grads, _ = logits_and_gradients(trainer, images, labels, straightforward, precision_for("fp32", "cpu"))
        results.append((logits, grads))
    (logits_a, grads_a), (logits_b, grads_b) = results
    grad_error = max((float((grads_a[k] - grads_b[k]).abs().max() / grads_a[k].abs().max().clamp(min=1e-12))
                      for k in grads_a), default=0.0)
    return float((logits_a - logits_b).abs().max()), grad_error


def main(argv=None):
    subjects = list(benchmark_subjects())
    parser = OneLineArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trainers", nargs="+", default=subjects, choices=subjects, help="trainers (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("1. open_clip ViT-B-16 (random), no prompts: max |ours - open_clip| of the features")
    print("| path | text | image |\n|---|---|---|")
    for path, (text, image) in encoder_errors().items():
        print(f"| {path} | {text:.2e} | {image:.2e} |")
    print("\n2. ViT-B/16 (random, OpenAI format) through openai vs open_clip: one batch of each trainer")
    print("| trainer | path | max abs logits difference | max gradient difference / max gradient |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="backbone_check_") as folder:
        weights = write_openai_format(BACKBONE, folder)
        for trainer_id in args.trainers:
            for straightforward in (False, True):
                logits, grads = family_errors(trainer_id, weights, straightforward)
                print(f"| {trainer_id} | {'straightforward' if straightforward else 'fast'} | {logits:.2e} | "
                      f"{grads:.2e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
