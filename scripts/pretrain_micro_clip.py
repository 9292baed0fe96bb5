"""Contrastive pre-training of the micro CLIP (OpenAI CLIP architecture, ViT image encoder) on the
micro world, saved as an OpenAI-format fp16 state dict that `clip.model.build_model` reads.

    python scripts/pretrain_micro_clip.py            # the shipped checkpoint (see docs/MICRO_WORLD.md)
    python scripts/pretrain_micro_clip.py --steps 20 --output /tmp/micro.pt   # smoke run

Writes <output>.pt (state dict), <output>.json (command, seed, hyper-parameters, wall time, training
curve, zero-shot accuracy on held-out pre-training images and on every micro benchmark task) and a
loss/accuracy plot. `--evaluate-only` recomputes the zero-shot figures of an existing checkpoint.
"""

import argparse
import hashlib
import json
import math
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import clip  # noqa: E402
from clip.model import CLIP  # noqa: E402

from dassl.cli import OneLineArgumentParser
from microworld import evaluation  # noqa: E402
from microworld.captions import captions_agree  # noqa: E402
from microworld.contrastive import encode_text_truncated, images_to_tensor, multi_positive_clip_loss  # noqa: E402
from microworld.pretraining import PRETRAIN_MAX_SEVERITY, PRETRAIN_STYLE_MIX, pretraining_batch  # noqa: E402

def parse_args(argv=None):
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="assets/micro_clip/MicroViT.pt", help="state dict path (.pt)")
    parser.add_argument("--plot", default="docs/img/micro_clip_curve.png", help="training-curve PNG ('' = none)")
    parser.add_argument("--seed", type=int, default=1, help="seeds weight init and the data stream")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=128, help="image-caption pairs per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--warmup", type=int, default=50, help="linear warm-up steps, then cosine decay to 0")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay on matrices only")
    parser.add_argument("--image-size", type=int, default=32, help="input resolution (px)")
    parser.add_argument("--patch-size", type=int, default=8, help="ViT patch size (px)")
    parser.add_argument("--width", type=int, default=128, help="width of both transformers (heads = width // 64)")
    parser.add_argument("--layers", type=int, default=6, help="layers of each transformer")
    parser.add_argument("--embed-dim", type=int, default=128, help="joint embedding dimension")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--log-every", type=int, default=10, help="steps per training-curve point")
    parser.add_argument("--eval-every", type=int, default=100, help="steps per held-out zero-shot check")
    parser.add_argument("--eval-images", type=int, default=1000, help="held-out images per zero-shot check")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="no training: reload --output and rewrite the zero-shot figures in its .json")
    args = parser.parse_args(argv)
    if args.width % 64:
        raise SystemExit(f"--width must be a multiple of 64 (clip.build_model infers heads = width // 64); got {args.width}.")
    if args.image_size % args.patch_size:
        raise SystemExit(f"--image-size {args.image_size} must be a multiple of --patch-size {args.patch_size}.")
    return args


def build_micro_clip(args):
    """A randomly initialised `clip.model.CLIP` with the requested ViT/text sizes."""
    return CLIP(embed_dim=args.embed_dim, image_resolution=args.image_size, vision_layers=args.layers,
                vision_width=args.width, vision_patch_size=args.patch_size, context_length=77, vocab_size=49408,
                transformer_width=args.width, transformer_heads=args.width // 64, transformer_layers=args.layers)


def build_optimizer(model, args):
    """AdamW; weight decay only on matrices of the transformers/projections (not gains, biases,
    embeddings or the logit scale)."""
    no_decay = {"token_embedding.weight", "positional_embedding", "visual.positional_embedding",
                "visual.class_embedding", "logit_scale"}
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n not in no_decay]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n not in no_decay)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)


def learning_rate(step, args):
    """Linear warm-up to --lr, then cosine decay to 0 at --steps."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return 0.5 * args.lr * (1 + math.cos(math.pi * progress))


def held_out_zero_shot(model, args):
    """Held-out pre-training zero-shot accuracy (%) of `model` (left in train mode afterwards)."""
    model.eval()
    results = evaluation.held_out_zero_shot(model, args.seed, args.eval_images, args.image_size)
    model.train()
    return results


def fp16_state_dict(model):
    """OpenAI-format state dict with every floating tensor in fp16, like OpenAI's checkpoints."""
    return {k: v.detach().clone().half() if v.is_floating_point() else v.detach().clone()
            for k, v in model.state_dict().items()}


