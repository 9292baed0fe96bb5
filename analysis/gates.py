"""BMIP's modality gates, layer by layer, over a split: how much each modality weighs its own deep prompt.

Before deep layer l (l = 1..J-1) BMIP fills each modality's prompt slots with ``w * own + (1 - w) * G(other)``,
``w = sigmoid(gate_l(a_l))`` (trainers/bmip.py). w near 1: the modality keeps its own prompt; near 0: it takes the
other modality's projected prompt. One w per prompt slot (b = N_CTX). What varies with the input:

* vision gate — ``per_sample`` mode: one w per image and slot; ``reference`` mode (the released code): one per
  batch and slot (the attention is averaged over the batch, so it depends on the batch size and composition);
* text gate — ``per_sample``: one w per class and slot (from each class prompt's EOT row), at layers 1..J-1;
  ``reference``: the same for every class, sigmoid(bias) exactly (the SOS row it reads is 0 under the causal
  mask), at layers 1..J-2 only (layer J-1 keeps the previous layer's text slots).

The values are read from the model's own forward pass: forward hooks on the gate Linears (``vision_gates[l-1]``,
``text_gates[l-1]``) see gate_l(a_l) as the model computes it; w is its sigmoid, as ``_blend`` applies it.

Report (``<out-dir>/gates_<dataset>_<split>.{csv,md,png}``): the long-form CSV of every value, a markdown table per
(layer, modality) — mean, std and quantiles over images/batches/classes and slots — and a box plot (layer on x, w on
y, one box per modality).

    python -m analysis.gates --config-file configs/trainers/BMIP/micro.yaml \\
        --dataset-config-file configs/datasets/micro_sketch.yaml --root ./data --model-dir output/.../seed1
        [--split test|val] [--out-dir DIR]      (default: <model-dir>/analysis)
"""
import csv
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from analysis.cli import build_parser, default_out_dir, fail, load_trained, report_stem

# torch and the trainers are imported where they are used: `python -m analysis.gates --help` answers at once.

MODALITIES = ("vision", "text")
# The trainers whose prompt learner is a BMIPPromptLearner, with gates to report (their subclasses too).
GATED_TRAINERS = ("BMIP", "PromptSRC_BMIP", "CoPrompt_BMIP")
UNITS_PLURAL = {"image": "images", "batch": "batches", "class": "classes", "all classes": "all classes"}


@dataclass
class GateValues:
    """Recorded gates: per modality, layer -> w [units, b]; what a unit is (image, batch, class) and its label."""

    mode: str
    values: dict = field(default_factory=lambda: {m: {} for m in MODALITIES})  # modality -> {layer: w [units, b]}
    attention: dict = field(default_factory=lambda: {m: {} for m in MODALITIES})  # the gates' input a, same shapes
    params: dict = field(default_factory=lambda: {m: {} for m in MODALITIES})  # modality -> {layer: (alpha, beta)}
    units: dict = field(default_factory=dict)  # modality -> "image" | "batch" | "class" | "all classes"
    unit_labels: dict = field(default_factory=dict)  # modality -> {layer: [units] label (-1: none)}


