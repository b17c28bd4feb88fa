"""Checkpoints written before structure records (effdl checkpoint version 1, committed fixtures made by the previous
code: pruned + factorized, pruned + QAT W4A4 with LSQ, pruned torch-ao int8) still load and compute what they did."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from effdl.core import read_metadata
from effdl.factorize import factorized_layers
from effdl.models import checkpoint_structure, load_model, save_model
from effdl.quant import load_int8, quantized_layers

FIXTURES = Path(__file__).with_name("fixtures")
EXPECTED = load_file(FIXTURES / "v1-expected-outputs.safetensors")
# The fixtures' outputs were computed on another CPU: float kernels may round differently per instruction set
# (a few ULPs, ~1e-8 here); a wrong load is off by far more. Same-machine comparisons below stay exact.
ULPS = {"atol": 1e-6, "rtol": 1e-5}


def test_v1_pruned_and_factorized_checkpoint_loads_and_matches():
    model = load_model(FIXTURES / "v1-pruned-factorized.safetensors")
    assert set(factorized_layers(model)) == {"features.3", "classifier"}
    with torch.no_grad():
        torch.testing.assert_close(model(EXPECTED["x"]), EXPECTED["pruned_factorized"], **ULPS)


def test_v1_quantized_checkpoint_loads_and_matches_and_resaves_in_the_new_format(tmp_path):
    model = load_model(FIXTURES / "v1-pruned-qat-w4a4.safetensors")
    assert {m.weight_quant.bits for m in quantized_layers(model).values()} == {4}
    with torch.no_grad():
        before = model(EXPECTED["x"])
    torch.testing.assert_close(before, EXPECTED["pruned_qat"], **ULPS)
    path = save_model(model, tmp_path / "new.safetensors")
    assert [r["kind"] for r in read_metadata(path)["structure"]] == ["fake-quant", "shapes"]
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(EXPECTED["x"]), before, atol=0, rtol=0)


def test_v1_int8_model_loads_and_matches():
    pytest.importorskip("torch.ao.quantization")
    q = load_int8(FIXTURES / "v1-pruned-int8.safetensors")
    torch.testing.assert_close(q(EXPECTED["x"]), EXPECTED["int8"], atol=0, rtol=0)


def test_legacy_metadata_becomes_records():
    meta = {"structure": "pruned", "float_shapes": {"fc.weight": [2, 3]}, "quantization": {"bits_w": 4}}
    assert checkpoint_structure(meta) == [
        {"kind": "shapes", "shapes": {"fc.weight": [2, 3]}},
        {"kind": "fake-quant", "config": {"bits_w": 4}},
    ]


def test_pruned_shapes_never_grow_a_model_and_unchecked_resizes_are_logged(tmp_path, caplog):
    import logging

    from effdl.core import CheckpointError
    from effdl.models import create_model
    from effdl.prune import L1FilterPruneConfig, prune_

    x = torch.zeros(2, 1, 40)
    pruned = create_model("test_cnn1d", channels=(8, 8))
    prune_(pruned, L1FilterPruneConfig(ratio=0.5), example_inputs=x)
    path = save_model(pruned, tmp_path / "p.safetensors")
    with pytest.raises(CheckpointError, match="do not come from pruning this model"):
        load_model(path, model=create_model("test_cnn1d", channels=(2, 2)))  # narrower than the checkpoint
    plain = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))  # no spec
    prune_(plain, L1FilterPruneConfig(ratio=0.5), example_inputs=torch.zeros(2, 4))
    path = save_model(plain, tmp_path / "plain.safetensors")
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with caplog.at_level(logging.WARNING, logger="effdl"):
        again = load_model(path, model=fresh)
    assert again[0].out_features == 4 and "no model spec to confirm" in caplog.text
    assert torch.equal(again(torch.ones(1, 4)), plain.eval()(torch.ones(1, 4)))
