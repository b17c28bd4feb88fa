from pathlib import Path

import pytest
import yaml

from effdl.compress import FinetuneConfig, Recipe, shipped_recipes
from effdl.core import Config, ConfigError, UnknownNameError
from effdl.core.config import config_types
from effdl.distill import DistillConfig
from effdl.factorize import LowRankConfig
from effdl.prune import L1FilterPruneConfig, MagnitudePruneConfig, StructuredPruneConfig
from effdl.quant import Int8Config, QuantConfig

FIXTURES = Path(__file__).with_name("fixtures")


def _recipe():
    return Recipe(
        [
            L1FilterPruneConfig(ratio=0.25),
            MagnitudePruneConfig(ratio=0.5),
            FinetuneConfig(train={"epochs": 2, "lr": 0.003}, distill=DistillConfig(alpha=0.3)),
            LowRankConfig(selector="keep", keep=0.5, ignore=("classifier",)),
            QuantConfig(bits_w=8, bits_a=8),
            FinetuneConfig(train={"epochs": 1}),
            Int8Config(runtime="onnxruntime"),
        ],
        name="everything",
    )


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_recipe_round_trips_through_files(tmp_path, suffix):
    recipe = _recipe()
    again = Recipe.load(recipe.save(tmp_path / f"r{suffix}"))
    assert again == recipe
    assert [type(s) for s in again.steps] == [type(s) for s in recipe.steps]  # the subclass survives the tag
    assert again.fingerprint() == recipe.fingerprint()


def test_a_saved_recipe_is_a_list_of_tagged_configs(tmp_path):
    data = yaml.safe_load(_recipe().save(tmp_path / "r.yaml").read_text())
    assert data["version"] == 2
    assert [s["type"] for s in data["steps"]] == [
        "L1FilterPruneConfig", "MagnitudePruneConfig", "FinetuneConfig", "LowRankConfig", "QuantConfig",
        "FinetuneConfig", "Int8Config",
    ]  # fmt: skip
    assert all(isinstance(s["version"], int) for s in data["steps"])
    assert data["steps"][2]["distill"]["type"] == "DistillConfig"


def test_every_registered_config_round_trips_through_yaml():
    checked = 0
    for tag, cls in config_types().items():
        if not cls.__module__.startswith("effdl."):
            continue  # classes defined by doctests and tests
        try:
            config = cls()
        except (ConfigError, TypeError):
            continue  # a config with required fields (e.g. a shape) is covered by its own tests
        text = yaml.safe_dump(config.to_dict())
        assert Config.from_dict(yaml.safe_load(text)) == config, tag
        checked += 1
    assert checked >= 12


@pytest.mark.parametrize("name", ["default", "aggressive", "factorize", "qat-w4a4"])
def test_a_recipe_of_the_previous_format_still_loads(name):
    old = Recipe.load(FIXTURES / f"v1-{name}.yaml")  # committed copies of the shipped recipes before version 2
    assert old.steps == Recipe.load(name).steps


def test_previous_field_names_are_read_through_the_config_versions():
    old = Recipe.from_dict({"steps": [
        {"step": "prune", "method": "magnitude", "config": {"sparsity": 0.9}},
        {"step": "prune", "config": {"ratio": 0.5, "global_ranking": True}},
        {"step": "factorize", "config": {"selector": "ratio", "ratio": 0.33}},
        {"step": "qat", "config": {"bits_w": 4}, "train": {"epochs": 2}},
    ]})  # fmt: skip
    assert old.steps == [
        MagnitudePruneConfig(ratio=0.9),
        StructuredPruneConfig(ratio=0.5, scope="global"),
        LowRankConfig(selector="keep", keep=0.33),
        QuantConfig(bits_w=4),
        FinetuneConfig(train={"epochs": 2}),
    ]


def test_shipped_recipes_load():
    names = shipped_recipes()
    assert {"default", "int8", "factorize", "aggressive", "qat-w4a4"} <= set(names)
    for name in names:
        assert Recipe.load(name).steps


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"steps": []}, "at least one step"),
        ({"steps": [{"step": "shrink"}]}, "step 1: 'step' must be one of prune, finetune"),
        ({"steps": [{"step": "prune", "config": {"ratio": 1.5}}]}, r"step 1 \(StructuredPruneConfig\): ratio must be"),
        ({"steps": [{"step": "prune", "config": {"ratoi": 0.5}}]}, "has no field"),
        ({"steps": [{"step": "finetune", "train": {"epoch": 3}}]}, "has no field"),
        ({"steps": [{"step": "quantize"}, {"step": "finetune"}]}, "must be the last step"),
        ({"steps": [{"step": "prune", "method": "magic"}]}, "method must be one of"),
        ({"steps": [{"step": "factorize", "cnfig": {}}]}, "unknown key"),
        ({"stepz": []}, "list under 'steps'"),
        ({"version": 2, "steps": [{"ratio": 0.5}]}, "with a 'type' tag"),
        ({"version": 2, "steps": [{"type": "Int8Config"}, {"type": "LowRankConfig"}]}, "must be the last step"),
        ({"version": 2, "steps": [{"type": "QuantConfig", "version": 9}]}, "newer effdl"),
        ({"version": 3, "steps": [{"type": "QuantConfig"}]}, "upgrade effdl"),
        ({"version": 2, "steps": [{"type": "StructuredPruneConfig", "ratio": 0.5, "sparsity": 1}]}, "no field"),
    ],
)
def test_bad_recipes_say_what_is_wrong(data, match):
    with pytest.raises(ConfigError, match=match):
        Recipe.from_dict(data)


def test_an_unknown_config_type_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="did you mean 'StructuredPruneConfig'"):
        Recipe.from_dict({"version": 2, "steps": [{"type": "StructuredPrunConfig"}]})


def test_unknown_recipe_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="default"):
        Recipe.load("no-such-recipe")
