"""Image and text features of a prompted CLIP on a split: matched / unmatched similarity and the modality gap.

* Similarities: for every image, the cosine similarity to its own class's text feature (matched) and to every
  other class's (unmatched), read from the model's logits (``logit_scale * cos``).
* Features: the image encoder's outputs and the class text features, L2-normalised, captured by forward hooks on the
  model's two encoders (CoCoOp's text features depend on the image: each class's is averaged over the images).
* Modality gap (Liang et al., NeurIPS 2022): the distance between the centroid of the normalised image features
  (over images) and that of the class text features (over classes), with the cosine of the two centroids.

Report (``modality_<dataset>_<split>.{md,png}``): the numbers, a histogram of matched vs unmatched similarity, and
the two feature clouds in the plane of the gap (x: image centroid -> text centroid, at its true length; y: their
first principal component orthogonal to it).
"""
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

HIST_BINS = 100  # unmatched similarities are histogrammed on [-1, 1] (their count is N x (n_cls - 1))
MAX_PLOTTED_IMAGES = 2000


@dataclass
class ModalityStats:
    images: int
    classes: int
    accuracy: float  # %
    matched: torch.Tensor  # [N] cos(image, its class text)
    unmatched_hist: torch.Tensor  # [HIST_BINS] counts on [-1, 1]
    unmatched_mean: float
    unmatched_std: float
    image_features: torch.Tensor  # [N, E] normalised
    text_features: torch.Tensor  # [n_cls, E] normalised (CoCoOp: mean over images)
    gap: float  # || mean image feature - mean text feature ||
    centroid_cosine: float


