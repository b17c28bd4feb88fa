import pytest
import torch
from torch import nn

from effdl.core.errors import ConfigError, UnknownNameError, UnsupportedError
from effdl.export import export_onnx
from effdl.factorize import (
    LowRankConfig,
    energy_kept,
    energy_rank,
    factorize_,
    factorize_layer,
    singular_values,
)
from effdl.models import MODELS, create_model, example_batch, load_model, save_model
from effdl.prune import L1FilterPruneConfig, prune_

ARCHS = [n for n in MODELS.names() if n.startswith("test_")]  # the contract: every registered model


def _x(model, n=4):
    torch.manual_seed(1)
    return example_batch(model, n)


def _full(conv="channel"):
    # a rank above every layer's full rank, capped per layer: the exact decomposition
    return LowRankConfig(selector="fixed", rank=100_000, conv=conv, only_if_smaller=False)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("conv", ["channel", "tucker2"])
def test_full_rank_reproduces_the_outputs_reloads_and_exports(arch, conv, tmp_path):
    torch.manual_seed(0)
    model = create_model(arch).eval()
    x = _x(model)
    ref = model(x)
    report = factorize_(model, _full(conv), example_inputs=x)
    assert report.details["factorized"] > 0
    assert all(e > 1 - 1e-9 for row in report.details["layers"] for e in row["energy"])
    torch.testing.assert_close(model.eval()(x), ref, atol=1e-4, rtol=1e-4)
    again = load_model(save_model(model, tmp_path / "f.safetensors"))
    assert torch.equal(again(x), model(x))
    if conv == "channel":  # one export per architecture is enough
        pytest.importorskip("onnxruntime")
        export_onnx(again, x, tmp_path / "f.onnx")  # checks onnxruntime's outputs against PyTorch's


@pytest.mark.parametrize(
    "layer",
    [nn.Linear(12, 7), nn.Conv1d(3, 8, 5, stride=2, padding=2), nn.Conv2d(4, 6, 3, padding=1, dilation=2),
     nn.Conv3d(2, 3, 3, padding=1)],
)  # fmt: skip
def test_channel_decomposition_is_the_truncated_svd(layer):
    # at rank r the composed weight is the best rank-r approximation: its error is the discarded singular values
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    s = singular_values(w)
    kind = "svd" if isinstance(layer, nn.Linear) else "channel"
    f = factorize_layer(layer, kind, (2,))
    if kind == "svd":
        composed = f[1].weight @ f[0].weight
    else:
        composed = f[1].weight.reshape(f[1].weight.shape[0], -1) @ f[0].weight.reshape(2, -1)
    err = torch.linalg.norm(composed.detach().double() - w.double())
    assert float(err) == pytest.approx(float(s[2:].square().sum().sqrt()), rel=1e-4)


def test_energy_rank_keeps_the_requested_share():
    torch.manual_seed(0)
    model = create_model("test_cnn1d").eval()
    x = _x(model)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.Linear)]
    spectra = {n: singular_values(m.weight.flatten(1)) for n, m in layers}
    cfg = LowRankConfig(selector="energy", energy=0.8, only_if_smaller=False)
    report = factorize_(model, cfg, example_inputs=x)
    for row in report.details["layers"]:
        (rank,) = row["ranks"]
        assert row["energy"][0] >= 0.8
        assert rank == 1 or energy_kept(spectra[row["layer"]], rank - 1) < 0.8  # the smallest rank that keeps enough
    values = torch.tensor([4.0, 2.0, 1.0, 0.5])
    r = energy_rank(values, 0.9)
    assert energy_kept(values, r) >= 0.9 > energy_kept(values, r - 1)
    assert energy_rank(values, 1.0) == 4


