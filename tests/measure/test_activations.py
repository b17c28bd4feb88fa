"""Calibration statistics of layer inputs, and per-token evaluation of sequence outputs."""

import torch
from torch import nn

from effdl.measure.activations import collect_input_stats, execution_order, layer_by_layer
from effdl.measure.evaluation import evaluate


def test_statistics_equal_their_definitions_over_batches_and_positions():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    batches = [(torch.randn(5, 7, 3),), (torch.randn(2, 7, 3),)]
    stats = collect_input_stats(model, {"0": model[0], "2": model[2]}, batches, gram=True, max_sample=10)
    x = torch.cat([b[0].reshape(-1, 3) for b in batches])
    s = stats["0"]
    assert s.rows == 49 and s.sample.shape == (10, 3)
    torch.testing.assert_close(s.hessian(), 2 * x.double().T @ x.double() / 49)
    torch.testing.assert_close(s.feature_norm(), x.double().norm(dim=0))
    torch.testing.assert_close(s.mean_abs(), x.double().abs().mean(0))


def test_sequential_schedule_sees_the_earlier_layers_transformed():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    nn.init.eye_(model[0].weight)
    seen = {}

    def zero_and_record(name, layer, stats):
        seen[name] = float(stats.abs_sum.sum())
        layer.weight.data.zero_()

    assert execution_order(model, {"1": model[1], "0": model[0]}, (torch.ones(1, 2),)) == (["0", "1"], True)
    layer_by_layer(model, dict(model.named_children()), [(torch.ones(3, 2),)], zero_and_record, sequential=True)
    assert seen == {"0": 6.0, "1": 0.0}  # layer 1 saw the output of the already-zeroed layer 0


def test_evaluate_counts_every_position_of_a_sequence_model():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 6)  # (batch, classes, positions)
    targets = torch.randint(0, 5, (4, 6))
    model = nn.Identity()
    got = evaluate(model, [(logits, targets)])
    ref = nn.functional.cross_entropy(logits, targets)
    assert abs(got["loss"] - float(ref)) < 1e-6
    assert got["accuracy"] == int((logits.argmax(1) == targets).sum()) / 24
