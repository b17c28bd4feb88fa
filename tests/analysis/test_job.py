import json

import jsonschema
import numpy as np
import pytest
import torch

from effdl.analysis import (
    LandscapeConfig,
    SharpnessConfig,
    curve_curvature,
    landscape_report,
    load_directions,
    random_directions,
    sharpness_report,
)
from effdl.core import report_schema
from effdl.core.errors import ConfigError


def _cfg(**kw):
    return LandscapeConfig(**{"progress": False, "batch_size": 32, "resolution": 5, **kw})


def test_2d_report_writes_grid_directions_plots_and_a_valid_report(net, splits, tmp_path):
    surface, _report = landscape_report(net, splits, _cfg(), out_dir=tmp_path, model_name="test_cnn1d")
    for name in ("surface.npz", "surface.json", "directions.safetensors", "contour.png", "contour_filled.png",
                 "surface_3d.png", "report.json"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    doc = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(doc, report_schema())
    assert doc["details"]["train/loss"]["at_origin"] == pytest.approx(surface.values["train/loss"][2, 2])
    saved = load_directions(tmp_path / "directions.safetensors")
    for a, b in zip(saved, random_directions(net, 2), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in b)


def test_1d_report_has_curvature(net, splits, tmp_path):
    surface, report = landscape_report(net, splits, _cfg(dims=1, resolution=9), out_dir=tmp_path)
    assert (tmp_path / "landscape_1d.png").exists()
    assert report.details["train/curvature"] == pytest.approx(curve_curvature(surface, radius=0.25))


def test_trajectory_report_covers_the_path(net, splits, tmp_path):
    final = net.state_dict()
    g = torch.Generator().manual_seed(0)
    path = [{k: v + (0.05 * (4 - i) * torch.randn(v.shape, generator=g) if v.is_floating_point() else v)
             for k, v in final.items()} for i in range(4)]  # fmt: skip
    surface, report = landscape_report(net, splits, _cfg(splits=("train",)), out_dir=tmp_path, snapshots=path)
    assert surface.path.shape == (4, 2)
    x, y = surface.axes
    assert x.min() <= surface.path[:, 0].min() and x.max() >= surface.path[:, 0].max()
    assert y.min() <= surface.path[:, 1].min() and y.max() >= surface.path[:, 1].max()
    assert report.config["mode"] == "trajectory" and len(report.details["explained_variance"]) == 2


def test_modes_are_checked(net, splits, tmp_path):
    with pytest.raises(ConfigError, match="1D"):
        landscape_report(net, splits, _cfg(dims=2), out_dir=tmp_path, other=net)
    with pytest.raises(ConfigError, match="not both"):
        landscape_report(net, splits, _cfg(dims=1), out_dir=tmp_path, other=net, snapshots=[])


def test_sharpness_report(net, splits):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = SharpnessConfig(top_k=2, iterations=8, trace_samples=2, ascent_steps=2, max_examples=64, batch_size=32)
    report = sharpness_report(net, splits, cfg)
    d = report.details
    assert d["examples"] == 64 and d["top_eigenvalues"][0] >= d["top_eigenvalues"][1] >= d["lambda_min"]
    assert d["eigen_ratio"] == pytest.approx(abs(d["lambda_min"] / d["lambda_max"]))
    assert d["epsilon_sharpness"] >= 0 and np.isfinite(d["hessian_trace"])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    jsonschema.validate(report.to_dict(), report_schema())
    with pytest.raises(ConfigError, match="no split"):
        sharpness_report(net, splits, SharpnessConfig(split="valid"))
    with pytest.raises(ConfigError, match="iterations > top_k"):
        SharpnessConfig(top_k=5, iterations=4)
