import copy

import pytest
import torch
from torch import nn

from effdl.core.errors import ConfigError, UnknownNameError, UnsupportedError
from effdl.export import export_onnx, run_onnx
from effdl.measure import count_macs
from effdl.models import list_models, load_model, save_model
from effdl.prune import (
    CRITERIA,
    L1FilterPruneConfig,
    StructuredPruneConfig,
    build_dependency_graph,
    plan_structured,
    prune_,
    remove_channels_,
    zero_channels_,
)

ALL_MODELS = [m["name"] for m in list_models()]
TEST_MODELS = [n for n in ALL_MODELS if n.startswith("test_")]


def params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_pruned_equals_zeroed_dense_and_reloads_and_exports(name, make, tmp_path):
    model, x = make(name)
    _, plan = plan_structured(model, StructuredPruneConfig(ratio=0.5), x)
    assert plan.num_removed > 0
    zeroed = copy.deepcopy(model)
    zero_channels_(zeroed, plan)
    with torch.no_grad():
        assert not torch.allclose(zeroed(x), model(x), atol=1e-4)  # the check below is not vacuous
    remove_channels_(model, plan, x)  # nothing else marks the model: the checkpoint records the new shapes
    with torch.no_grad():
        y = model(x)
        torch.testing.assert_close(y, zeroed(x), atol=1e-5, rtol=1e-4)
    # a plain module again: saves, reloads into a freshly built model with the new shapes
    path = save_model(model, tmp_path / "pruned.safetensors")
    again = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(again(x), y, atol=0, rtol=0)
    onnx_path = export_onnx(again, x, tmp_path / "pruned.onnx")
    out = run_onnx(onnx_path, torch.cat([x, x]))[0]  # dynamic batch
    torch.testing.assert_close(torch.from_numpy(out[: len(x)]), y, atol=1e-4, rtol=1e-4)


# every criterion on the small variant of every architecture by default; on the full-size models with -m slow
CRITERION_MODELS = [
    pytest.param(n, marks=() if n in TEST_MODELS else pytest.mark.slow) for n in ALL_MODELS
]


@pytest.mark.parametrize("criterion", CRITERIA.names())
@pytest.mark.parametrize("name", CRITERION_MODELS)
def test_contract_every_criterion_every_model(name, criterion, make):
    model, x = make(name)
    x1 = x[:1]
    macs, n = count_macs(model, x1), params(model)
    classes = model.effdl_spec["num_classes"]
    y = x.roll(-1, dims=1) if not x.dtype.is_floating_point else torch.tensor([0, 1])  # next token, or a label
    report = prune_(model, StructuredPruneConfig(criterion=criterion, ratio=0.4), example_inputs=x, data=[(x, y)])
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, classes, *y.shape[1:])
    assert torch.isfinite(out).all()
    assert count_macs(model, x1) < macs and params(model) < n
    assert report.after.macs < report.before.macs and report.after.params < report.before.params


def test_residual_stage_is_one_group_and_stays_consistent(make):
    model, x = make("test_resnet")
    graph = build_dependency_graph(model, x)
    stage = graph.group("conv1")  # stem + every block's conv2 that adds into the same stream
    assert set(stage.producers) >= {"conv1", "layer1.0.conv2"}
    prune_(model, L1FilterPruneConfig(ratio=0.5), example_inputs=x)
    assert model.conv1.out_channels == model.layer1[0].conv2.out_channels == model.bn1.num_features == 2


def test_depthwise_follows_its_input(make):
    model, x = make("test_mobilenetv2")
    dw = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
    ]
    before = {n: m.groups for n, m in dw}
    prune_(model, L1FilterPruneConfig(ratio=0.5), example_inputs=x)
    changed = [n for n, m in dw if m.groups < before[n]]
    assert changed
    for _, m in dw:
        assert m.groups == m.in_channels == m.out_channels == m.weight.shape[0]


def test_concat_offsets_into_consumer(make):
    model, x = make("test_densenet")
    prune_(model, L1FilterPruneConfig(ratio=0.5), example_inputs=x)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.shape[1] * m.groups == m.in_channels
    with torch.no_grad():
        model(x)


