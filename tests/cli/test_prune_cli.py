import json

import jsonschema
import pytest
import torch

from effdl.cli.main import main
from effdl.compress import FinetuneConfig, Recipe, compress_model
from effdl.core import load_checkpoint, report_schema
from effdl.data import get_dataset
from effdl.measure import MeasureConfig
from effdl.models import load_model
from effdl.prune import MagnitudePruneConfig, StructuredPruneConfig, load_sparse_state_dict


def _run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_structured_prune_finetune_prints_before_after(trained, tmp_path, capsys):
    out_dir = tmp_path / "p"
    code, out, _ = _run(
        capsys, "-q", "prune", "--checkpoint", str(trained), "--method", "l1", "--ratio", "0.5",
        "--finetune-epochs", "1", "--no-progress", "--repeats", "3", "--out", str(out_dir),
    )  # fmt: skip
    assert code == 0, out
    assert "| features.0 | channels |     32 |    16 |" in out
    assert "MACs / example" in out and "before/after" in out
    report = json.loads((out_dir / "report.json").read_text())
    jsonschema.validate(report, report_schema())
    assert report["after"]["macs"] < report["before"]["macs"] / 3.5
    assert [s["name"] for s in report["details"]["stages"]] == [
        "baseline", "1. prune structured l1 50%", "2. finetune 1 epochs",
    ]  # fmt: skip
    assert len(report["details"]["stages"][-1]["details"]["history"]) == 1
    model = load_model(out_dir / "final" / "model.safetensors")
    assert model.features[0].out_channels == 16
    assert model(torch.zeros(1, 1, 40)).shape == (1, 10)


def test_magnitude_writes_sparse_file(trained, tmp_path, capsys):
    out_dir = tmp_path / "m"
    code, out, _ = _run(
        capsys, "-q", "prune", "--checkpoint", str(trained), "--method", "magnitude", "--ratio", "0.9",
        "--global", "--no-progress", "--repeats", "2", "--out", str(out_dir),
    )  # fmt: skip
    assert code == 0, out
    dense = (out_dir / "final" / "model.safetensors").stat().st_size
    sparse = (out_dir / "final" / "model.sparse.safetensors").stat().st_size
    assert sparse < dense / 4
    sd = load_sparse_state_dict(out_dir / "final" / "model.sparse.safetensors")
    assert (sd["features.3.weight"] == 0).float().mean() > 0.5


def test_prune_with_finetune_equals_the_recipe_of_prune_then_finetune(trained, tmp_path, capsys):
    cli = tmp_path / "cli"
    code, out, _ = _run(
        capsys, "-q", "prune", "--checkpoint", str(trained), "--method", "l1", "--ratio", "0.5",
        "--finetune-epochs", "2", "--lr", "0.005", "--no-progress", "--repeats", "2", "--out", str(cli),
    )  # fmt: skip
    assert code == 0, out
    recipe = Recipe([StructuredPruneConfig(ratio=0.5), FinetuneConfig(train={"epochs": 2, "lr": 0.005})])
    py = compress_model(load_model(trained), get_dataset("mnist1d"), recipe, out_dir=tmp_path / "py",
                        measure=MeasureConfig(repeats=2), deploy_final=False, progress=False)  # fmt: skip
    a, _ = load_checkpoint(cli / "final" / "model.safetensors")
    b, _ = load_checkpoint(py.stages[-1].path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical weights


def test_cli_scope_defaults_to_the_library_defaults(trained, tmp_path, capsys):
    for method, cls in (("magnitude", MagnitudePruneConfig), ("l1", StructuredPruneConfig)):
        out = tmp_path / method
        code, text, _ = _run(capsys, "-q", "prune", "--checkpoint", str(trained), "--method", method, "--ratio", "0.5",
                             "--no-progress", "--repeats", "2", "--out", str(out))  # fmt: skip
        assert code == 0, text
        step = json.loads((out / "report.json").read_text())["config"]["recipe"]["steps"][0]
        assert step["scope"] == cls().scope


def test_sensitivity_flag_derives_ratios(trained, tmp_path, capsys):
    code, out, _ = _run(
        capsys, "-q", "prune", "--checkpoint", str(trained), "--sensitivity", "0.05", "--no-progress",
        "--repeats", "2", "--out", str(tmp_path / "s"),
    )  # fmt: skip
    assert code == 0, out
    assert "accuracy drop" in out and (tmp_path / "s" / "sensitivity.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratio", "1.5"], "ratio must be in [0.0, 1.0), got ratio=1.5; use ratio=0.5"),
        (["--per-layer", "classifier=0.5"], "'classifier' cannot be pruned"),
        (["--per-layer", "nope=0.5"], "matches no prunable layer"),
    ],
)
def test_bad_input_exits_2_with_message(trained, tmp_path, capsys, args, message):
    code, _, err = _run(capsys, "prune", "--checkpoint", str(trained), "--out", str(tmp_path), "--no-progress", *args)
    assert code == 2
    assert message in err