class GateRecorder:
    """Records w = sigmoid(gate(a)) of every BMIP gate call during a pass (a context manager; see run_pass)."""

    def __init__(self, learner):
        from trainers.bmip import BMIPPromptLearner

        if not isinstance(learner, BMIPPromptLearner):
            raise ValueError(f"gate reports need a BMIP model, got a {type(learner).__name__}")
        self.learner = learner
        self._vision = defaultdict(list)  # layer -> [(a, w) [B, b] per batch] (per image) or [(a, w) [1, b]] (batch)
        self._vision_labels = defaultdict(list)  # layer -> [labels [B] | [-1]]
        self._pending = {}  # layer -> (a, w) captured in the running batch
        self._text = {}  # layer -> (a, w) [n_cls | 1, b] of the latest text pass
        self._handles = []

    def __enter__(self):
        gates = [("vision", k + 1, g) for k, g in enumerate(self.learner.vision_gates)]
        gates += [("text", k + 1, g) for k, g in enumerate(self.learner.text_gates)]
        self._handles = [gate.register_forward_hook(self._hook(modality, layer)) for modality, layer, gate in gates]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, modality, layer):
        def hook(module, inputs, output):
            a = inputs[0].detach().float().squeeze(-1).cpu()  # [b] | [B, b] | [n_cls, b]
            w = output.detach().float().sigmoid().squeeze(-1).cpu()  # same shape
            a, w = (a.unsqueeze(0), w.unsqueeze(0)) if w.dim() == 1 else (a, w)  # [units, b]
            if modality == "text":
                self._text[layer] = (a, w)
            else:
                self._pending[layer] = (a, w)
        return hook

    def batch_done(self, logits, labels):
        for layer, (a, w) in self._pending.items():
            self._vision[layer].append((a, w))
            per_image = w.shape[0] == labels.shape[0] and self.learner.mode == "per_sample"
            self._vision_labels[layer].append(labels.cpu() if per_image else labels.new_full((w.shape[0],), -1).cpu())
        self._pending = {}

    def result(self):
        import torch

        per_sample = self.learner.mode == "per_sample"
        gates = GateValues(self.learner.mode)
        captured = {"vision": {layer: tuple(torch.cat(t) for t in zip(*pairs))
                               for layer, pairs in sorted(self._vision.items())},
                    "text": dict(sorted(self._text.items()))}
        modules = {"vision": self.learner.vision_gates, "text": self.learner.text_gates}
        for modality in MODALITIES:
            gates.attention[modality] = {layer: a for layer, (a, _) in captured[modality].items()}
            gates.values[modality] = {layer: w for layer, (_, w) in captured[modality].items()}
            gates.params[modality] = {layer: (modules[modality][layer - 1].weight.item(),
                                              modules[modality][layer - 1].bias.item())
                                      for layer in captured[modality]}
        gates.unit_labels["vision"] = {layer: torch.cat(labels)
                                       for layer, labels in sorted(self._vision_labels.items())}
        gates.unit_labels["text"] = {layer: torch.arange(w.shape[0]) if per_sample else torch.full((1,), -1)
                                     for layer, w in gates.values["text"].items()}
        gates.units = {"vision": "image" if per_sample else "batch", "text": "class" if per_sample else "all classes"}
        return gates


# -- summaries ---------------------------------------------------------------------------------------------------------
def summary_rows(gates):
    """One row per (layer, modality): statistics of w over units and slots."""
    rows = []
    for layer in sorted({layer for m in MODALITIES for layer in gates.values[m]}):
        for modality in MODALITIES:
            w = gates.values[modality].get(layer)
            if w is None:
                continue
            flat = w.flatten().double()
            q = flat.quantile(flat.new_tensor([0.0, 0.25, 0.5, 0.75, 1.0])).tolist()
            alpha, beta = gates.params[modality][layer]
            a = gates.attention[modality][layer].double()
            rows.append({"layer": layer, "modality": modality, "over": gates.units[modality], "units": w.shape[0],
                         "slots": w.shape[1], "alpha": alpha, "beta": beta, "a_min": a.min().item(),
                         "a_max": a.max().item(), "mean": flat.mean().item(),
                         "std": flat.std(unbiased=False).item(), "min": q[0], "p25": q[1], "median": q[2],
                         "p75": q[3], "max": q[4]})
    return rows


def markdown_table(rows, title):
    header = ("| layer | modality | over | units x slots | mean w | std | min | p25 | median | p75 | max "
              "| alpha | beta | a (min..max) |")
    lines = [f"### {title}", "", header, "|" + "---|" * 14]
    for r in rows:
        stats = " | ".join(f"{r[k]:.4f}" for k in ("mean", "std", "min", "p25", "median", "p75", "max"))
        lines.append(f"| {r['layer']} | {r['modality']} | {r['over']} | {r['units']} x {r['slots']} | {stats} "
                     f"| {r['alpha']:.3f} | {r['beta']:.3f} | {r['a_min']:.4f}..{r['a_max']:.4f} |")
    lines += ["", "w = sigmoid(alpha * a + beta): the weight of the modality's own deep prompt (1 - w goes to the "
              "other modality's projected prompt); a = the attention the layer pays to the prompt slots (the gate's "
              "input)."]
    return "\n".join(lines) + "\n"


