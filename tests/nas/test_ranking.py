import json

import numpy as np
import pytest
import torch

from effdl.core.errors import CheckpointError, UnknownNameError
from effdl.nas import evaluate_proxies, get_space, kendall_tau, load_ground_truth, spearman_rho
from effdl.nas.ranking import GroundTruth


def _synthetic(n=12):
    space = get_space("mnist1d_cnn")
    g = torch.Generator().manual_seed(0)
    codes = []
    while len(codes) < n:
        c = space.sample(g).encode()
        if c not in codes:
            codes.append(c)
    from effdl.measure import count_macs, count_params

    records = []
    for c in codes:
        m = space.build(c)
        p = count_params(m)
        records.append(
            {"arch": c, "test_accuracy": 0.5 + 0.4 * np.log(p) / 12, "macs": count_macs(m, torch.zeros(1, 1, 40))}
        )
    return GroundTruth("synthetic", "mnist1d_cnn", records, {})


def _batches():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 1, 40, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(2)]


def test_rank_correlations_match_definitions():
    a, b = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    # tau = (concordant - discordant) / pairs = (8 - 2) / 10
    assert kendall_tau(a, b) == pytest.approx(0.6)
    assert spearman_rho(a, b) == pytest.approx(1 - 6 * 4 / (5 * 24))
    assert kendall_tau(a, a[::-1]) == pytest.approx(-1.0)


def test_evaluation_recovers_a_planted_ranking(tmp_path):
    gt = _synthetic()  # accuracy is a monotone function of the parameter count
    ev = evaluate_proxies(gt, _batches(), proxies=["params", "zico"], num_bands=2)
    corr = ev.correlations()
    assert corr["params"]["kendall_tau"] == pytest.approx(1.0)
    assert len(corr["params"]["bands"]) == 2
    assert sum(b["count"] for b in corr["params"]["bands"]) >= len(gt.records)
    assert "params" in ev.to_table().splitlines()[2]  # sorted by tau, best first
    assert ev.plot(tmp_path / "s.png").exists()
    doc = ev.to_dict()
    assert doc["architectures"] == 12 and len(doc["scores"]["zico"]) == 12
    json.dumps(doc)
    with pytest.raises(UnknownNameError):
        evaluate_proxies(gt, _batches(), proxies=["nope"])


def test_ground_truth_files(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"name": "x", "space": "mnist1d_cnn", "architectures": [{"arch": "c4_k3_s1_r0"}]}))
    with pytest.raises(CheckpointError, match="not a ground-truth file"):
        load_ground_truth(path)
    with pytest.raises(CheckpointError, match="no ground-truth file"):
        load_ground_truth(tmp_path / "missing.json")


def test_the_committed_ground_truth():
    gt = load_ground_truth()
    assert len(gt.records) >= 200 and gt.space == "mnist1d_cnn"
    assert len({r["arch"] for r in gt.records}) == len(gt.records)
    acc = gt.column("test_accuracy")
    assert 0.1 < acc.min() < acc.max() <= 1.0 and acc.std() > 0.02  # a spread worth ranking
    assert all(r["latency_ms"] > 0 and r["params"] > 0 for r in gt.records)


def test_train_architectures_reproduces_the_committed_ground_truth():
    from effdl.nas import train_architectures
    from effdl.scale import ExecutorConfig

    gt = load_ground_truth()
    smallest = min(gt.records, key=lambda r: r["macs"])
    out = train_architectures([smallest["arch"]], executor=ExecutorConfig(threads=1), progress=False)
    assert out.records[0]["test_accuracy"] == smallest["test_accuracy"]
    assert out.records[0]["train_accuracy"] == smallest["train_accuracy"]
