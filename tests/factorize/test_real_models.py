"""Factorization on the models users bring: torch's transformer layers keep working, tied weights are never untied,
and every weight-matrix layer left dense is reported with its reason."""

import pytest
import torch
from torch import nn

from effdl.factorize import LowRankConfig, factorize_
from effdl.factorize.layers import LowRank
from effdl.models.real import real_model


def test_transformer_encoder_layer_factorized_at_full_rank_computes_the_same():
    model, x = real_model("torch_encoder")
    ref = model(x)
    report = factorize_(model, LowRankConfig(selector="fixed", rank=64, only_if_smaller=False), example_inputs=x)
    assert isinstance(model.encoder.layers[0].linear1, LowRank)  # torch's fused kernel would read .weight and fail
    torch.testing.assert_close(model(x), ref, atol=1e-4, rtol=1e-4)
    reasons = {e["layer"]: e["reason"] for e in report.details["left_out"]}
    assert reasons["encoder.layers.0.self_attn"] == "no low-rank form for MultiheadAttention"


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.mid = nn.Linear(32, 32)
        self.head = nn.Linear(32, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.relu(self.mid(self.emb(ids))))


def test_tied_weights_are_never_untied_or_grown():
    model, x = TiedLM(), torch.randint(0, 50, (2, 6))
    n = sum(p.numel() for p in model.parameters())
    report = factorize_(model, LowRankConfig(selector="fixed", rank=4), example_inputs=x)
    assert model.head.weight is model.emb.weight
    assert isinstance(model.mid, LowRank)
    assert sum(p.numel() for p in model.parameters()) < n
    assert {"layer": "head", "reason": "its weight is tied to emb"} in report.details["left_out"]


def test_a_full_rank_factorization_that_changes_the_map_is_refused_and_restored(monkeypatch):
    import effdl.factorize.api as api
    from effdl.core.errors import UnsupportedError

    real = api.factorize_layer

    def broken(module, kind, ranks, **kw):
        f = real(module, kind, ranks, **kw)
        with torch.no_grad():
            f[0].weight.mul_(1.01)  # a decomposition bug: 1% off
        return f

    monkeypatch.setattr(api, "factorize_layer", broken)
    model, x = real_model("torch_encoder")
    ref = model(x)
    with pytest.raises(UnsupportedError, match=r"full-rank factorization of 'encoder.layers.0.linear1'.*restored"):
        factorize_(model, LowRankConfig(selector="fixed", rank=64, only_if_smaller=False), example_inputs=x)
    assert not any(isinstance(m, LowRank) for m in model.modules())
    torch.testing.assert_close(model(x), ref, atol=0, rtol=0)
