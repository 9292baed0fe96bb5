"""Result tables, CSV and plots on a hand-written output tree (results.collect / aggregate / tables / plots)."""
import csv
import math

import pytest
from PIL import Image

from results import aggregate, layout
from results.collect import collect
from results.report import build_report, main as results_main


def put(run_dir, training=True, **metrics):
    """Write an ecosystem log holding ``metrics`` (percent) as the final result of ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = ["epoch [1/1] batch [1/1] loss 1.0", "Finish training"] if training else []
    lines += ["Evaluate on the *test* set", "=> result", "* total: 100"]
    lines += [f"* {name}: {value:.2f}%" for name, value in metrics.items()]
    (run_dir / "log.txt").write_text("\n".join(lines) + "\n")


def b2n(root, split, dataset, trainer, cfg, seed, acc):
    put(layout.base2new_dir(root, split, dataset, 16, trainer, cfg, seed), training=split == "train_base",
        accuracy=acc)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "output"
    for seed, (base, new) in enumerate(zip([80, 82, 84], [50, 52, 57]), 1):
        b2n(root, "train_base", "dtd", "CoOp", "c1", seed, 99.0)  # superseded by test_base
        b2n(root, "test_base", "dtd", "CoOp", "c1", seed, base)
        b2n(root, "test_new", "dtd", "CoOp", "c1", seed, new)
    b2n(root, "test_base", "eurosat", "CoOp", "c1", 1, 90)
    b2n(root, "test_base", "eurosat", "CoOp", "c1", 2, 91)
    b2n(root, "train_base", "eurosat", "CoOp", "c1", 3, 95)  # seed 3: base from the training log
    b2n(root, "test_new", "eurosat", "CoOp", "c1", 1, 60)
    b2n(root, "test_new", "eurosat", "CoOp", "c1", 2, 62)
    layout.base2new_dir(root, "test_new", "eurosat", 16, "CoOp", "c1", 3).mkdir(parents=True)  # crashed run
    b2n(root, "test_base", "caltech101", "CoOp", "c1", 1, 97)  # no novel: no HM, not averaged
    for seed, new in enumerate([70, 71, 72], 1):
        b2n(root, "test_base", "dtd", "BMIP", "b1", seed, 85)
        b2n(root, "test_new", "dtd", "BMIP", "b1", seed, new)
    # cross-dataset and DG from ImageNet
    for seed, (src, cal, dtd, v2) in enumerate([(70, 93, 45, 63), (72, 95, 47, 65)], 1):
        put(layout.source_dir(root, "imagenet", "CoOp", "c1", 16, seed), accuracy=src)
        for target, acc in (("caltech101", cal), ("dtd", dtd), ("imagenetv2", v2)):
            put(layout.evaluation_dir(root, "CoOp", "c1", 16, "imagenet", target, seed), training=False, accuracy=acc)
    put(layout.evaluation_dir(root, "CoOp", "c1", 16, "imagenet", "imagenet_a", 1), training=False, accuracy=50)
    put(layout.source_dir(root, "imagenet", "BMIP", "b1", 16, 1), accuracy=71)
    put(layout.evaluation_dir(root, "BMIP", "b1", 16, "imagenet", "caltech101", 1), training=False, accuracy=94)
    # few-shot
    for seed, acc in ((1, 40), (2, 42)):
        put(layout.few_shot_dir(root, "dtd", "CoOp", "c1", 1, seed), accuracy=acc)
    put(layout.few_shot_dir(root, "dtd", "CoOp", "c1", 16, 1), accuracy=60)
    put(layout.few_shot_dir(root, "eurosat", "CoOp", "c1", 1, 1), accuracy=50)
    # open world
    for ratio, accs in ((100, [80, 82]), (50, [60]), (0, [40])):
        for seed, acc in enumerate(accs, 1):
            b2n(root, layout.ratio_split(ratio), "dtd", "BMIP", "b1", seed, acc)
    put(layout.base2new_dir(root, "test_all", "dtd", 16, "BMIP", "b1", 1), training=False,
        accuracy=70, base_accuracy=78, novel_accuracy=60, harmonic_mean=67.83)
    return root


def close(a, b):
    return a is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-9)


def test_base2new_mean_std_hm_and_average_match_a_hand_computation(tree):
    table = aggregate.base2new(collect(tree).results)
    coop, bmip = ("CoOp", "c1"), ("BMIP", "b1")
    assert table.methods == [coop, bmip] and table.datasets == ["caltech101", "dtd", "eurosat"]
    base, novel, hm = table.cells[coop, "dtd"]
    assert close(base.mean, 82) and close(base.std, math.sqrt(8 / 3)) and base.n == 3
    assert close(novel.mean, 53) and close(novel.std, math.sqrt(26 / 3)) and novel.n == 3
    assert close(hm, 2 * 82 * 53 / (82 + 53))
    base, novel, hm = table.cells[coop, "eurosat"]
    assert close(base.mean, 92) and close(base.std, math.sqrt(14 / 3)) and base.n == 3  # 90, 91 + train log 95
    assert close(novel.mean, 61) and close(novel.std, 1.0) and novel.n == 2
    base, novel, hm = table.cells[coop, "caltech101"]
    assert close(base.mean, 97) and novel is None and hm is None
    assert table.cells[bmip, "eurosat"] == (None, None, None)
    avg_base, avg_novel, avg_hm, count = table.average[coop]
    assert count == 2 and close(avg_base, 87) and close(avg_novel, 57)
    assert close(avg_hm, 2 * 87 * 57 / (87 + 57))  # HM of the averages, not the mean of the HMs
    assert table.average[bmip][3] == 1 and close(table.average[bmip][2], 2 * 85 * 71 / 156)


def test_transfer_few_shot_and_open_world_aggregates(tree):
    results = collect(tree).results
    xd, dg = aggregate.transfer(results)
    coop, bmip = ("CoOp", "c1"), ("BMIP", "b1")
    assert (xd.kind, xd.targets) == ("cross_dataset", ["caltech101", "dtd"])
    assert close(xd.source_cells[coop].mean, 71) and close(xd.source_cells[coop].std, 1.0)
    assert close(xd.average[coop][0], (94 + 46) / 2) and xd.average[coop][1] == 2
    assert xd.cells[bmip, "dtd"] is None and xd.average[bmip] == (94.0, 1)
    assert (dg.kind, dg.targets) == ("domain_generalization", ["imagenetv2", "imagenet_a"])
    assert close(dg.average[coop][0], (64 + 50) / 2) and dg.cells[coop, "imagenet_a"].n == 1
    shots = aggregate.few_shot(results)
    assert shots.xs == [1, 16] and close(shots.cells[coop, "dtd", 1].mean, 41)
    assert shots.cells[coop, "eurosat", 16] is None
    assert shots.average[coop, 1] == (45.5, 2) and shots.average[coop, 16] == (60.0, 1)
    ratios = aggregate.open_world(results)
    assert ratios.xs == [100, 50, 0] and close(ratios.cells[bmip, "dtd", 100].mean, 81)
    everything = aggregate.open_world_all(results)[bmip, "dtd"]
    assert everything["base_accuracy"].mean == 78 and everything["harmonic_mean"].mean == 67.83


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_writes_markdown_csv_with_gaps_and_readable_pngs(tree, tmp_path):
    out = tmp_path / "report"
    markdown = build_report(collect(tree).results, out)
    assert (out / "results.md").read_text() == markdown
    assert "| dtd | CoOp | 82.00 ± 1.63 | 53.00 ± 2.94 | 64.39 | 3 |" in markdown
    assert "| eurosat | CoOp | 92.00 ± 2.16 | 61.00 ± 1.00 | 73.36 | 3/2 |" in markdown
    assert "| eurosat | BMIP | – | – | – | – |" in markdown  # a gap, not a zero
    assert "| CoOp | 87.00 | 57.00 | 68.88 | 2 |" in markdown
    assert "population std" in markdown and "HM of the average Base and average Novel" in markdown
    assert "| CoOp | 71.00 ± 1.00 | 94.00 ± 1.00 | 46.00 ± 1.00 | 70.00 | 2 |" in markdown
    rows = read_csv(out / "base2new.csv")
    by_key = {(r["trainer"], r["dataset"]): r for r in rows}
    assert by_key["CoOp", "eurosat"]["novel_n"] == "2" and float(by_key["CoOp", "eurosat"]["hm"]) == pytest.approx(
        2 * 92 * 61 / 153, abs=1e-4)
    assert by_key["BMIP", "eurosat"]["base_mean"] == "" and by_key["BMIP", "eurosat"]["hm"] == ""
    assert by_key["CoOp", "caltech101"]["hm"] == ""
    assert float(by_key["CoOp", "Average"]["hm"]) == pytest.approx(68.875, abs=1e-4)
    few = {(r["dataset"], r["shots"]): r for r in read_csv(out / "few_shot.csv") if r["trainer"] == "CoOp"}
    assert few["eurosat", "16"]["mean"] == "" and float(few["dtd", "1"]["std"]) == pytest.approx(1.0)
    dg = read_csv(out / "domain_generalization.csv")
    assert {r["dataset"] for r in dg} == {"imagenet", "imagenetv2", "imagenet_a", "Average"}
    assert (out / "cross_dataset.csv").is_file() and (out / "open_world.csv").is_file()
    assert (out / "open_world_all.csv").is_file()
    for name in ("base2new_hm.png", "few_shot.png", "open_world.png"):
        path = out / name
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 300 and image.height >= 200


def test_results_cli_reports_incomplete_runs_and_errors(tree, tmp_path, capsys):
    assert results_main([str(tree), "--out-dir", str(tmp_path / "r"), "--no-plots"]) == 0
    captured = capsys.readouterr()
    assert "## Base-to-novel generalization" in captured.out
    assert "test_new/eurosat/shots_16/CoOp/c1/seed3" in captured.err
    assert not (tmp_path / "r" / "few_shot.png").exists()
    assert results_main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert results_main([str(tmp_path / "empty")]) == 1


def test_runs_with_other_shot_counts_are_a_separate_method(tree):
    put(layout.base2new_dir(tree, "test_new", "dtd", 4, "CoOp", "c1", 1), training=False, accuracy=20.0)
    put(layout.base2new_dir(tree, "test_base", "dtd", 4, "CoOp", "c1", 1), training=False, accuracy=30.0)
    table = aggregate.base2new(collect(tree).results)
    assert ("CoOp", "c1 (4 shots)") in table.methods
    base, novel, _ = table.cells[("CoOp", "c1 (4 shots)"), "dtd"]
    assert (base.mean, novel.mean, base.n) == (30.0, 20.0, 1)
    base16, novel16, _ = table.cells[("CoOp", "c1"), "dtd"]
    assert (base16.mean, base16.n, novel16.n) == (82.0, 3, 3)  # the 16-shot runs are not pooled with them


def test_tables_order_the_trainers_of_the_project_as_the_readme_then_others_alphabetically():
    from dassl.engine import TRAINER_REGISTRY
    from trainers.display import display_order

    ours = [name for name in display_order() if TRAINER_REGISTRY.get(name).__module__.startswith("trainers.")]
    assert ours == ["ZeroshotCLIP", "CoOp", "CoCoOp", "MaPLe", "BITP", "BMIP", "PromptSRC", "PromptSRC_BMIP", "UPT",
                    "ProDA", "MultiModalAdapter", "LinearProbeCLIP", "VPT", "IVLP", "KgCoOp", "TCP", "CoPrompt",
                    "CoPrompt_BMIP", "MMRL", "MMRLpp"]
    keys = [(t, c) for t in reversed(ours) for c in ("b", "a")] + [("Zeta", "c"), ("Alpha", "c")]
    assert aggregate.method_order(keys) == [(t, c) for t in ours for c in ("a", "b")] + [("Alpha", "c"), ("Zeta", "c")]
