import pytest
import torch
from torch import nn

from effdl.analysis import (
    check_direction,
    normalize_direction,
    random_direction,
    random_directions,
    trajectory_directions,
)
from effdl.analysis.directions import direction_dot, direction_norm
from effdl.core.errors import ConfigError, ShapeError
from effdl.models import create_model

MODELS = ["test_cnn1d", "test_mlp", "test_cnn2d"]


def _model(name):
    shape = (1, 8, 8) if name == "test_cnn2d" else (1, 40)
    torch.manual_seed(0)
    return create_model(name, input_shape=shape, num_classes=10)


@pytest.mark.parametrize("name", MODELS)
def test_every_filter_has_the_norm_of_its_weight_filter(name):
    model = _model(name)
    d = random_direction(model, seed=3)
    checked = 0
    for n, w in model.named_parameters():
        if w.dim() > 1:  # conv filters (out, in, k...) and linear neurons (rows)
            torch.testing.assert_close(d[n].flatten(1).norm(dim=1), w.detach().flatten(1).norm(dim=1))
            checked += 1
        else:
            assert float(d[n].abs().sum()) == 0.0, f"{n} (bias/BN) must be zero in the direction by default"
    assert checked >= 2


def test_layer_norm_and_no_ignore():
    model = _model("test_cnn1d")
    d = random_direction(model, norm="layer", ignore="none", seed=1)
    for n, w in model.named_parameters():
        if w.dim() > 1:
            assert d[n].norm().item() == pytest.approx(w.detach().norm().item(), rel=1e-5)
        else:  # the paper's choice for biases/BN when not ignored: the parameter itself
            torch.testing.assert_close(d[n], w.detach())


def test_unnormalized_direction_is_standard_gaussian_and_seeded():
    model = nn.Linear(200, 100)
    d = random_direction(model, norm="none", ignore="none", seed=5)
    assert d["weight"].std().item() == pytest.approx(1.0, abs=0.02)
    torch.testing.assert_close(d["weight"], random_direction(model, norm="none", ignore="none", seed=5)["weight"])
    assert not torch.equal(d["weight"], random_direction(model, norm="none", ignore="none", seed=6)["weight"])


@pytest.mark.parametrize("norm", ["filter", "layer", "none"])
def test_second_direction_is_orthogonal_and_keeps_its_normalization(norm):
    model = _model("test_cnn1d")
    x, y = random_directions(model, 2, norm=norm, seed=2)
    assert abs(direction_dot(x, y)) < 1e-6 * direction_norm(x) * direction_norm(y)
    if norm == "filter":
        for n, w in model.named_parameters():
            if w.dim() > 1:
                torch.testing.assert_close(y[n].flatten(1).norm(dim=1), w.detach().flatten(1).norm(dim=1))
    plain = random_directions(model, 2, norm=norm, seed=2, orthogonal=False)[1]
    assert abs(direction_dot(x, plain)) > 1e-4  # orthogonalization did something


def test_direction_that_does_not_match_the_model_is_refused():
    model = _model("test_mlp")
    d = random_direction(model)
    name = next(iter(d))
    with pytest.raises(ShapeError, match="missing"):
        check_direction(model, {k: v for k, v in d.items() if k != name})
    with pytest.raises(ShapeError, match="shapes"):
        check_direction(model, {**d, name: torch.zeros(3, 3, 3)})
    with pytest.raises(ShapeError, match="unknown"):
        normalize_direction({**d, "extra.weight": torch.zeros(1)}, model)


def test_bad_options():
    model = _model("test_mlp")
    with pytest.raises(ConfigError, match="norm"):
        random_direction(model, norm="unit")
    with pytest.raises(ConfigError, match="dims"):
        random_directions(model, 3)
    with pytest.raises(ConfigError, match="no parameters"):
        random_direction(nn.ReLU())


def test_trajectory_pca_recovers_a_planar_path():
    model = nn.Linear(6, 4)
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    u = {k: torch.randn(v.shape, generator=g) for k, v in final.items()}
    v = {k: torch.randn(t.shape, generator=g) for k, t in final.items()}
    path = [{k: final[k] + (5 - i) * u[k] + 0.3 * ((i % 2) - 0.5) * v[k] for k in final} for i in range(6)]
    (d1, d2), coords, explained = trajectory_directions(model, path, ignore="none")
    assert sum(explained) == pytest.approx(1.0, abs=1e-6)  # the path lies in a plane
    assert direction_norm(d1) == pytest.approx(1.0, abs=1e-5) and abs(direction_dot(d1, d2)) < 1e-5
    for i, snap in enumerate(path):  # the coordinates reconstruct each offset from the final weights
        for k in final:
            recon = final[k] + coords[i, 0] * d1[k] + coords[i, 1] * d2[k]
            torch.testing.assert_close(recon, snap[k], atol=1e-4, rtol=1e-4)


def test_trajectory_errors():
    model = nn.Linear(3, 2)
    with pytest.raises(ConfigError, match="at least 2"):
        trajectory_directions(model, [model.state_dict()])
    with pytest.raises(ShapeError, match="same architecture"):
        trajectory_directions(model, [model.state_dict(), nn.Linear(4, 2).state_dict()])
