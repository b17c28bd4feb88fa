import json

import pytest
import torch
from torch import nn

from effdl.core import ConfigError
from effdl.measure import LatencyStats, measure_latency, peak_forward_memory, profile, serialized_size


def test_latency_stats_from_known_samples():
    s = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 100.0], batch_size=8, threads=2, warmup=3)
    assert s.median_ms == 3.0 and s.min_ms == 1.0 and s.max_ms == 100.0 and s.repeats == 5
    assert s.iqr_ms > 0


def test_measure_latency_records_settings_and_restores_threads():
    before = torch.get_num_threads()
    model = nn.Linear(16, 16).train()
    s = measure_latency(model, torch.zeros(4, 16), warmup=2, repeats=7, threads=1)
    assert (s.repeats, s.warmup, s.batch_size, s.threads) == (7, 2, 4, 1)
    assert s.min_ms <= s.median_ms <= s.max_ms
    assert torch.get_num_threads() == before and model.training  # state restored
    with pytest.raises(ConfigError, match="repeats"):
        measure_latency(model, torch.zeros(1, 16), repeats=0)


def test_peak_memory_is_exact_for_a_chain():
    model = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10))
    s = peak_forward_memory(model, torch.zeros(4, 100))
    assert s.weights_bytes == 4 * (100 * 200 + 200 + 200 * 10 + 10)
    assert s.inputs_bytes == 4 * 4 * 100
    # while ReLU runs, the first Linear's (4, 200) output and ReLU's own output are both alive
    assert s.peak_activation_bytes == 2 * 4 * 4 * 200
    assert s.peak_bytes == s.weights_bytes + s.inputs_bytes + s.peak_activation_bytes


def test_inplace_ops_do_not_double_count():
    model = nn.Sequential(nn.Linear(100, 200), nn.ReLU(inplace=True))
    assert peak_forward_memory(model, torch.zeros(4, 100)).peak_activation_bytes == 4 * 4 * 200


def test_serialized_size_tracks_parameters():
    small, big = serialized_size(nn.Linear(10, 10)), serialized_size(nn.Linear(100, 100))
    assert 440 <= small < 440 + 200  # 110 floats + header
    assert abs((big - small) - 4 * (10100 - 110)) <= 16  # headers differ by padding only


def test_profile_json_and_layer_latency():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 38, 2))
    p = profile(model, torch.zeros(2, 1, 40), repeats=3, warmup=1, layer_latency=True, threads=1)
    d = json.loads(p.to_json())
    assert d["latency"]["batch_size"] == 2 and d["latency"]["threads"] == 1
    assert d["memory"]["peak_bytes"] == p.memory.peak_bytes
    assert all(layer.latency_ms is not None and layer.latency_ms >= 0 for layer in p.layers if layer.name)
    summary = p.summary(accuracy=0.5)
    assert summary.macs == p.macs and summary.batch_size == 2 and summary.accuracy == 0.5