class ModalityRecorder:
    """Captures normalised image / text features and logit similarities during a pass (see analysis.passes)."""

    def __init__(self, model):
        if not (hasattr(model, "text_encoder") and hasattr(model, "image_encoder")):
            raise ValueError(f"{type(model).__name__} has no text encoder: the modality report needs a prompted CLIP")
        self.model = model
        self.scale = float(model.logit_scale.exp())
        self._images, self._matched, self._correct = [], [], 0
        self._text_sum, self._text_calls = None, 0
        self._hist = torch.zeros(HIST_BINS, dtype=torch.float64)
        self._unmatched_sum = self._unmatched_sq = 0.0
        self._unmatched_count = 0
        self._handles = []

    def __enter__(self):
        self._handles = [self.model.image_encoder.register_forward_hook(self._on_image),
                         self.model.text_encoder.register_forward_hook(self._on_text)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _on_image(self, module, inputs, output):
        self._images.append(F.normalize(output.detach().float(), dim=-1).cpu())  # [B, E]

    def _on_text(self, module, inputs, output):
        text = F.normalize(output.detach().float(), dim=-1).cpu()  # [n_cls, E]
        self._text_sum = text if self._text_sum is None else self._text_sum + text
        self._text_calls += 1

    def batch_done(self, logits, labels):
        cos = (logits.detach().float() / self.scale).cpu()  # [B, n_cls]
        labels = labels.cpu()
        rows = torch.arange(cos.shape[0])
        self._matched.append(cos[rows, labels])
        self._correct += int((cos.argmax(dim=1) == labels).sum())
        others = torch.ones_like(cos, dtype=torch.bool)
        others[rows, labels] = False
        unmatched = cos[others].double()
        self._hist += torch.histc(unmatched.clamp(-1, 1), bins=HIST_BINS, min=-1.0, max=1.0)
        self._unmatched_sum += unmatched.sum().item()
        self._unmatched_sq += (unmatched ** 2).sum().item()
        self._unmatched_count += unmatched.numel()

    def result(self):
        images = torch.cat(self._images)  # [N, E]
        texts = self._text_sum / self._text_calls  # [n_cls, E]
        matched = torch.cat(self._matched)
        mean = self._unmatched_sum / max(self._unmatched_count, 1)
        var = max(self._unmatched_sq / max(self._unmatched_count, 1) - mean ** 2, 0.0)
        image_centroid, text_centroid = images.mean(dim=0), texts.mean(dim=0)  # [E]
        return ModalityStats(
            images=images.shape[0], classes=texts.shape[0], accuracy=100.0 * self._correct / images.shape[0],
            matched=matched, unmatched_hist=self._hist, unmatched_mean=mean, unmatched_std=var ** 0.5,
            image_features=images, text_features=texts, gap=(image_centroid - text_centroid).norm().item(),
            centroid_cosine=F.cosine_similarity(image_centroid, text_centroid, dim=0).item())


def markdown(stats, title):
    rows = [("images", f"{stats.images}"), ("classes", f"{stats.classes}"), ("accuracy", f"{stats.accuracy:.2f}%"),
            ("matched cos (image, own class text)", f"{stats.matched.mean():.4f} ± {stats.matched.std(0):.4f}"),
            ("unmatched cos (image, other class texts)", f"{stats.unmatched_mean:.4f} ± {stats.unmatched_std:.4f}"),
            ("modality gap ‖mean image − mean text‖", f"{stats.gap:.4f}"),
            ("cos(mean image, mean text)", f"{stats.centroid_cosine:.4f}")]
    lines = [f"### {title}", "", "| quantity | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def gap_plane(points, image_centroid, text_centroid):
    """Coordinates [n, 2] of points [n, E] in the plane of the modality gap: x along the direction from the image
    centroid to the text centroid (so the gap shows at its true length), y along the first principal component of
    the points orthogonal to it. The origin is the image centroid."""
    gap = text_centroid - image_centroid  # [E]
    x_axis = gap / gap.norm()
    centred = points - image_centroid  # [n, E]
    x = centred @ x_axis  # [n]
    rest = centred - x[:, None] * x_axis  # [n, E], orthogonal to the gap
    _, _, v = torch.linalg.svd(rest - rest.mean(dim=0), full_matrices=False)
    return torch.stack([x, rest @ v[0]], dim=1)


def plot_modality(stats, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist_ax, gap_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    edges = torch.linspace(-1, 1, HIST_BINS + 1)
    width = float(edges[1] - edges[0])
    density = stats.unmatched_hist / (stats.unmatched_hist.sum() * width)
    hist_ax.bar(edges[:-1].numpy(), density.numpy(), width=width, align="edge", alpha=0.5, color="tab:orange",
                label="unmatched (other classes)")
    hist_ax.hist(stats.matched.numpy(), bins=edges.numpy(), density=True, alpha=0.6, color="tab:blue",
                 label="matched (own class)")
    low = min(float(stats.matched.min()), stats.unmatched_mean - 4 * stats.unmatched_std)
    high = max(float(stats.matched.max()), stats.unmatched_mean + 4 * stats.unmatched_std)
    hist_ax.set_xlim(max(-1.0, low - 0.05), min(1.0, high + 0.05))
    hist_ax.set_xlabel("cosine similarity of image and class text features")
    hist_ax.set_ylabel("density")
    hist_ax.legend(fontsize="small")

    images = stats.image_features
    if images.shape[0] > MAX_PLOTTED_IMAGES:
        order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
        images = images[order[:MAX_PLOTTED_IMAGES]]
    image_centroid, text_centroid = stats.image_features.mean(0), stats.text_features.mean(0)  # [E], [E]
    points = torch.cat([images, stats.text_features, image_centroid[None], text_centroid[None]])
    plane = gap_plane(points, image_centroid, text_centroid)  # [n, 2]
    n_img, n_txt = images.shape[0], stats.text_features.shape[0]
    gap_ax.scatter(plane[:n_img, 0], plane[:n_img, 1], s=4, alpha=0.3, color="tab:blue", label="images")
    gap_ax.scatter(plane[n_img:n_img + n_txt, 0], plane[n_img:n_img + n_txt, 1], s=25, marker="x",
                   color="tab:orange", label="class texts")
    (ix, iy), (tx, ty) = plane[-2].tolist(), plane[-1].tolist()
    gap_ax.annotate("", xy=(tx, ty), xytext=(ix, iy), arrowprops={"arrowstyle": "->", "color": "black"})
    gap_ax.scatter([ix, tx], [iy, ty], s=60, color=["tab:blue", "tab:orange"], edgecolors="black", zorder=3)
    gap_ax.set_title(f"modality gap {stats.gap:.3f} (centroids, arrow image → text)", fontsize=9)
    gap_ax.set_xlabel("along the gap (image centroid → text centroid)")
    gap_ax.set_ylabel("1st principal component orthogonal to the gap", fontsize=8)
    gap_ax.set_aspect("equal", adjustable="datalim")
    gap_ax.legend(fontsize="small")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_modality_report(stats, out_dir, stem, title):
    """Markdown and plot of ``stats`` in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"modality_{stem}.md", out_dir / f"modality_{stem}.png"]
    paths[0].write_text(markdown(stats, title), encoding="utf-8")
    plot_modality(stats, paths[1], title)
    return paths
