"""Every applicable report of a loaded model, from one evaluation pass: ``draw_report(trainer, out_dir)``.

This is what ``train.py --draw`` (with ``--eval-only --model-dir``) runs after the model is loaded:

* every CLIP prompt trainer (ZeroshotCLIP, CoOp, CoCoOp, IVLP, VPT, MaPLe, BMIP, PromptSRC, PromptSRC_BMIP): the
  image/text feature report of :mod:`analysis.modality` (matched vs unmatched similarity, modality gap);
* BMIP and PromptSRC_BMIP (BMIP's prompt learner): also the gate report of :mod:`analysis.gates`.

Models without a text encoder (LinearProbeCLIP) have nothing to draw. The same as a command:

    python -m analysis.draw <train.py flags> --model-dir DIR [--load-epoch N] [--split test|val] [--out-dir DIR]
"""
import sys

from analysis.cli import build_parser, default_out_dir, load_trained, report_stem
from analysis.gates import GateRecorder, write_gate_report
from runs.reports import register_eval_report

# torch and the trainers are imported where they are used: `python -m analysis.draw --help` answers at once.


def draw_report(trainer, out_dir, split="test"):
    """Evaluate ``trainer.model`` (weights already loaded) on ``split`` once and write every applicable report to
    ``out_dir``; returns the written paths ([] when the model has no text encoder)."""
    from analysis.modality import ModalityRecorder, write_modality_report
    from analysis.passes import describe_pass, run_pass, split_loader
    from trainers.bmip import BMIPPromptLearner

    model = trainer.model
    if not hasattr(model, "text_encoder"):
        print(f"--draw: {type(model).__name__} has no text encoder; nothing to draw")
        return []
    loader = split_loader(trainer, split)
    modality = ModalityRecorder(model)
    learner = getattr(model, "prompt_learner", None)
    gates = GateRecorder(learner) if isinstance(learner, BMIPPromptLearner) else None
    accuracy = run_pass(trainer, loader, [modality] + ([gates] if gates else []))
    what = describe_pass(trainer.cfg, split, len(loader.dataset), accuracy)
    stem = report_stem(trainer.cfg, split)
    paths = write_modality_report(modality.result(), out_dir, stem, what)
    if gates is not None:
        paths += write_gate_report(gates.result(), out_dir, stem, f"{what} ({learner.mode} gates)",
                                   trainer.lab2cname)
    for path in paths:
        print(f"--draw: wrote {path}")
    return paths


register_eval_report("draw", draw_report)  # what `train.py --eval-only --draw` writes


def main(argv=None):
    parser = build_parser("python -m analysis.draw", __doc__.split("\n")[0])
    parser.add_argument("--split", default="test", choices=("test", "val"), help="split to evaluate (default test)")
    parser.add_argument("--out-dir", default="", help="where to write (default: <model-dir>/analysis)")
    args = parser.parse_args(argv)
    trainer = load_trained(args, require_model=False)
    return draw_report(trainer, args.out_dir or default_out_dir(args), args.split)


if __name__ == "__main__":
    main(sys.argv[1:])