def write_csv(gates, path, lab2cname):
    """Every value: modality, layer, unit, index, class, slot, a (the gate's input), w."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["modality", "layer", "unit", "index", "class", "slot", "a", "w"])
        for modality in MODALITIES:
            for layer, w in gates.values[modality].items():
                a, labels = gates.attention[modality][layer], gates.unit_labels[modality][layer]
                for index, (a_row, w_row, label) in enumerate(zip(a.tolist(), w.tolist(), labels.tolist())):
                    name = lab2cname.get(label, "") if label >= 0 else ""
                    for slot, (a_value, w_value) in enumerate(zip(a_row, w_row)):
                        writer.writerow([modality, layer, gates.units[modality], index, name, slot,
                                         f"{a_value:.8f}", f"{w_value:.8f}"])


def read_csv(path):
    """The CSV of :func:`write_csv` back as {modality: {layer: [w values in file order]}}."""
    values = {m: defaultdict(list) for m in MODALITIES}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            values[row["modality"]][int(row["layer"])].append(float(row["w"]))
    return values


def plot_gates(gates, path, title):
    """Box plot: deep layer on x, w on y, one box per modality and layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"vision": "tab:blue", "text": "tab:orange"}
    offsets = {"vision": -0.18, "text": 0.18}
    layers = sorted({layer for m in MODALITIES for layer in gates.values[m]})
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(layers) + 2.5), 3.8))
    for modality in MODALITIES:
        present = [layer for layer in layers if layer in gates.values[modality]]
        if not present:
            continue
        data = [gates.values[modality][layer].flatten().numpy() for layer in present]
        positions = [layer + offsets[modality] for layer in present]
        box = ax.boxplot(data, positions=positions, widths=0.3, patch_artist=True, showfliers=True,
                         medianprops={"color": "black"}, flierprops={"markersize": 2, "alpha": 0.4})
        for patch in box["boxes"]:
            patch.set_facecolor(colours[modality])
            patch.set_alpha(0.5)
        means = [float(d.mean()) for d in data]
        ax.plot(positions, means, color=colours[modality], marker="o", markersize=4, linewidth=1,
                label=f"{modality} gate: mean, box over {UNITS_PLURAL[gates.units[modality]]} x slots")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(layers)
    ax.set_xticklabels([str(layer) for layer in layers])
    ax.set_xlim(min(layers) - 0.6, max(layers) + 0.6)
    ax.set_ylim(0, 1)
    ax.set_xlabel("deep layer l")
    ax.set_ylabel("w (weight of the modality's own prompt)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize="small", loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_gate_report(gates, out_dir, stem, title, lab2cname):
    """CSV, markdown table and plot of ``gates`` in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"gates_{stem}.csv", out_dir / f"gates_{stem}.md", out_dir / f"gates_{stem}.png"]
    write_csv(gates, paths[0], lab2cname)
    paths[1].write_text(markdown_table(summary_rows(gates), title), encoding="utf-8")
    plot_gates(gates, paths[2], title)
    return paths


def gate_report(trainer, out_dir, split="test"):
    """Evaluate a loaded BMIP trainer on ``split`` and write the gate report; returns (paths, accuracy %)."""
    from analysis.passes import describe_pass, run_pass, split_loader

    recorder = GateRecorder(trainer.model.prompt_learner)
    loader = split_loader(trainer, split)
    accuracy = run_pass(trainer, loader, [recorder])
    gates = recorder.result()
    title = f"{describe_pass(trainer.cfg, split, len(loader.dataset), accuracy)} ({gates.mode} gates)"
    return write_gate_report(gates, out_dir, report_stem(trainer.cfg, split), title, trainer.lab2cname), accuracy


def refuse_without_gates(trainer_name):
    """End the tool (one line, exit 2) for a trainer without gates: not one of GATED_TRAINERS or a subclass."""
    fail(f"gate reports are for BMIP models; --trainer {trainer_name} has no gates: pass a "
         f"{', '.join(GATED_TRAINERS[:-1])} or {GATED_TRAINERS[-1]} run's --trainer, --config-file and --model-dir")


def has_gates(trainer_name):
    """Whether the registered trainer ``trainer_name`` is one of GATED_TRAINERS or a subclass; None when it is not
    registered (then only the built model can tell)."""
    from trainers.lookup import trainer_class  # (imports the trainers, not torch's models: nothing is built)

    cls = trainer_class(trainer_name)
    return None if cls is None else issubclass(cls, tuple(trainer_class(name) for name in GATED_TRAINERS))


def main(argv=None):
    parser = build_parser("python -m analysis.gates", __doc__.split("\n")[0])
    parser.add_argument("--split", default="test", choices=("test", "val"), help="split to evaluate (default test)")
    parser.add_argument("--out-dir", default="", help="where to write (default: <model-dir>/analysis)")
    args = parser.parse_args(argv)
    if args.trainer and has_gates(args.trainer) is False:  # (no --trainer: no lookup, so no torch yet)
        refuse_without_gates(args.trainer)
    trainer = load_trained(args)
    from trainers.bmip import BMIPPromptLearner

    if not isinstance(getattr(trainer.model, "prompt_learner", None), BMIPPromptLearner):
        refuse_without_gates(trainer.cfg.TRAINER.NAME)
    paths, _ = gate_report(trainer, args.out_dir or default_out_dir(args), args.split)
    print(paths[1].read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])
