import dataclasses
import warnings

import pytest
import torch
from torch import nn

import effdl
from effdl.core import (
    Config,
    ConfigError,
    Recipe,
    Report,
    UnsupportedError,
    apply_,
    eval_mode,
    find_transform,
    register_transform,
    swap_module_,
)
from effdl.core.config import config_class
from effdl.core.transform import TransformContext, transforms
from effdl.models import create_model
from effdl.prune import MagnitudePruneConfig, StructuredPruneConfig
from effdl.quant import Int8Config, QuantConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class _BreakHalfwayConfig(Config):
    pass


@register_transform(_BreakHalfwayConfig)
def _break(model, config, context):
    swap_module_(model, "0", nn.Identity())  # half-way ...
    with torch.no_grad():
        model[1].weight.mul_(0)
    raise RuntimeError("boom")  # ... then fails


def test_a_failing_transform_leaves_the_model_exactly_as_it_was():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        apply_(model, _BreakHalfwayConfig(), example_inputs=torch.zeros(1, 3))
    assert isinstance(model[0], nn.Linear) and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_dispatch_by_config_type_and_subclass():
    assert find_transform(StructuredPruneConfig()) is find_transform(effdl.L1FilterPruneConfig())
    assert find_transform(MagnitudePruneConfig()).keep_during_training is not None
    assert not find_transform(Int8Config()).in_place
    assert {"StructuredPruneConfig", "MagnitudePruneConfig", "LowRankConfig", "QuantConfig", "Int8Config",
            "FinetuneConfig"} <= set(transforms())  # fmt: skip


def test_apply_runs_a_list_of_configs_in_order():
    model = create_model("test_cnn1d")
    x = torch.randn(4, 1, 40)
    report = effdl.apply_(model, [StructuredPruneConfig(ratio=0.5), QuantConfig(bits_w=4, bits_a=8)], example_inputs=x)
    assert model.features[0].out_channels == 2 and len(report.details["steps"]) == 2
    assert report.after.size_bytes < report.before.size_bytes / 4


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        (Int8Config(), UnsupportedError, "makes a new model"),
        (effdl.TrainConfig(), UnsupportedError, "no transform handles TrainConfig; configs with a transform: "),
        ("prune", ConfigError, "expected a config, a Recipe or a non-empty list"),
    ],
)
def test_apply_explains_what_it_cannot_do(config, error, match):
    with pytest.raises(error, match=match):
        apply_(nn.Linear(2, 2), config, example_inputs=torch.zeros(1, 2))


def test_apply_refuses_unknown_arguments():
    with pytest.raises(ConfigError, match="unknown argument"):
        apply_(nn.Linear(2, 2), MagnitudePruneConfig(), example_inputs=torch.zeros(1, 2), teachr=None)


def test_recipe_configs_find_their_class_by_tag():
    assert config_class("StructuredPruneConfig") is StructuredPruneConfig
    recipe = Recipe([StructuredPruneConfig(ratio=0.25)])
    assert Recipe.from_dict(recipe.to_dict()).steps[0] == StructuredPruneConfig(ratio=0.25)
    with pytest.raises(ConfigError, match="expected a QuantConfig"):
        QuantConfig.from_dict(StructuredPruneConfig().to_dict())


def test_a_second_class_cannot_take_a_tag():
    with pytest.raises(ConfigError, match="is taken by"):

        @dataclasses.dataclass(frozen=True, kw_only=True)
        class StructuredPruneConfig(Config):  # another module's class under the same tag
            pass


def test_eval_mode_restores_each_module_mode():
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    m[1].eval()
    seen = []

    def run():
        with eval_mode(m):
            seen.append((m.training, m[0].training))
            raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        run()
    assert seen == [(False, False)] and m.training and m[0].training and not m[1].training


@pytest.mark.parametrize(
    ("old", "new", "kwargs", "expected"),
    [
        ("StructuredPruning", StructuredPruneConfig, {"ratio": 0.25, "global_ranking": True},
         StructuredPruneConfig(ratio=0.25, scope="global")),
        ("MagnitudePruning", MagnitudePruneConfig, {"sparsity": 0.9}, MagnitudePruneConfig(ratio=0.9)),
        ("LowRankFactorization", effdl.LowRankConfig, {"selector": "ratio", "ratio": 0.3},
         effdl.LowRankConfig(selector="keep", keep=0.3)),
    ],
)  # fmt: skip
def test_old_names_keep_working_and_warn_once(old, new, kwargs, expected, monkeypatch):
    monkeypatch.setattr("effdl.core.deprecation._WARNED", set())
    shim = getattr(effdl, old)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = shim(**kwargs), shim(**kwargs)
    assert first == second == expected and isinstance(first, shim) and type(first) is new
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert len(messages) == 1 and new.__name__ in messages[0]  # once per process, naming the new spelling


def test_a_report_is_returned_by_the_family_verbs():
    model = create_model("test_mlp")
    report = effdl.prune_(model, MagnitudePruneConfig(ratio=0.5), example_inputs=torch.zeros(2, 1, 40))
    assert isinstance(report, Report) and report.details["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert TransformContext().history == []


def test_a_list_is_applied_whole_or_not_at_all():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):  # the magnitude step succeeds, the next one fails
        apply_(model, [MagnitudePruneConfig(ratio=0.5), _BreakHalfwayConfig()], example_inputs=torch.zeros(1, 3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(UnsupportedError, match="makes a new model"):  # refused before the first step runs
        apply_(model, [MagnitudePruneConfig(ratio=0.5), Int8Config()], example_inputs=torch.zeros(1, 3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
