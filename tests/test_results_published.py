"""Published numbers as data (results/published.yaml, results.published) and ours next to them
(results.versus_published, ``scripts/results.py --published``) on hand-made output trees and published files."""
import csv
import itertools
import math
import statistics
from pathlib import Path

import pytest
import yaml

from results import layout, published
from results.collect import collect
from results.report import main as results_main
from results.versus_published import compare
from tests.test_results_tables import b2n, put

REPO = Path(__file__).resolve().parents[1]


def hm(b, n):
    return 2 * b * n / (b + n)


def printed_hm_possible(base, novel, printed):
    """Independent of the loader: whether some Base and Novel that print as ``base`` / ``novel`` (2 decimals) have
    an HM that prints as ``printed`` (a grid over each rounding interval, endpoints included)."""
    grid = [i / 1000 for i in range(-5, 6)]
    return any(round(hm(base + db, novel + dn), 2) == printed or
               math.isclose(abs(hm(base + db, novel + dn) - printed), 0.005, abs_tol=1e-9)
               for db, dn in itertools.product(grid, grid))


def test_the_shipped_file_has_every_value_sourced_and_flags_exactly_the_inconsistent_hms():
    data = published.load()
    raw = yaml.safe_load(published.PUBLISHED_FILE.read_text())
    assert len(data.entries) == len(raw["results"]) >= 10
    for entry in data.entries:
        for source, line in [(entry.source, entry.line), *entry.also]:
            source_info = data.sources[source]
            assert source_info["repository"] and len(source_info["commit"]) == 40 and line > 0
        agrees = printed_hm_possible(entry.metrics["base"], entry.metrics["novel"], entry.metrics["hm"])
        assert agrees == (entry.inconsistent is None), entry
        for other in entry.differs:
            assert data.sources[other.source]["repository"] and other.line > 0
            assert other.metrics != {k: entry.metrics[k] for k in other.metrics}
            agrees = printed_hm_possible(other.metrics["base"], other.metrics["novel"], other.metrics["hm"])
            assert agrees == (other.inconsistent is None), other
    flagged = [(e.method, e.metrics["hm"]) for e in data.entries if e.inconsistent]
    assert flagged == [("BMIP", 79.04)]  # HM(83.47, 76.69) = 79.94
    assert "79.94" in next(e.inconsistent for e in data.entries if e.method == "BMIP")
    differing = {e.method: [(d.source, d.line, d.metrics) for d in e.differs] for e in data.entries if e.differs}
    assert differing == {  # the KgCoOp README's CoOp; ProDA's Novel in the PromptSRC README, not its project page's
        "CoOp": [("kgcoop_readme", 14, {"base": 82.63, "novel": 67.99, "hm": 74.60})],
        "ProDA": [("promptsrc_readme", 123, {"base": 81.56, "novel": 75.83, "hm": 76.65})]}
    proda = next(e for e in data.entries if e.method == "ProDA")
    assert proda.metrics == {"base": 81.56, "novel": 72.30, "hm": 76.65} and "78.59" in proda.differs[0].inconsistent


def shipped_results():
    return yaml.safe_load(published.PUBLISHED_FILE.read_text())


