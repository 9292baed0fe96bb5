"""Write a trained model in the released whole-model checkpoint format of MaPLe, BMIP, UPT, IVLP, VPT or CoPrompt.

    python -m scripts.export_checkpoint --trainer BMIP --model-dir RUN [--load-epoch N] --out-dir OUT

``RUN`` is a training run's ``--output-dir``. The checkpoint read is ``RUN/<folder>/model.pth.tar-N`` with
``--load-epoch N``, else the one the run deployed (``model-best.pth.tar`` if it saved one, else the newest epoch).
It is written to ``OUT/<folder>/<same file name>``, so the released ``train.py`` reads it with
``--model-dir OUT --eval-only`` (plus ``--load-epoch N``, or the BMIP release's ``--best``).

The file is the released trainers' dict ``{"state_dict", "epoch", "optimizer": None, "scheduler": None,
"val_result"}``. ``state_dict`` holds every trainable tensor under the released model's name (fp32; the released
model casts on load) and nothing else: the released code loads it with ``load_state_dict(..., strict=False)`` into a
model that already holds CLIP's weights and rebuilds the class-dependent buffers from the class names, so frozen
weights are not needed. Key layouts: trainers/release_formats.py; docs/BMIP.md, "Checkpoints".
"""
import os.path as osp
import sys

from dassl.cli import OneLineArgumentParser
from dassl.engine import TRAINER_REGISTRY
from dassl.engine.run_dir import BEST_CHECKPOINT, NoDeployedModel, checkpoint_file, deployed_epoch
from dassl.utils import load_checkpoint, save_checkpoint
from sweeps.jobs import SetupError
from trainers.lookup import trainer_class
from trainers.release_formats import release_layouts  # (importing trainers registers every trainer)



def build_parser():
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainer", required=True, help=f"one of {sorted(release_layouts())}")
    parser.add_argument("--model-dir", required=True, help="the training run's --output-dir")
    parser.add_argument("--load-epoch", type=int, help="export model.pth.tar-N (default: the deployed checkpoint)")
    parser.add_argument("--out-dir", required=True, help="folder to write <checkpoint folder>/<file> into")
    return parser


def source_file(folder, model_dir, load_epoch):
    """The checkpoint file of ``model_dir/folder`` to export (see the module docstring)."""
    if load_epoch is None:
        load_epoch = deployed_epoch(model_dir)
    name = checkpoint_file(load_epoch)
    path = osp.join(model_dir, folder, name)
    if not osp.isfile(path):
        raise SetupError(f'no checkpoint at "{path}": check --model-dir, --trainer and --load-epoch')
    return path


def export(trainer, model_dir, out_dir, load_epoch=None):
    """Write the released-format checkpoint; returns its path."""
    if getattr(trainer_class(trainer), "RELEASED_AS_LEARNER", False):
        raise SetupError(f"{trainer} checkpoints are already in the released format (the prompt learner alone, "
                         f"same names): give the released code --model-dir {model_dir} directly")
    layouts = release_layouts()
    if trainer not in layouts:
        raise SetupError(f"no released checkpoint format for --trainer {trainer}; use one of {sorted(layouts)}")
    layout = layouts[trainer]
    folder = TRAINER_REGISTRY.get(trainer).CHECKPOINT_NAME  # the release registers its whole model under this name too
    path = source_file(folder, model_dir, load_epoch)
    checkpoint = load_checkpoint(path)
    family = (checkpoint.get("backbone") or {}).get("family", "openai")
    if family != "openai":
        raise SetupError(f'"{path}" was trained on a {family} backbone; the released code runs OpenAI CLIP only, so '
                         f"only checkpoints of MODEL.BACKBONE.FAMILY openai are exported")
    try:
        state_dict = layout.to_release(checkpoint["state_dict"])
    except (KeyError, ValueError) as err:
        raise SetupError(f'"{path}" cannot be written as a released {trainer} checkpoint: {err}') from err
    released = {"state_dict": state_dict, "epoch": checkpoint["epoch"], "optimizer": None, "scheduler": None,
                "val_result": checkpoint.get("val_result")}
    return save_checkpoint(released, osp.join(out_dir, folder), model_name=osp.basename(path))


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        path = export(args.trainer, args.model_dir, args.out_dir, args.load_epoch)
    except (SetupError, NoDeployedModel) as err:
        sys.exit(f"error: {err}")
    epoch_flag = "" if path.endswith(BEST_CHECKPOINT) else f" --load-epoch {path.rsplit('-', 1)[1]}"
    print(f"Released {args.trainer} format: {path}\n"
          f"Load it with the released train.py: --trainer {args.trainer} --eval-only --model-dir {args.out_dir}"
          f"{epoch_flag}")
    return path


if __name__ == "__main__":
    main()
