import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from effdl.cli.main import main
from effdl.compress import FinetuneConfig, Recipe, compress_model
from effdl.core import load_checkpoint
from effdl.data import get_dataset
from effdl.distill import DistillConfig
from effdl.measure import MeasureConfig
from effdl.models import load_model
from effdl.prune import L1FilterPruneConfig
from effdl.quant import Int8Config, load_int8

pytest.importorskip("onnxruntime")

RECIPE = Recipe(
    [
        L1FilterPruneConfig(ratio=0.5),
        FinetuneConfig(train={"epochs": 2}, distill=DistillConfig(alpha=0.5)),
        Int8Config(runtime="onnxruntime"),
    ],
    name="test",
)


def _cli(*args):
    return ["-q", "compress", *map(str, args), "--repeats", "3", "--no-progress"]


def _same(a, b):
    ta, _ = load_checkpoint(a)
    tb, _ = load_checkpoint(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    """The recipe run from Python, uninterrupted."""
    out = tmp_path_factory.mktemp("python")
    fast = MeasureConfig(batch_size=32, repeats=3)
    compress_model(load_model(trained), get_dataset("mnist1d"), RECIPE, out_dir=out, measure=fast, progress=False)
    return out


def test_recipe_saved_from_python_gives_the_same_model_in_the_cli(trained, reference, tmp_path, capsys):
    path = RECIPE.save(tmp_path / "recipe.yaml")
    assert main(_cli(path, "--checkpoint", trained, "--out", tmp_path / "cli")) == 0
    out = capsys.readouterr().out
    assert "| stage" in out and "deployment at batch 32" in out and "report:" in out
    for step in ("01-l1-filter-prune", "02-finetune"):
        assert _same(
            reference / "steps" / step / "model.safetensors", tmp_path / "cli" / "steps" / step / "model.safetensors"
        )
    x = get_dataset("mnist1d").example_inputs(64)
    q1, q2 = load_int8(reference / "final" / "model.onnx"), load_int8(tmp_path / "cli" / "final" / "model.onnx")
    assert torch.equal(q1(x), q2(x))


@pytest.mark.slow  # a killed subprocess: run with -m slow
def test_killed_compress_resumes_from_the_last_finished_step(trained, reference, tmp_path, caplog, monkeypatch):
    recipe = RECIPE.save(tmp_path / "recipe.yaml")
    out = tmp_path / "killed"
    killer = textwrap.dedent(f"""
        import os
        from effdl.cli.main import main
        from effdl.train.loop import Trainer

        step = Trainer._step
        calls = []

        def dying(self, net, batch):
            calls.append(1)
            if len(calls) == 80:  # in the second epoch (63 steps each) of the fine-tuning step
                os._exit(9)
            return step(self, net, batch)

        Trainer._step = dying
        main({_cli(recipe, "--checkpoint", trained, "--out", out)!r})
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", killer], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert (out / "steps" / "01-l1-filter-prune" / "model.safetensors").exists()
    assert not (out / "steps" / "02-finetune" / "model.safetensors").exists()
    pruned_time = (out / "steps" / "01-l1-filter-prune" / "model.safetensors").stat().st_mtime_ns
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # resumed from another working directory, with a relative --out
    with caplog.at_level(logging.INFO, logger="effdl"):
        assert main(["-v", *_cli(recipe, "--checkpoint", trained, "--out", "../killed")]) == 0
    assert "continuing" in caplog.text and "resumed from" in caplog.text
    assert (out / "steps" / "01-l1-filter-prune" / "model.safetensors").stat().st_mtime_ns == pruned_time  # not redone
    assert _same(
        reference / "steps" / "02-finetune" / "model.safetensors", out / "steps" / "02-finetune" / "model.safetensors"
    )


def test_bad_recipe_and_other_recipe_in_the_same_folder(trained, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n- step: prune\n  config: {ratio: 2}\n")
    assert main(_cli(bad, "--checkpoint", trained, "--out", tmp_path / "a")) == 2
    assert "recipe step 1 (StructuredPruneConfig): ratio must be in" in capsys.readouterr().err
    one = Recipe([L1FilterPruneConfig(ratio=0.5)]).save(tmp_path / "one.yaml")
    two = Recipe([L1FilterPruneConfig(ratio=0.25)]).save(tmp_path / "two.yaml")
    assert main(_cli(one, "--checkpoint", trained, "--out", tmp_path / "b")) == 0
    assert main(_cli(two, "--checkpoint", trained, "--out", tmp_path / "b")) == 2
    assert "recipe.0.ratio=0.5 there" in capsys.readouterr().err
    assert main(_cli(two, "--checkpoint", trained, "--out", tmp_path / "b", "--restart")) == 0


def test_sweep_cli(trained, tmp_path, capsys):
    one = Recipe([L1FilterPruneConfig(ratio=0.5)], name="p").save(tmp_path / "one.yaml")
    args = ["-q", "sweep", str(one), "--checkpoint", str(trained), "--set", "steps.0.ratio=0.25,0.5",
            "--out", str(tmp_path / "s"), "--repeats", "3", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ratio=0.25" in out and "ratio=0.5" in out and "Pareto" in out
    bad = ["-q", "sweep", str(one), "--checkpoint", str(trained), "--set", "ratio", "--out", str(tmp_path / "t")]
    assert main(bad) == 2
    assert "--set takes FIELD=V1,V2" in capsys.readouterr().err