def test_attention_heads_removed_whole(make):
    model, x = make("test_vit")
    attn = model.blocks[0].attn
    assert attn.num_heads == 2
    prune_(model, L1FilterPruneConfig(ratio=0.5), example_inputs=x)
    assert attn.num_heads == 1 and attn.head_dim == 8
    assert attn.qkv.out_features == 3 * 8 and attn.proj.in_features == 8
    assert model.blocks[0].norm1.normalized_shape == (16,)  # the residual stream under LayerNorm is kept


def test_flatten_to_linear_expands_channels(make):
    model, x = make("test_vgg")
    graph = build_dependency_graph(model, x)
    last_conv = graph.group("features.8")
    fc = next(s for s in last_conv.sites() if s.role == "in")
    # each channel spans the spatial positions it is flattened into
    spans = {len(ch.indices(fc)) for ch in last_conv.channels}
    assert len(spans) == 1


def test_round_to_and_uniform_counts(make):
    model, x = make("cnn1d")
    prune_(model, StructuredPruneConfig(ratio=0.3, round_to=8), example_inputs=x)
    assert [model.features[i].out_channels for i in (0, 3, 6)] == [24, 24, 24]


def test_per_layer_ratios_and_zero_keeps_group(make):
    model, x = make("cnn1d")
    prune_(model, StructuredPruneConfig(ratio=0.5, per_layer={"features.0": 0.0, "features.6": 0.25}), example_inputs=x)
    assert [model.features[i].out_channels for i in (0, 3, 6)] == [32, 16, 24]


def test_global_ranking_removes_overall_fraction_unevenly(make):
    model, x = make("cnn1d")
    with torch.no_grad():
        model.features[6].weight[:30].mul_(1e-3)  # 30 of the last layer's 32 filters are negligible
    prune_(model, StructuredPruneConfig(ratio=0.5, scope="global", max_ratio=0.75), example_inputs=x)
    widths = [model.features[i].out_channels for i in (0, 3, 6)]
    assert sum(widths) == 48  # half of all 96 channels
    assert widths[2] == 8  # as many as max_ratio lets go from the group with tiny filters
    assert widths[0] < 32 and widths[1] < 32


def test_l1_removes_smallest_filters(make):
    model, x = make("test_mlp")
    w = model.net[1].weight
    with torch.no_grad():
        w[3].mul_(1e-3)
        w[7].mul_(1e-3)
    norms = w.detach().abs().sum(1)
    keep_expected = torch.argsort(norms, descending=True)[:8].sort().values
    kept_rows = w.detach()[keep_expected].clone()
    prune_(model, L1FilterPruneConfig(ratio=0.5), example_inputs=x)
    torch.testing.assert_close(model.net[1].weight.detach(), kept_rows)


def test_l1_folds_the_following_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2)).eval()
    x = torch.randn(2, 1, 10)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1).expand(4, 1, 3))
        model[1].weight.copy_(torch.tensor([10.0, 1.0, 1.0, 0.1]))  # BN rescales: filter 0 matters most
    graph = build_dependency_graph(model, x)
    assert graph.groups[0].folds == {"0": "1"}
    raw, folded = copy.deepcopy(model), copy.deepcopy(model)
    prune_(raw, StructuredPruneConfig(criterion="l1_raw", ratio=0.5), example_inputs=x)
    prune_(folded, StructuredPruneConfig(criterion="l1", ratio=0.5), example_inputs=x)
    assert raw[0].weight[:, 0, 0].tolist() == [3.0, 4.0]
    assert folded[0].weight[:, 0, 0].tolist() == [1.0, 3.0]  # scores 30, 6, 9, 1.2 (times sqrt(1+eps))


def test_ignore_keeps_layer_whole(make):
    model, x = make("cnn1d")
    prune_(model, StructuredPruneConfig(ratio=0.5, ignore=("features.3",)), example_inputs=x)
    assert model.features[3].out_channels == 32  # its outputs and inputs are pinned
    assert model.features[0].out_channels == 32
    assert model.features[6].out_channels == 16


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_bad_ratio(ratio):
    with pytest.raises(ConfigError, match=r"ratio must be in \[0.0, 1.0\).*use ratio=0.5"):
        StructuredPruneConfig(ratio=ratio)


