"""Tools that look inside trained models (docs/ANALYSIS.md).

* :mod:`analysis.interpret_prompt` — the vocabulary tokens nearest to each learned text context vector.
* :mod:`analysis.gates` — BMIP's per-layer modality gates over a split (table, CSV, plot).
* :mod:`analysis.modality` — image/text feature similarity and the modality gap of a prompted CLIP.
* :mod:`analysis.draw` — ``draw_report(trainer, out_dir)``: every applicable report of a loaded model.
"""