@pytest.mark.parametrize("method, change, message", [
    ("CoOp", {"base": 82.96}, "CoOp, base2new, average: the printed numbers disagree (HM(82.96, 63.22) = 71.76, "
                              "printed 71.66)"),
    ("ProDA", {"novel": 72.03}, "ProDA, base2new, average: the printed numbers disagree (HM(81.56, 72.03) = 76.50, "
                                "printed 76.65)"),
    ("BMIP", {"hm": 79.94}, "BMIP, base2new, average: has an 'inconsistent' note but its printed numbers agree"),
    ("CoOp", {"differs": [{"source": "kgcoop_readme", "line": 14, "base": 82.63, "novel": 67.99, "hm": 74.06}]},
     "differs (kgcoop_readme line 14): the printed numbers disagree (HM(82.63, 67.99) = 74.60, printed 74.06)"),
    ("CoOp", {"differs": [{"source": "kgcoop_readme", "line": 14, "base": 82.63, "novel": 67.99, "hm": 74.60,
                           "inconsistent": "x"}]},
     "differs (kgcoop_readme line 14): has an 'inconsistent' note but its printed numbers agree"),
    ("CoOp", {"differs": [{"source": "kgcoop_readme", "line": 14, "base": 82.69, "novel": 63.22, "hm": 71.66}]},
     "differs: kgcoop_readme line 14 prints the entry's own values: list it under also:"),
    ("CoOp", {"differs": [{"source": "kgcoop", "line": 14, "base": 82.63}]},
     "CoOp, base2new, average) differs: source 'kgcoop' line 14: every value needs a listed source and its line"),
    ("CoOp", {"differs": [{"source": "kgcoop_readme", "line": 14, "accuracy": 82.63}]},
     "a base2new entry holds some of ['base', 'novel', 'hm']"),
])
def test_a_tampered_value_in_the_shipped_file_is_caught(tmp_path, method, change, message):
    raw = shipped_results()
    entry = next(e for e in raw["results"] if e["method"] == method)
    entry.update(change)
    path = tmp_path / "tampered.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(published.PublishedFileError) as raised:
        published.load(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_differing_source_with_its_own_inconsistency_loads_when_noted(tmp_path):
    raw = shipped_results()
    coop = next(e for e in raw["results"] if e["method"] == "CoOp")
    coop["differs"][0].update(hm=74.06, inconsistent="HM(82.63, 67.99) = 74.60, printed 74.06")
    path = tmp_path / "noted.yaml"
    path.write_text(yaml.safe_dump(raw))
    other = next(e for e in published.load(path).entries if e.method == "CoOp").differs[0]
    assert (other.metrics["hm"], other.inconsistent) == (74.06, "HM(82.63, 67.99) = 74.60, printed 74.06")


def config_file(trainer, cfg):
    from trainers.lookup import trainer_class

    folder = REPO / "configs" / "trainers" / trainer
    if not folder.is_dir():
        folder = REPO / "configs" / "trainers" / trainer_class(trainer).CONFIG_FOLDER
    return folder / f"{cfg}.yaml"


def test_every_published_method_maps_to_registered_runs_that_train_as_long_as_published():
    from trainers.lookup import trainer_class

    data = published.load()
    for name, method in data.methods.items():
        for trainer, cfg in method["runs"]:
            assert trainer_class(trainer) is not None, (name, trainer)
            path = config_file(trainer, cfg)
            assert path.is_file(), path
            epochs = {e.epochs for e in data.entries if e.method == name and e.epochs is not None}
            epochs |= {d.epochs for e in data.entries if e.method == name for d in e.differs if d.epochs}
            for printed in epochs:
                assert yaml.safe_load(path.read_text())["OPTIM"]["MAX_EPOCH"] == printed, (name, cfg)
    assert data.method_of("MaPLe", "vit_b16_c2_ep5_batch4_2ctx") == "MaPLe"
    assert data.method_of("BMIP", "BMIP_ctx2_dp9_lr2_per_sample") is None  # the corrected gates are not published


SOURCE = {"paper": {"title": "A paper", "repository": "x/y", "commit": "0" * 40, "file": "README.md"}}
METHODS = {"CoOp paper": {"runs": [{"trainer": "CoOp", "cfg": "c1"}, {"trainer": "CoOp", "cfg": "c2"}],
                          "mapping": "hand-made"}}


def write_published(path, results, methods=METHODS, sources=SOURCE):
    path.write_text(yaml.safe_dump({"decimals": 2, "sources": sources, "methods": methods, "results": results}))
    return path


def b2n_entry(dataset, base, novel, line=1, **extra):
    return {"method": "CoOp paper", "protocol": "base2new", "dataset": dataset, "base": base, "novel": novel,
            "hm": round(hm(base, novel), 2), "source": "paper", "line": line, **extra}


def kgcoop_style(flag):
    """Eleven per-dataset rows and an average whose HM is the mean of the per-dataset HMs (a known mistake)."""
    rows = [b2n_entry(d, 70.0 + 2 * i, 60.0 + (i % 3) * 9, line=i + 1)
            for i, d in enumerate(layout.BASE2NEW_DATASETS)]
    base = round(statistics.mean(r["base"] for r in rows), 2)
    novel = round(statistics.mean(r["novel"] for r in rows), 2)
    average = b2n_entry("average", base, novel, line=20)
    average["hm"] = round(statistics.mean(r["hm"] for r in rows), 2)
    assert abs(average["hm"] - hm(base, novel)) > 0.02  # the two conventions differ here
    if flag:
        average["inconsistent"] = "average HM taken over the datasets"
    return rows + [average]


@pytest.mark.parametrize("results, message", [
    ([b2n_entry("dtd", 80.0, 60.0, hm=70.0)], "the printed numbers disagree (HM(80.0, 60.0) = 68.57, printed 70.0)"),
    ([b2n_entry("dtd", 80.0, 60.0, inconsistent="x")], "has an 'inconsistent' note but its printed numbers agree"),
    ([b2n_entry("dtd", 80.0, 60.0, source="elsewhere")], "every value needs a listed source and its line"),
    ([b2n_entry("dtd", 80.0, 60.0, line=0)], "every value needs a listed source and its line"),
    ([b2n_entry("dtd", 80.0, 60.0, method="Other")], "method is not listed under methods:"),
    ([b2n_entry("dtd", 80.0, 60.0), b2n_entry("dtd", 80.0, 60.0, line=2)], "listed twice"),
    ([b2n_entry("dtd", 80.0, 60.0, accuracy=3.0)], "a base2new entry holds some of ['base', 'novel', 'hm']"),
    (kgcoop_style(flag=False), "is the mean of the per-dataset HMs"),
])
def test_the_loader_refuses_unsourced_values_and_unflagged_inconsistencies(tmp_path, results, message):
    path = write_published(tmp_path / "p.yaml", results)
    with pytest.raises(published.PublishedFileError) as raised:
        published.load(path)
    assert message in str(raised.value) and str(raised.value).startswith(str(path))
    assert "\n" not in str(raised.value)


def test_a_flagged_average_hm_loads_and_an_average_off_its_datasets_is_caught(tmp_path):
    data = published.load(write_published(tmp_path / "ok.yaml", kgcoop_style(flag=True)))
    average = data.entries[-1]
    problems = published.problems_of(data, average)
    assert any("mean of the per-dataset HMs" in p for p in problems)
    rows = kgcoop_style(flag=True)
    rows[-1].update(base=rows[-1]["base"] + 0.03, hm=round(hm(rows[-1]["base"] + 0.03, rows[-1]["novel"]), 2))
    del rows[-1]["inconsistent"]
    with pytest.raises(published.PublishedFileError, match="average base printed .* mean of the 11 datasets"):
        published.load(write_published(tmp_path / "off.yaml", rows))


# -- ours next to published -------------------------------------------------------------------------------------

BASE = {d: {s: 70.0 + i + s for s in (1, 2, 3)} for i, d in enumerate(layout.BASE2NEW_DATASETS)}
NOVEL = {d: {s: 60.0 + i - s for s in (1, 2, 3)} for i, d in enumerate(layout.BASE2NEW_DATASETS)}
BASE["dtd"], NOVEL["dtd"] = {1: 80.0, 2: 82.0, 3: 84.0}, {1: 50.0, 2: 52.0, 3: 57.0}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "output"
    for dataset in layout.BASE2NEW_DATASETS:
        for seed in (1, 2, 3):
            b2n(root, "test_base", dataset, "CoOp", "c1", seed, BASE[dataset][seed])
            b2n(root, "test_new", dataset, "CoOp", "c1", seed, NOVEL[dataset][seed])
            if dataset != "ucf101":  # c2 lacks a dataset: it has no average
                b2n(root, "test_base", dataset, "CoOp", "c2", seed, BASE[dataset][seed])
                b2n(root, "test_new", dataset, "CoOp", "c2", seed, NOVEL[dataset][seed])
    b2n(root, "test_base", "dtd", "CoOp", "c3", 1, 10.0)  # mapped to nothing published
    b2n(root, "test_new", "dtd", "CoOp", "c3", 1, 10.0)
    for seed, acc in ((1, 63.0), (2, 65.0)):
        put(layout.source_dir(root, "imagenet", "CoOp", "c1", 16, seed), accuracy=70.0)
        put(layout.evaluation_dir(root, "CoOp", "c1", 16, "imagenet", "imagenetv2", seed), training=False,
            accuracy=acc)
    for seed, acc in ((1, 40.0), (2, 42.0)):
        put(layout.few_shot_dir(root, "dtd", "CoOp", "c1", 1, seed), accuracy=acc)
    return root


def seed_average(table, seed):
    return statistics.mean(table[d][seed] for d in layout.BASE2NEW_DATASETS)


AVG_BASE = round(max(seed_average(BASE, s) for s in (1, 2, 3)) + 0.5, 2)   # above every seed
AVG_NOVEL = round(seed_average(NOVEL, 2), 2)                                            # a seed's value


@pytest.fixture
def published_file(tmp_path):
    results = [b2n_entry("dtd", 83.0, 60.0, line=3), b2n_entry("average", AVG_BASE, AVG_NOVEL, line=4),
               {"method": "CoOp paper", "protocol": "domain_generalization", "dataset": "imagenetv2",
                "accuracy": 64.0, "source": "paper", "line": 5},
               {"method": "CoOp paper", "protocol": "few_shot", "dataset": "dtd", "shots": 1, "accuracy": 45.0,
                "source": "paper", "line": 6}]
    return write_published(tmp_path / "published.yaml", results)


def test_compare_matches_a_hand_computation_per_cell(tree, published_file):
    rows, unmapped = compare(collect(tree).results, published.load(published_file))
    got = {(r.cfg, r.entry.protocol, r.entry.dataset, r.metric): r for r in rows}
    assert unmapped == [("CoOp", "c3")]
    base = got["c1", "base2new", "dtd", "base"]
    assert (base.ours, base.seeds, base.low, base.high, base.outside) == (82.0, 3, 80.0, 84.0, False)
    assert math.isclose(base.delta, -1.0)
    novel = got["c1", "base2new", "dtd", "novel"]
    assert (novel.ours, novel.high, novel.outside) == (53.0, 57.0, True) and math.isclose(novel.delta, -7.0)
    dtd_hm = got["c1", "base2new", "dtd", "hm"]
    assert math.isclose(dtd_hm.ours, hm(82, 53)) and math.isclose(dtd_hm.high, hm(84, 57))
    assert dtd_hm.outside and dtd_hm.published == round(hm(83, 60), 2)
    avg = {m: got["c1", "base2new", "average", m] for m in ("base", "novel", "hm")}
    seeds_base = [seed_average(BASE, s) for s in (1, 2, 3)]
    seeds_novel = [seed_average(NOVEL, s) for s in (1, 2, 3)]
    assert math.isclose(avg["base"].ours, statistics.mean(seeds_base)) and avg["base"].outside
    assert math.isclose(avg["novel"].low, min(seeds_novel)) and not avg["novel"].outside
    seeds_hm = [hm(b, n) for b, n in zip(seeds_base, seeds_novel)]
    assert math.isclose(avg["hm"].low, min(seeds_hm)) and math.isclose(avg["hm"].high, max(seeds_hm))
    assert math.isclose(avg["hm"].ours, hm(statistics.mean(seeds_base), statistics.mean(seeds_novel)))
    assert ("c2", "base2new", "average", "base") not in got  # c2 has no ucf101: no average to compare
    assert got["c2", "base2new", "dtd", "base"].ours == 82.0
    dg = got["c1", "domain_generalization", "imagenetv2", "accuracy"]
    assert (dg.ours, dg.low, dg.high, dg.outside) == (64.0, 63.0, 65.0, False)
    few = got["c1", "few_shot", "dtd", "accuracy"]
    assert (few.ours, few.seeds, few.outside) == (41.0, 2, True) and few.entry.shots == 1


def test_one_seed_is_outside_beyond_the_printed_rounding_only(tmp_path):
    root = tmp_path / "output"
    b2n(root, "test_base", "dtd", "CoOp", "c1", 1, 80.004)
    b2n(root, "test_new", "dtd", "CoOp", "c1", 1, 60.0)
    rows, _ = compare(collect(root).results, published.load(
        write_published(tmp_path / "p.yaml", [b2n_entry("dtd", 80.0, 59.99)])))
    flags = {r.metric: r.outside for r in rows}
    assert flags == {"base": False, "novel": True, "hm": True}  # logs print 2 decimals: 80.00 vs 80.00, 60.00 vs 59.99


def test_results_cli_prints_the_comparison_table_and_csv(tree, published_file, tmp_path, capsys):
    out = tmp_path / "report"
    assert results_main([str(tree), "--published", "--published-file", str(published_file), "--no-plots",
                         "--out-dir", str(out)]) == 0
    markdown = capsys.readouterr().out
    assert "## Ours next to published" in markdown
    row = "| {} | {} | CoOp/c1 | CoOp paper | {} | {} |"
    assert row.format("base2new", "dtd", "base", "82.00 | 3 | 80.00–84.00 | 83.00 | -1.00 | within") in markdown
    assert row.format("base2new", "dtd", "novel", "53.00 | 3 | 50.00–57.00 | 60.00 | -7.00 | **outside**") in markdown
    few_shot = row.format("few_shot", "dtd (1 shots)", "accuracy",
                          "41.00 | 2 | 40.00–42.00 | 45.00 | -4.00 | **outside**")
    assert few_shot in markdown
    assert "- CoOp paper: A paper (x/y@0000000 README.md:3)" in markdown
    assert "Not compared (no published method maps to them): CoOp/c3." in markdown
    with open(out / "versus_published.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    novel = next(r for r in rows if r["cfg"] == "c1" and r["dataset"] == "dtd" and r["metric"] == "novel")
    assert (novel["outside"], float(novel["delta"]), novel["seed_max"]) == ("1", -7.0, "57.0000")


def test_a_bad_published_file_is_one_line_and_exit_status_2_before_reading_the_tree(tmp_path, capsys):
    bad = write_published(tmp_path / "bad.yaml", [b2n_entry("dtd", 80.0, 60.0, hm=70.0)])
    assert results_main([str(tmp_path / "no_tree"), "--published", "--published-file", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: CoOp paper, base2new, dtd: the printed numbers disagree") and "\n" not in err
    assert results_main([str(tmp_path), "--published", "--published-file", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_no_corresponding_run_is_one_plain_sentence(published_file, tmp_path, capsys):
    root = tmp_path / "output"
    b2n(root, "test_base", "dtd", "CoOp", "c3", 1, 10.0)  # c3: mapped to no published method
    b2n(root, "test_new", "dtd", "CoOp", "c3", 1, 10.0)
    out = tmp_path / "report"
    assert results_main([str(root), "--published", "--published-file", str(published_file), "--no-plots",
                         "--out-dir", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    sentence = lines[lines.index("## Ours next to published") + 2]
    assert sentence == (f"No run here corresponds to a published value of {published_file}: a run needs a (trainer, "
                        "config) pair that its `methods:` maps to a published method, and a protocol, dataset and "
                        "shot count with a published value.")
    assert captured.err.splitlines()[-1] == f"tables written to {out}"  # --no-plots: no plot was written
    assert not list(out.glob("*.png"))
