"""A fault in the last step of a transform leaves the user's model exactly as it was (modules, tensors, outputs)."""

import copy

import pytest
import torch

import effdl.factorize.api as factorize_api
import effdl.prune.api as prune_api
import effdl.quant.api as quant_api
from effdl.factorize import LowRankConfig, factorize_
from effdl.models.real import real_model
from effdl.prune import StructuredPruneConfig, prune_
from effdl.quant import QuantConfig, quantize_


class Fault(RuntimeError):
    pass


def fail_on_call(n):
    """A stand-in that raises on its n-th call (the earlier calls return nothing useful, and are not reached)."""
    calls = {"n": 0}

    def fake(original):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] >= n:
                raise Fault("injected")
            return original(*args, **kwargs)

        return wrapper

    return fake


CASES = {
    # (module, function called last by the handler, its call count at the end, the verb and config)
    "prune": (prune_api, "measure_summary", 2,
              lambda m, x: prune_(m, StructuredPruneConfig(ratio=0.5), example_inputs=x)),
    "factorize": (factorize_api, "profile", 2,
                  lambda m, x: factorize_(m, LowRankConfig(selector="fixed", rank=4), example_inputs=x)),
    "quantize": (quant_api, "_summary", 2, lambda m, x: quantize_(m, QuantConfig(), example_inputs=x)),
}  # fmt: skip


@pytest.mark.parametrize("model_name", ["torch_encoder", "resnet"])
@pytest.mark.parametrize("verb", list(CASES))
def test_fault_in_the_last_step_restores_the_model(verb, model_name, monkeypatch):
    if model_name == "resnet":
        pytest.importorskip("transformers", reason="the Hugging Face model needs the hf extra")
    module, name, n, run = CASES[verb]
    model, x = real_model(model_name)
    before = copy.deepcopy(model)
    ref = model(x) if isinstance(model(x), torch.Tensor) else model(x)[0]
    monkeypatch.setattr(module, name, fail_on_call(n)(getattr(module, name)))
    with pytest.raises(Fault):
        run(model, x)
    assert [type(m) for m in model.modules()] == [type(m) for m in before.modules()]
    sd, sd0 = model.state_dict(), before.state_dict()
    assert sd.keys() == sd0.keys() and all(torch.equal(sd[k], sd0[k]) for k in sd)
    out = model(x) if isinstance(model(x), torch.Tensor) else model(x)[0]
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
