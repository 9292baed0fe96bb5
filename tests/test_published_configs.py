"""A config shipped under a published name gives the published config; every other shipped config is a documented
project config with a name of its own. Published values: tests/fixtures/published_configs.yaml."""
from pathlib import Path

import pytest
import yaml

import datasets  # noqa: F401  (registers dataset keys)
import trainers  # noqa: F401  (registers trainer keys)
from dassl.config import extend_cfg, get_cfg_default

REPO = Path(__file__).resolve().parents[1]
TRAINER_CONFIGS = REPO / "configs" / "trainers"
PUBLISHED = yaml.safe_load((REPO / "tests" / "fixtures" / "published_configs.yaml").read_text())
PINNED = PUBLISHED["files"]
SHIPPED = sorted(str(p.relative_to(TRAINER_CONFIGS)) for p in TRAINER_CONFIGS.glob("*/*.yaml"))
PROJECT_CONFIGS = [name for name in SHIPPED if name not in PINNED]
EXPERIMENTS_DOC = (REPO / "docs" / "EXPERIMENTS.md").read_text()


def nested(flat_values):
    """{"OPTIM.LR": 0.1} -> {"OPTIM": {"LR": 0.1}}."""
    tree = {}
    for key, value in flat_values.items():
        node = tree
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def merged(path):
    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_file(str(path))
    return cfg


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_file_gives_exactly_the_published_config(name, tmp_path):
    entry = PINNED[name]
    assert entry["source"] in PUBLISHED["repositories"]
    published = tmp_path / "published.yaml"
    published.write_text(yaml.safe_dump(nested(entry["values"])))
    shipped, expected = merged(TRAINER_CONFIGS / name), merged(published)  # the same yacs conversions on both
    for key in entry["values"]:
        node_shipped, node_expected = shipped, expected
        for part in key.split("."):
            node_shipped, node_expected = node_shipped[part], node_expected[part]
        assert node_shipped == node_expected, f"{name}: {key} is {node_shipped!r}, published {node_expected!r}"
    assert shipped == expected  # and the shipped file sets nothing the published one does not


def test_every_pinned_file_is_shipped():
    assert sorted(set(PINNED) - set(SHIPPED)) == []


@pytest.mark.parametrize("name", PROJECT_CONFIGS)
def test_project_config_has_its_own_name_and_a_line_in_the_docs(name):
    assert name not in PUBLISHED["published_not_shipped"], f"{name} is a published name: pin its values instead"
    assert f"`{name}`" in EXPERIMENTS_DOC, f"document {name} (how it differs) in docs/EXPERIMENTS.md, 'Configs'"


def test_a_changed_value_is_caught(tmp_path):
    """The comparison is sensitive: the published IVLP 2+2ctx recipe with depth 9 is not the published config."""
    name = "IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml"
    variant = dict(PINNED[name]["values"], **{"TRAINER.IVLP.PROMPT_DEPTH_TEXT": 9})
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(nested(variant)))
    assert merged(path) != merged(TRAINER_CONFIGS / name)
