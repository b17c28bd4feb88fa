import numpy as np
import pytest
import torch
from torch import nn

import effdl.analysis.surface as surface_mod
from effdl.analysis import LandscapeConfig, Surface, interpolate_models, loss_surface, random_directions
from effdl.core.errors import ConfigError, ShapeError
from effdl.measure import evaluate
from effdl.models import create_model


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _cfg(**kw):
    return LandscapeConfig(**{"progress": False, "batch_size": 32, **kw})


@pytest.mark.parametrize("dims", [1, 2])
def test_origin_reproduces_the_models_loss_exactly_and_weights_are_restored(net, splits, dims):
    before = _state(net)
    s = loss_surface(net, splits, _cfg(dims=dims, resolution=5))
    assert _same(before, _state(net)), "weights and buffers must be bit-identical after a surface"
    origin = s.origin()
    assert origin == (2,) * dims
    for split, ds in splits.items():
        own = evaluate(net, ds, batch_size=32)
        assert s.values[f"{split}/loss"][origin] == own["loss"]
        assert s.values[f"{split}/accuracy"][origin] == own["accuracy"]
    assert s.values["train/loss"].shape == (5,) * dims
    assert np.nanmax(s.values["train/loss"]) > s.values["train/loss"][origin]  # it does move away


def test_a_point_equals_the_model_moved_by_hand(net, splits):
    d1, d2 = random_directions(net, 2, seed=0)
    s = loss_surface(net, splits, _cfg(resolution=3, splits=("test",)), directions=[d1, d2])
    moved = create_model("test_cnn1d", input_shape=(1, 40), num_classes=10)
    moved.load_state_dict(net.state_dict())
    with torch.no_grad():
        for n, p in moved.named_parameters():
            p.add_(d1[n], alpha=1.0).add_(d2[n], alpha=-1.0)
    assert s.values["test/loss"][2, 0] == pytest.approx(evaluate(moved, splits["test"])["loss"], rel=1e-5)


def test_interpolation_endpoints_are_the_two_models(net, splits):
    torch.manual_seed(5)
    other = create_model("test_cnn1d", input_shape=(1, 40), num_classes=10).eval()
    before = _state(net)
    s = interpolate_models(net, other, splits, _cfg(dims=1, resolution=9, xrange=(-0.5, 1.5)))
    assert _same(before, _state(net))
    x = s.axes[0]
    for split, ds in splits.items():
        assert s.values[f"{split}/loss"][x == 0.0][0] == evaluate(net, ds, batch_size=32)["loss"]
        assert s.values[f"{split}/loss"][x == 1.0][0] == evaluate(other, ds, batch_size=32)["loss"]
    assert np.isfinite(s.values["train/loss"]).all()  # BN statistics are not extrapolated into negative variances


def test_bad_input_is_refused(net, splits):
    with pytest.raises(ConfigError, match="resolution"):
        LandscapeConfig(resolution=1)
    with pytest.raises(ConfigError, match="xrange"):
        LandscapeConfig(xrange=(1.0, -1.0))
    with pytest.raises(ConfigError, match="different architectures"):
        interpolate_models(net, create_model("test_mlp", input_shape=(1, 40), num_classes=10), splits, _cfg(dims=1))
    with pytest.raises(ShapeError, match="does not match"):
        loss_surface(net, splits, _cfg(dims=1), directions=[{"weight": torch.zeros(2)}])
    with pytest.raises(ShapeError, match="needs 2 direction"):
        loss_surface(net, splits, _cfg(dims=2), directions=random_directions(net, 1))
    with pytest.raises(ConfigError, match="no split 'valid'"):
        loss_surface(net, splits, _cfg(dims=1, splits=("valid",)))


def test_a_killed_grid_resumes_to_the_same_values(net, splits, tmp_path, monkeypatch):
    cfg = _cfg(dims=2, resolution=4, splits=("train",))
    full = loss_surface(net, splits, cfg)
    real, calls = surface_mod._evaluate_at, {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(surface_mod, "SAVE_EVERY_S", 0.0)
    monkeypatch.setattr(surface_mod, "_evaluate_at", dying)
    before = _state(net)
    with pytest.raises(KeyboardInterrupt):
        loss_surface(net, splits, cfg, out_dir=tmp_path)
    assert _same(before, _state(net)), "weights are restored even when the run dies"
    assert (tmp_path / surface_mod.PARTIAL).exists()
    with pytest.raises(ConfigError, match="resume"):
        loss_surface(net, splits, cfg, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="other weights, directions, grid or data"):
        loss_surface(net, splits, cfg.replace(seed=9), out_dir=tmp_path, resume=True)
    monkeypatch.setattr(surface_mod, "_evaluate_at", lambda *a: (calls.__setitem__("n", calls["n"] + 1), real(*a))[1])
    calls["n"] = 0
    resumed = loss_surface(net, splits, cfg, out_dir=tmp_path, resume=True)
    assert calls["n"] == 16 - 6  # only the missing points were computed
    np.testing.assert_array_equal(resumed.values["train/loss"], full.values["train/loss"])
    assert not (tmp_path / surface_mod.PARTIAL).exists()


def test_parallel_workers_give_the_serial_values(net, splits):
    cfg = _cfg(dims=2, resolution=3, splits=("test",))
    serial = loss_surface(net, splits, cfg)
    parallel = loss_surface(net, splits, cfg.replace(workers=2))
    np.testing.assert_allclose(parallel.values["test/loss"], serial.values["test/loss"], rtol=1e-5)


def test_convexity_map(net, splits):
    from effdl.analysis import hessian_spectrum
    from effdl.measure import stack_batches

    s = loss_surface(net, splits, _cfg(dims=2, resolution=3, splits=("test",), convexity=6))
    origin = s.origin()
    spectrum = hessian_spectrum(net, stack_batches(splits["test"], 32), iterations=6)
    assert s.values["test/lambda_max"][origin] == pytest.approx(spectrum.top[0], rel=1e-4)
    assert (s.values["test/eigen_ratio"] >= 0).all()


def test_surface_round_trips_through_its_files(tmp_path):
    x = np.linspace(-1, 1, 3)
    s = Surface([x, x], {"train/loss": np.arange(9.0).reshape(3, 3)}, path=np.zeros((2, 2)), info={"a": 1})
    s.save(tmp_path)
    back = Surface.load(tmp_path)
    np.testing.assert_array_equal(back.values["train/loss"], s.values["train/loss"])
    assert back.info == {"a": 1} and back.path.shape == (2, 2)
    with np.load(tmp_path / "surface.npz", allow_pickle=False) as f:
        assert set(f.files) == {"axis0", "axis1", "train__loss", "path"}


def test_custom_loss_function(splits):
    net = nn.Sequential(nn.Flatten(), nn.Linear(40, 1))
    data = {"train": torch.utils.data.TensorDataset(splits["train"].tensors[0], torch.randn(96, 1))}
    s = loss_surface(net, data, _cfg(dims=1, resolution=3, splits=("train",), ignore="none"), loss_fn=nn.MSELoss())
    assert s.values["train/loss"][1] == pytest.approx(evaluate(net, data["train"], loss_fn=nn.MSELoss())["loss"])
    assert np.isnan(s.values["train/accuracy"]).all()  # no accuracy for regression targets
