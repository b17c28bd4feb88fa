import pytest

from effdl.compress import FactorizeStep, FinetuneStep, PruneStep, QATStep, QuantizeStep, Recipe, shipped_recipes
from effdl.core import ConfigError
from effdl.distill import DistillConfig
from effdl.factorize import LowRankFactorization
from effdl.prune import L1FilterPruning, MagnitudePruning
from effdl.quant import Int8Config, QuantConfig


def _recipe():
    return Recipe(
        [
            PruneStep(config=L1FilterPruning(ratio=0.25)),
            PruneStep(config=MagnitudePruning(sparsity=0.5)),
            FinetuneStep(train={"epochs": 2, "lr": 0.003}, distill=DistillConfig(alpha=0.3)),
            FactorizeStep(config=LowRankFactorization(selector="ratio", ratio=0.5, ignore=("classifier",))),
            QATStep(config=QuantConfig(bits_w=8, bits_a=8), train={"epochs": 1}),
            QuantizeStep(config=Int8Config(runtime="onnxruntime")),
        ],
        name="everything",
    )


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_recipe_round_trips_through_files(tmp_path, suffix):
    recipe = _recipe()
    again = Recipe.load(recipe.save(tmp_path / f"r{suffix}"))
    assert again == recipe
    assert again.fingerprint() == recipe.fingerprint()


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
        ({"steps": [{"step": "prune", "config": {"ratio": 1.5}}]}, r"step 1 \(prune\): ratio must be in"),
        ({"steps": [{"step": "prune", "config": {"ratoi": 0.5}}]}, "has no field"),
        ({"steps": [{"step": "finetune", "train": {"epoch": 3}}]}, "has no field"),
        ({"steps": [{"step": "quantize"}, {"step": "finetune"}]}, "must be the last step"),
        ({"steps": [{"step": "prune", "method": "magic"}]}, "method must be one of"),
        ({"steps": [{"step": "factorize", "cnfig": {}}]}, "unknown key"),
        ({"stepz": []}, "list under 'steps'"),
    ],
)
def test_bad_recipes_say_what_is_wrong(data, match):
    with pytest.raises(ConfigError, match=match):
        Recipe.from_dict(data)


def test_unknown_recipe_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="default"):
        Recipe.load("no-such-recipe")