def test_ratio_per_layer_and_global():
    torch.manual_seed(0)
    model = create_model("test_vgg").eval()
    x = _x(model)
    report = factorize_(model, LowRankConfig(selector="keep", keep=0.4), example_inputs=x)
    for row in report.details["layers"]:
        if row["factorized"]:
            assert row["params_after"] <= 0.4 * row["params_before"]
    model = create_model("test_vgg").eval()
    cfg = LowRankConfig(selector="keep", keep=0.4, scope="global", only_if_smaller=False)
    report = factorize_(model, cfg, example_inputs=x)
    rows = report.details["layers"]
    assert sum(r["params_after"] for r in rows) <= 0.4 * sum(r["params_before"] for r in rows)
    assert 0 < report.details["global_energy"] < 1
    ranks = {tuple(r["ranks"]) for r in rows}
    assert len(ranks) > 1  # one threshold, different ranks


def test_mac_target_counts_positions():
    torch.manual_seed(0)
    model = create_model("test_cnn2d").eval()
    x = _x(model)
    report = factorize_(model, LowRankConfig(selector="keep", keep=0.5, target="macs"), example_inputs=x)
    assert report.after.macs <= report.before.macs


@pytest.mark.parametrize("conv", ["channel", "tucker2"])
def test_saved_factorized_model_reloads_and_exports(tmp_path, conv):
    torch.manual_seed(0)
    model = create_model("test_resnet").eval()
    x = _x(model)
    factorize_(model, LowRankConfig(selector="fixed", rank=3, conv=conv), example_inputs=x)
    path = save_model(model, tmp_path / "m.safetensors")
    again = load_model(path)
    assert torch.equal(again(x), model(x))
    pytest.importorskip("onnxruntime")
    from effdl.export import export_onnx

    export_onnx(model, x, tmp_path / "m.onnx")  # checks onnxruntime against PyTorch


def test_pruned_then_factorized_model_reloads(tmp_path):
    torch.manual_seed(0)
    model = create_model("test_cnn1d").eval()
    x = _x(model)
    prune_(model, L1FilterPruneConfig(ratio=0.5), example_inputs=x)
    factorize_(model, LowRankConfig(selector="fixed", rank=2), example_inputs=x)
    again = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert torch.equal(again(x), model(x))


def test_factorized_model_trains():
    torch.manual_seed(0)
    model = create_model("test_cnn1d")
    x = _x(model, 8)
    factorize_(model, LowRankConfig(selector="fixed", rank=2), example_inputs=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.long))
    loss.backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_only_if_smaller_leaves_layers_dense():
    model = nn.Sequential(nn.Linear(4, 4))
    report = factorize_(model, LowRankConfig(selector="fixed", rank=4), example_inputs=torch.zeros(2, 4))
    assert report.details["factorized"] == 0 and isinstance(model[0], nn.Linear)


def test_bad_input():
    model = create_model("test_mobilenetv2")
    x = _x(model)
    with pytest.raises(UnsupportedError, match="groups="):
        factorize_(model, LowRankConfig(layers=("features.4.block.3",)), example_inputs=x)
    with pytest.raises(ConfigError, match="matches no Linear/Conv layer"):
        factorize_(model, LowRankConfig(layers=("nope",)), example_inputs=x)
    with pytest.raises(UnknownNameError, match="energy"):
        LowRankConfig(selector="svd-magic")
    with pytest.raises(ConfigError, match="needs rank="):
        LowRankConfig(selector="fixed")
    with pytest.raises(ConfigError, match="energy must be in"):
        LowRankConfig(energy=1.5)
    with pytest.raises(ConfigError, match="scope='global'"):
        LowRankConfig(scope="global")
    with pytest.raises(ConfigError, match="rank must be an integer"):
        factorize_layer(nn.Linear(3, 2), "svd", (5,))
    with pytest.raises(UnsupportedError, match="kind='svd'"):
        factorize_layer(nn.Linear(3, 2), "tucker2", (1, 1))
    with pytest.raises(ConfigError, match="per_layer"):
        LowRankConfig(per_layer={"fc": 0})


def test_config_round_trip():
    cfg = LowRankConfig(selector="keep", keep=0.3, scope="global", ignore=("fc",), per_layer={"a": 2})
    assert LowRankConfig.from_dict(cfg.to_dict()) == cfg
