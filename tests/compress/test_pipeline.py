import json

import jsonschema
import pytest
import torch

from effdl.compress import FinetuneConfig, Recipe, compress_model, sweep
from effdl.core import ConfigError, report_schema
from effdl.data import get_dataset
from effdl.factorize import LowRankConfig
from effdl.measure import MeasureConfig
from effdl.models import create_model, load_model
from effdl.prune import L1FilterPruneConfig, MagnitudePruneConfig
from effdl.quant import Int8Config, Int8Model
from effdl.train import TrainConfig, Trainer, evaluate

pytest.importorskip("onnxruntime")

FAST = MeasureConfig(batch_size=32, repeats=3)


@pytest.fixture(scope="module")
def setup():
    data = get_dataset("mnist1d")
    torch.manual_seed(0)
    model = create_model("test_cnn1d", channels=(16, 16))
    Trainer(model, TrainConfig(epochs=2, lr=1e-2, batch_size=128, progress=False)).fit(data.train)
    return model.eval(), data


def _run(setup, recipe, out, **kw):
    model, data = setup
    return compress_model(model, data, recipe, out_dir=out, measure=FAST, progress=False, **kw)


def test_recipe_runs_end_to_end_with_reports_and_onnx(setup, tmp_path):
    recipe = Recipe([
        L1FilterPruneConfig(ratio=0.5),
        FinetuneConfig(train={"epochs": 1}),
        LowRankConfig(selector="fixed", rank=4, ignore=("classifier",)),
    ])  # fmt: skip
    model, data = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = _run(setup, recipe, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is untouched
    assert [s.name.split(". ")[-1] for s in result.stages] == [
        "baseline", "prune structured l1 50%", "finetune 1 epochs", "factorize fixed",
    ]  # fmt: skip
    assert result.stages[-1].summary.params < result.stages[0].summary.params
    report = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(report, report_schema())
    assert len(report["details"]["stages"]) == 4
    md = (tmp_path / "report.md").read_text()
    assert "| stage" in md and "Deployment" in md and "pareto.png" in md
    assert (tmp_path / "pareto.png").stat().st_size > 0
    d = result.deployment
    assert d.agreement == 1.0 and set(d.runtimes_ms) == {"pytorch", "onnxruntime"} and d.best in d.runtimes_ms
    final = load_model(tmp_path / "final" / "model.safetensors")
    assert torch.equal(final(data.example_inputs(4)), result.model(data.example_inputs(4)))


def test_int8_last_step_and_sparse_finetune(setup, tmp_path):
    recipe = Recipe([
        MagnitudePruneConfig(ratio=0.7),
        FinetuneConfig(train={"epochs": 1}),
        Int8Config(runtime="torch-ao"),
    ])  # fmt: skip
    result = _run(setup, recipe, tmp_path)
    tuned = load_model(tmp_path / "steps" / "02-finetune" / "model.safetensors")
    weights = [m.weight for m in tuned.modules() if isinstance(m, torch.nn.Conv1d | torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros >= 0.69  # fine-tuning kept the pruned weights at zero
    assert isinstance(result.model, Int8Model) and result.stages[-1].runtime == "torch-ao int8"
    assert set(result.deployment.runtimes_ms) == {"torch-ao int8", "onnxruntime int8"}
    assert result.deployment.agreement > 0.9  # two int8 implementations of a weak model: near ties differ
    assert (tmp_path / "final" / "model.onnx").exists()
    assert result.stages[-1].summary.size_bytes < 0.4 * result.stages[0].summary.size_bytes


def test_an_int8_model_only_onnxruntime_runs_is_deployed_and_reported(setup, tmp_path):
    model, _ = setup
    last = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    recipe = Recipe([Int8Config(runtime="onnxruntime", ignore=(last,))])  # torch-ao cannot leave a layer float
    result = _run(setup, recipe, tmp_path)
    d = result.deployment
    assert set(d.runtimes_ms) == {"onnxruntime int8"} and d.agreement is None
    assert "no second runtime could run this model" in (tmp_path / "report.md").read_text()


def test_rerun_continues_and_other_recipe_is_refused(setup, tmp_path):
    one = Recipe([L1FilterPruneConfig(ratio=0.5)])
    first = _run(setup, one, tmp_path)
    again = _run(setup, one, tmp_path)  # everything is done: only deploys and reports again
    assert [s.to_dict()["summary"] for s in again.stages] == [s.to_dict()["summary"] for s in first.stages]
    other = Recipe([L1FilterPruneConfig(ratio=0.25)])
    with pytest.raises(ConfigError, match=r"recipe\.0\.ratio=0\.5 there"):
        _run(setup, other, tmp_path)
    _, data = setup
    changed = create_model("test_cnn1d", channels=(16, 16))  # same architecture, other weights
    with pytest.raises(ConfigError, match=r"model\.weights=.* there"):
        compress_model(changed, data, one, out_dir=tmp_path, measure=FAST, progress=False)
    restarted = _run(setup, other, tmp_path, restart=True)
    assert restarted.stages[-1].name.endswith("25%")


def test_sweep_marks_the_pareto_front(setup, tmp_path):
    model, data = setup
    recipe = Recipe([L1FilterPruneConfig(ratio=0.5)], name="p")
    points = sweep(model, data, recipe, {"steps.0.ratio": [0.25, 0.75]}, out_dir=tmp_path, measure=FAST,
                   progress=False)  # fmt: skip
    assert [p.settings["steps.0.ratio"] for p in points] == [0.25, 0.75]
    assert points[0].size_bytes > points[1].size_bytes
    assert "Pareto" in (tmp_path / "sweep.md").read_text() and (tmp_path / "pareto.png").exists()
    acc = evaluate(load_model(f"{points[1].out_dir}/final/model.safetensors"), data.test)["accuracy"]
    assert acc == pytest.approx(points[1].accuracy)
    with pytest.raises(ConfigError, match="not a step index"):
        sweep(model, data, recipe, {"steps.3.ratio": [0.5]}, out_dir=tmp_path / "bad")


def test_the_previous_measurement_keywords_still_work(monkeypatch):
    from effdl.compress.pipeline import legacy_measure

    monkeypatch.setattr("effdl.core.deprecation._WARNED", set())
    with pytest.warns(FutureWarning, match="measure=MeasureConfig"):
        assert legacy_measure(None, {"batch_size": 8}, "compress_model") == MeasureConfig(batch_size=8, repeats=30)
    assert legacy_measure(None, {}, "sweep") == MeasureConfig(batch_size=32, repeats=30)
    with pytest.raises(TypeError, match="unexpected keyword"):
        legacy_measure(None, {"batchsize": 8}, "compress_model")
    with pytest.raises(ConfigError, match="not both"):
        legacy_measure(FAST, {"repeats": 3}, "compress_model")
