"""``effdl quantize --method rtn|gptq|awq|hqq`` and ``effdl prune --method wanda|sparsegpt --n-m`` on a small
language model."""

import json

import jsonschema
import pytest
import torch
from torch import nn

from effdl.cli.main import main
from effdl.core import report_schema
from effdl.data import get_dataset
from effdl.models import create_model, load_model, save_model
from effdl.quant import weight_only_layers
from effdl.train import TrainConfig, Trainer, evaluate


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "model.safetensors"
    torch.manual_seed(0)
    data = get_dataset("pysource")
    model = create_model("test_gpt", input_shape=data.input_shape, num_classes=data.num_classes)
    subset = torch.utils.data.Subset(data.train, range(256))
    Trainer(model, TrainConfig(epochs=1, lr=1e-2, batch_size=32, progress=False)).fit(subset)
    save_model(model, path, meta={"dataset": "pysource"})
    return path


def _run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_quantize_gptq_int4_prints_perplexity_and_saves_a_reloadable_model(lm, tmp_path, capsys):
    out_dir = tmp_path / "gptq"
    args = ["--method", "gptq", "--bits", "4", "--group-size", "32", "--calibration-batches", "2", "--repeats", "3"]
    code, out = _run(capsys, "-q", "quantize", "--checkpoint", str(lm), *args, "--out", str(out_dir))
    assert code == 0, out
    assert "bits per weight" in out and "int4pack x5" in out and "perplexity:" in out
    assert "float: tok_emb" in out
    report = json.loads((out_dir / "report.json").read_text())
    jsonschema.validate(report, report_schema())
    model = load_model(report["artifacts"]["final_model"])
    assert len(weight_only_layers(model)) == 5
    loss = evaluate(model, get_dataset("pysource").test)["loss"]
    assert report["after"]["perplexity"] == pytest.approx(torch.tensor(loss).exp().item(), rel=1e-5)
    assert report["after"]["perplexity"] < 1.2 * report["before"]["perplexity"]


def test_prune_wanda_2_4_keeps_the_pattern(lm, tmp_path, capsys):
    out_dir = tmp_path / "wanda"
    code, out = _run(capsys, "-q", "prune", "--checkpoint", str(lm), "--method", "wanda", "--n-m", "2:4",
                     "--calibration-batches", "2", "--repeats", "3", "--out", str(out_dir))  # fmt: skip
    assert code == 0, out
    assert "sparsity of the pruned layers: 50.00%" in out and "right after pruning" in out
    model = load_model(json.loads((out_dir / "report.json").read_text())["artifacts"]["final_model"])
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Linear):
            assert bool(((layer.weight.reshape(layer.out_features, -1, 4) != 0).sum(-1) <= 2).all()), name


def test_bad_options_exit_2(lm, tmp_path, capsys):
    code, err = _run(capsys, "quantize", "--checkpoint", str(lm), "--method", "rtn", "--bits", "3",
                   "--out", str(tmp_path / "b"))  # fmt: skip
    assert code == 2 and "bits must be one of (4, 8)" in err
    code, err = _run(capsys, "prune", "--checkpoint", str(lm), "--method", "l1", "--n-m", "2:4",
                   "--out", str(tmp_path / "c"))  # fmt: skip
    assert code == 2 and "--n-m applies to magnitude" in err