def test_unknown_criterion():
    with pytest.raises(UnknownNameError, match="l1"):
        StructuredPruneConfig(criterion="l3")


def test_layer_that_cannot_be_pruned_is_named(make):
    model, x = make("cnn1d")
    with pytest.raises(UnsupportedError, match=r"'classifier' cannot be pruned: they reach the model output"):
        prune_(model, StructuredPruneConfig(per_layer={"classifier": 0.5}), example_inputs=x)
    with pytest.raises(ConfigError, match="matches no prunable layer"):
        prune_(model, StructuredPruneConfig(per_layer={"nope": 0.5}), example_inputs=x)


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1)


class _WithCustom(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, 3)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y, _ = self.rnn(self.conv1(x).transpose(1, 2))
        return self.fc(y[:, -1])


def test_op_the_analysis_cannot_follow_pins_what_it_reads_and_names_it():
    model, x = _WithCustom(), torch.randn(2, 1, 10)
    graph = build_dependency_graph(model, x)
    assert graph.groups == []  # conv1 feeds the GRU kernel, which is not followed: nothing silently wrong
    assert "gru in rnn is not followed" in graph.pinned["conv1"]
    graph = build_dependency_graph(model, x, ignore=["rnn"])
    assert graph.pinned["conv1"] == "ignored module rnn"


def test_per_channel_parameter_follows_the_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 8, 3), _Custom(), nn.ReLU(), nn.Conv1d(8, 4, 3), nn.Flatten(), nn.Linear(24, 2))
    x = torch.randn(2, 1, 10)
    graph = build_dependency_graph(model, x)
    assert [g.name for g in graph.groups] == ["0", "3"]
    assert any(s.key == "1.scale" for s in graph.groups[0].sites())
    _, plan = plan_structured(model, StructuredPruneConfig(ratio=0.5), x)
    zeroed = copy.deepcopy(model)
    zero_channels_(zeroed, plan)
    remove_channels_(model, plan, x)
    assert model[1].scale.shape == (4,)
    torch.testing.assert_close(model(x), zeroed(x), atol=1e-5, rtol=1e-4)


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_data_dependent_control_flow_is_captured_on_the_example_path():
    model = nn.Sequential(nn.Linear(4, 8), _DataDependent2())
    x = torch.randn(2, 4)
    with pytest.raises(Exception, match="symbolically traced variables cannot be used as inputs to control flow"):
        torch.fx.symbolic_trace(model)
    graph = build_dependency_graph(model, x)
    assert [g.name for g in graph.groups] == ["0"]


class _DataDependent2(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        if x.shape[0] > 1 and x.dim() == 2:  # Python control flow on shapes, as in Hugging Face forwards
            return self.fc(torch.relu(x))
        return self.fc(x)


def test_missing_or_bad_example_inputs(make):
    model, _ = make("test_mlp")
    from effdl.core.errors import ShapeError

    with pytest.raises(ShapeError, match="example_inputs"):
        prune_(model, StructuredPruneConfig(), example_inputs=None)
    with pytest.raises(ShapeError, match="expects inputs of shape"):
        prune_(model, StructuredPruneConfig(), example_inputs=torch.zeros(2, 3, 3))
    plain = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ShapeError, match=r"does not run on example_inputs of shape \(2, 5\)"):
        prune_(plain, StructuredPruneConfig(), example_inputs=torch.zeros(2, 5))


