import pytest
import torch

from effdl.core import CheckpointError, ConfigError, ShapeError, UnknownNameError
from effdl.models import MODELS, create_model, example_batch, list_models, load_model, model_spec, save_model

TEST_MODELS = [n for n in MODELS.names() if n.startswith("test_")]


@pytest.mark.parametrize("name", TEST_MODELS)
def test_test_variants_forward_backward(name):
    model = create_model(name, num_classes=7)
    x = example_batch(model, 3)
    out = model(x)
    tokens = MODELS.entry(name).meta["inputs"] == "tokens"
    assert out.shape == ((3, 7, x.shape[1]) if tokens else (3, 7))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) < 20_000


@pytest.mark.parametrize("name", [n for n in MODELS.names() if not n.startswith("test_")])
def test_reference_models_forward(name):
    model = create_model(name).eval()
    x = example_batch(model, 2)
    with torch.no_grad():
        assert model(x).shape[:2] == (2, model_spec(model)["num_classes"])


def test_every_family_has_a_test_variant():
    families = {"mlp", "cnn1d", "cnn2d", "resnet", "resnet1d", "vgg", "mobilenetv2", "densenet", "vit"}
    assert {f"test_{f}" for f in families} <= set(MODELS.names())


def test_reference_structures_are_present():
    """The models together hold the structures compression tools must handle."""
    mods = {n: list(create_model(n).modules()) for n in ("resnet20", "mobilenetv2", "vit")}
    assert any(isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1 for m in mods["mobilenetv2"])
    shortcuts = [
        m
        for m in mods["resnet20"]
        if type(m).__name__ == "BasicBlock" and not isinstance(m.shortcut, torch.nn.Identity)
    ]
    assert len(shortcuts) == 2  # projection shortcuts between stages
    assert any(type(m).__name__ == "Attention" for m in mods["vit"])
    assert any(isinstance(m, torch.nn.LayerNorm) for m in mods["vit"])


def test_cnn1d_matches_described_size():
    assert 20_000 < sum(p.numel() for p in create_model("cnn1d").parameters()) < 25_000
    assert sum(p.numel() for p in create_model("cnn1d_convbase").parameters()) == 5210  # 25 ch, Linear(125, 10)
    assert sum(p.numel() for p in create_model("mlp").parameters()) == 15210  # 40-100-100-10


def test_resnet_depths_have_expected_parameter_counts():
    # He et al. 2016, Table 6: ResNet-20 0.27M, ResNet-56 0.85M
    assert abs(sum(p.numel() for p in create_model("resnet20").parameters()) / 1e6 - 0.27) < 0.01
    assert abs(sum(p.numel() for p in create_model("resnet56").parameters()) / 1e6 - 0.85) < 0.01


@pytest.mark.parametrize(
    ("name", "shape", "match"),
    [
        ("cnn1d", (2, 40), r"expects inputs of shape \(N, 1, 40\).*got \(2, 40\); add the channel dimension"),
        ("cnn1d", (1, 40), r"got \(1, 40\); add the batch dimension with x.unsqueeze\(0\)"),
        ("cnn1d", (2, 3, 40), r"3 channels instead of 1"),
        ("cnn1d", (2, 1, 50), r"resize the input to \(40,\)"),
        ("resnet20", (2, 3, 32), r"\(batch, channels, height, width\)"),
        ("mlp", (2, 1, 41), r"resize the input"),
        ("vit", (2, 1, 32, 32), r"1 channels instead of 3"),
    ],
)
def test_wrong_input_shape_gets_a_clear_error(name, shape, match):
    model = create_model(name)
    with pytest.raises(ShapeError, match=match):
        model(torch.zeros(shape))


def test_models_built_from_their_classes_check_inputs_too():
    from effdl.models import ConvNet, ResNet

    with pytest.raises(ShapeError, match=r"ConvNet expects inputs of shape \(N, 1, 40\)"):
        ConvNet((1, 40), 10)(torch.zeros(2, 40))
    with pytest.raises(ShapeError, match="3 channels instead of 1"):
        ResNet((1, 40), 10, depth=8)(torch.zeros(2, 3, 40))
    hooks = create_model("cnn1d")._forward_pre_hooks
    assert len(hooks) == 1  # create_model does not add a second check


def test_size_agnostic_models_accept_other_sizes():
    model = create_model("resnet20").eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_model_can_be_built_for_another_input():
    model = create_model("cnn1d", input_shape=(2, 60), num_classes=4)
    assert model(torch.zeros(5, 2, 60)).shape == (5, 4)


def test_unknown_model_and_option_errors():
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnet21'.*valid models: cnn1d.*did you mean"):
        create_model("resnet21")
    with pytest.raises(ConfigError, match=r"unknown option.*'width'.*valid options: depth, widths"):
        create_model("resnet20", width=3)
    with pytest.raises(ConfigError, match=r"depth must be 6n\+2"):
        create_model("resnet20", depth=21)
    with pytest.raises(ConfigError, match="num_classes must be >= 1"):
        create_model("mlp", num_classes=0)
    assert {m["name"] for m in list_models()} == set(MODELS.names())


@pytest.mark.parametrize("name", TEST_MODELS)
def test_save_load_round_trip(tmp_path, name):
    model = create_model(name, num_classes=5, **({"hidden": [8, 8]} if name == "test_mlp" else {})).eval()
    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    x = example_batch(model, 2)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert model_spec(loaded) == model_spec(model)


def test_load_checks_fit_and_needs_a_spec(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(create_model("test_mlp").state_dict(), path)
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(path)
    assert isinstance(load_model(path, model="test_mlp", trust_pickle=True), torch.nn.Module)
    with pytest.raises(CheckpointError, match=r"does not fit the model.*shape mismatch"):
        load_model(path, model="mlp", trust_pickle=True)
    from effdl.core import save_checkpoint

    save_checkpoint(tmp_path / "raw.safetensors", create_model("test_mlp").state_dict())
    with pytest.raises(CheckpointError, match="no model spec; pass model=NAME"):
        load_model(tmp_path / "raw.safetensors")


@pytest.mark.parametrize("name", TEST_MODELS)
def test_models_trace_with_fx_and_export(name):
    """Pruning and export trace models; the input check must stay out of the graph and the outputs agree."""
    model = create_model(name).eval()
    x = example_batch(model, 2)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(torch.fx.symbolic_trace(model)(x), expected, atol=1e-6)
        assert torch.allclose(torch.export.export(model, (x,)).module()(x), expected, atol=1e-6)