def save_plot(curve, evals, path):
    """Loss per logged step and held-out zero-shot accuracy per evaluation, on twin axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, loss_axis = plt.subplots(figsize=(6, 3.5))
    loss_axis.plot([p["step"] for p in curve], [p["loss"] for p in curve], color="tab:blue", label="contrastive loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss", color="tab:blue")
    accuracy_axis = loss_axis.twinx()
    accuracy_axis.plot([e["step"] for e in evals], [e["held_out_all_styles"] for e in evals], "o-", color="tab:red",
                       label="zero-shot acc. (100 classes)")
    accuracy_axis.set_ylabel("held-out zero-shot accuracy (%)", color="tab:red")
    accuracy_axis.set_ylim(0, 100)
    fig.suptitle("Micro CLIP pre-training")
    fig.tight_layout()
    os.makedirs(osp.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train(args):
    """Pre-train from scratch; returns (model, training curve, held-out evaluations, wall seconds)."""
    torch.manual_seed(args.seed)
    model = build_micro_clip(args)
    optimizer = build_optimizer(model, args)
    start = time.time()
    curve, evals, window = [], [], []
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        batch = pretraining_batch(args.seed, step, args.batch_size, args.image_size)
        agree = torch.from_numpy(captions_agree(batch.attributes, batch.mentions, batch.styles, batch.names_style))
        loss = multi_positive_clip_loss(model.encode_image(images_to_tensor(batch.images)),
                                        encode_text_truncated(model, clip.tokenize(batch.captions)),
                                        model.logit_scale, agree)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            curve.append({"step": step + 1, "loss": round(float(np.mean(window)), 4),
                          "lr": learning_rate(step, args), "elapsed_s": round(time.time() - start, 1)})
            window = []
            print(f"step {step + 1}/{args.steps} loss {curve[-1]['loss']:.4f} lr {curve[-1]['lr']:.2e} "
                  f"logit_scale {model.logit_scale.exp().item():.1f} elapsed {curve[-1]['elapsed_s']:.0f}s", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            evals.append({"step": step + 1, **held_out_zero_shot(model, args)})
            print(f"zero-shot {evals[-1]}", flush=True)
    return model, curve, evals, time.time() - start


def save_checkpoint(model, curve, evals, wall, args):
    """Write the fp16 state dict, its report (.json) and the training-curve plot."""
    os.makedirs(osp.dirname(args.output) or ".", exist_ok=True)
    torch.save(fp16_state_dict(model), args.output)
    with open(args.output, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    report = {
        "command": "python " + " ".join([osp.relpath(sys.argv[0])] + sys.argv[1:]),
        "seed": args.seed,
        "hyper_parameters": {k: v for k, v in vars(args).items() if k not in ("output", "plot", "evaluate_only")},
        "pretraining_styles": PRETRAIN_STYLE_MIX,
        "pretraining_max_severity": PRETRAIN_MAX_SEVERITY,
        "torch_version": torch.__version__,
        "wall_time_s": round(wall, 1),
        "sha256": digest,
        "size_bytes": osp.getsize(args.output),
        "training_curve": curve,
        "zero_shot_during_training": evals,
    }
    write_report(report, args)
    if args.plot:
        save_plot(curve, evals, args.plot)
    print(f"Saved {args.output} ({report['size_bytes'] / 2**20:.1f} MiB) in {wall / 60:.1f} min")


def report_path(args):
    return osp.splitext(args.output)[0] + ".json"


def write_report(report, args):
    with open(report_path(args), "w") as f:
        json.dump(report, f, indent=2)


def evaluate_checkpoint(args):
    """Reload the saved fp16 checkpoint through `clip.model.build_model` (what every trainer gets)
    and record its zero-shot accuracy on held-out pre-training images and on every micro task."""
    shipped = clip.model.build_model(torch.load(args.output, map_location="cpu", weights_only=True)).float().eval()
    with open(report_path(args)) as f:
        report = json.load(f)
    report["zero_shot"] = {"template": "a photo of a {}.", "classes": "100 '<colour> <shape>' names",
                           "images": args.eval_images,
                           **evaluation.held_out_zero_shot(shipped, args.seed, args.eval_images, args.image_size)}
    report["zero_shot_downstream"] = evaluation.benchmark_zero_shot(shipped)
    write_report(report, args)
    print(json.dumps({"zero_shot": report["zero_shot"], "zero_shot_downstream": report["zero_shot_downstream"]}, indent=1))


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.evaluate_only:
        save_checkpoint(*train(args), args)
    evaluate_checkpoint(args)


if __name__ == "__main__":
    main()