def test_hard_coded_width_is_restored_and_explained():
    class Hard(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.fc1(x)
            return self.fc2(h.view(-1, 8))  # hard-coded width

    model, x = Hard(), torch.randn(2, 4)
    ref = model(x)
    with pytest.raises(UnsupportedError, match="restored"):
        prune_(model, StructuredPruneConfig(), example_inputs=x)
    assert model.fc1.out_features == 8
    torch.testing.assert_close(model(x), ref)


def test_taylor_needs_data(make):
    model, x = make("test_mlp")
    with pytest.raises(ConfigError, match="needs data"):
        prune_(model, StructuredPruneConfig(criterion="taylor"), example_inputs=x)


def test_config_round_trip():
    cfg = StructuredPruneConfig(criterion="bn_scale", ratio=0.3, per_layer={"a": 0.1}, ignore=("b",), round_to=4)
    assert StructuredPruneConfig.from_dict(cfg.to_dict()) == cfg


def test_custom_criterion_registered():
    if "first_k" not in CRITERIA:

        @CRITERIA.register("first_k", description="test")
        def first_k(group, tensors, grads, generator):
            return torch.arange(len(group.channels), dtype=torch.float64).flip(0)

    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    w = model[0].weight.detach().clone()
    prune_(model, StructuredPruneConfig(criterion="first_k", ratio=0.5), example_inputs=torch.zeros(1, 3))
    torch.testing.assert_close(model[0].weight.detach(), w[:3])


class _Shared(nn.Module):
    """One conv applied twice (shared weights), with different consumers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv1d(1, 8, 3, padding=1)
        self.shared = nn.Conv1d(8, 8, 3, padding=1)
        self.mid = nn.Conv1d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        a = torch.relu(self.shared(torch.relu(self.stem(x))))
        b = torch.relu(self.shared(torch.relu(self.mid(a))))
        return self.head(b.mean(-1))


def test_shared_module_called_twice_stays_consistent():
    torch.manual_seed(0)
    model, x = _Shared().eval(), torch.randn(2, 1, 12)
    _, plan = plan_structured(model, StructuredPruneConfig(ratio=0.5), x)
    zeroed = copy.deepcopy(model)
    zero_channels_(zeroed, plan)
    remove_channels_(model, plan, x)
    torch.testing.assert_close(model(x), zeroed(x), atol=1e-5, rtol=1e-4)
    assert model.stem.out_channels == model.mid.out_channels == model.shared.in_channels


@pytest.mark.parametrize(
    ("norm", "prunable"),
    [
        (nn.InstanceNorm2d(8, affine=True, track_running_stats=True), True),
        (nn.GroupNorm(8, 8), True),  # one channel per group: per-channel statistics
        (nn.GroupNorm(2, 8), False),  # statistics over 4 channels: removing one changes the others
        (nn.BatchNorm2d(8), True),
    ],
)
def test_norm_layers(norm, prunable):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), norm, nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(64, 2)
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    graph = build_dependency_graph(model, x)
    assert (graph.groups[0].name == "0") is prunable
    if not prunable:
        assert "normalizes over groups of 4 channels" in graph.pinned["0"]
    _, plan = plan_structured(model, StructuredPruneConfig(ratio=0.5), x)
    zeroed = copy.deepcopy(model)
    zero_channels_(zeroed, plan)
    remove_channels_(model, plan, x)
    torch.testing.assert_close(model(x), zeroed(x), atol=1e-5, rtol=1e-4)
    assert model[0].out_channels == (4 if prunable else 8)


class _Erfc(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.special.erfcx(self.fc1(x)))


def test_an_unknown_op_pins_and_a_registered_rule_frees_it():
    from effdl.prune import register_function_rule
    from effdl.prune.graph._functions import RULES

    model, x = _Erfc(), torch.randn(3, 4)
    graph = build_dependency_graph(model, x)
    assert graph.groups == [] and "is not followed" in graph.pinned["fc1"]
    register_function_rule("special_erfcx", "elementwise")
    try:
        graph = build_dependency_graph(model, x)
        assert [g.name for g in graph.groups] == ["fc1"]
    finally:
        RULES.pop("special_erfcx")


def test_wanda_criterion_weighs_the_consumer_columns_by_their_input_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(32, 4)
    graph = build_dependency_graph(model, x)
    from effdl.prune.structured import compute_scores

    scores = compute_scores(model, graph, StructuredPruneConfig(criterion="wanda_sp"), data=[(x, None)])["0"]
    h = torch.relu(model[0](x)).detach()  # what the consumer reads
    expected = model[2].weight.detach().abs().sum(0) * h.norm(dim=0)  # sum_i |W_ic| * ||X_c||
    torch.testing.assert_close(scores.float(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match=r"inputs. norms on calibration data; pass data="):
        compute_scores(model, graph, StructuredPruneConfig(criterion="wanda_sp"))
