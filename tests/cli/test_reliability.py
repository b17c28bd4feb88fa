"""The reliability suite of the command line: bad inputs, faults and attacks each end in one clear error line (exit
2), never a traceback, and never change or lose a user's files. docs/reliability.md lists what it covers; the cases
that kill processes are in tests/cli/test_reliability_processes.py (slow)."""

import errno
import json

import numpy as np
import pytest
import torch

from effdl.core import load_checkpoint, save_checkpoint
from effdl.models import create_model, save_model
from tests.helpers import assert_refused as _refused
from tests.helpers import run_cli as _run

QUICK = ["--no-progress", "--repeats", "2"]


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """A second cnn1d checkpoint (other weights) for the mixed-inputs cases."""
    path = tmp_path_factory.mktemp("other") / "model.safetensors"
    torch.manual_seed(1)
    return save_model(create_model("cnn1d"), path, meta={"dataset": "mnist1d"})


def test_restart_on_a_foreign_folder_is_refused_and_files_stay(trained, tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("my own work")
    _refused(capsys, "compress", "default", "--checkpoint", trained, "--out", tmp_path, "--restart", *QUICK,
             message="was not written by effdl")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_restart_keeps_a_users_file_inside_effdls_folders(trained, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - {type: StructuredPruneConfig, ratio: 0.25}\n")
    out = tmp_path / "out"
    args = ["compress", recipe, "--checkpoint", trained, "--out", out, *QUICK]
    assert _run(capsys, *args)[0] == 0
    (out / "final" / "thesis.tex").write_text("my own work")
    assert _run(capsys, *args, "--restart")[0] == 0
    assert (out / "final" / "thesis.tex").read_text() == "my own work"
    assert (out / "final" / "model.safetensors").is_file()


def test_another_recipe_into_a_finished_folder_is_refused_before_anything_changes(trained, tmp_path, capsys):
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("steps:\n  - {type: StructuredPruneConfig, ratio: 0.25}\n")
    two.write_text("steps:\n  - {type: StructuredPruneConfig, ratio: 0.5}\n")
    out = tmp_path / "out"
    assert _run(capsys, "compress", one, "--checkpoint", trained, "--out", out, *QUICK)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".effdl" not in p.parts}
    _refused(capsys, "compress", two, "--checkpoint", trained, "--out", out, *QUICK,
             message="recipe.0.ratio=0.25 there, recipe.0.ratio=0.5 here")  # fmt: skip
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".effdl" not in p.parts}
    assert after == before  # recipe.yaml included


def test_resume_with_another_input_checkpoint_is_refused(trained, other, tmp_path, capsys):
    args = ["prune", "--ratio", "0.25", "--out", tmp_path, *QUICK]
    assert _run(capsys, *args, "--checkpoint", trained)[0] == 0
    _refused(capsys, *args, "--checkpoint", other, "--resume", message="model=")


def test_train_resume_with_other_data_is_refused(tmp_path, capsys):
    args = ["train", "--model", "test_mlp", "--epochs", "1", "--no-progress", "--out", tmp_path]
    assert _run(capsys, *args, "--data-opt", "num_samples=1000")[0] == 0
    _refused(capsys, *args, "--data-opt", "num_samples=1200", "--resume", message="data=")


def test_landscape_resume_into_another_models_surface_is_refused(trained, other, tmp_path, capsys):
    args = ["landscape", "--dims", "1", "--resolution", "3", "--max-examples", "64", "--no-progress", "--out",
            tmp_path]  # fmt: skip
    assert _run(capsys, *args, "--checkpoint", trained)[0] == 0
    surface = (tmp_path / "surface.npz").read_bytes()
    _refused(capsys, *args, "--checkpoint", other, "--resume", message="model=")
    assert (tmp_path / "surface.npz").read_bytes() == surface


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--model-opt", "channels=[16, 16", "is not valid YAML"),
        ("--model-opt", "channels=!!python/object/apply:os.system ['true']", "is not valid YAML"),
        ("--data-opt", "num_samples=*a", "uses a YAML alias"),
        ("--data-opt", "num_samples=[1]", "num_samples must be a number"),
    ],
)
def test_malformed_options_are_clear_errors(tmp_path, capsys, flag, value, message):
    _refused(capsys, "train", "--model", "test_mlp", "--epochs", "1", flag, value, "--out", tmp_path, message=message)


def test_sweep_set_with_a_yaml_tag_is_refused(trained, tmp_path, capsys):
    _refused(capsys, "sweep", "default", "--checkpoint", trained, "--set", "steps.0.ratio=!!python/name:os.system",
             "--out", tmp_path, *QUICK, message="is not valid YAML")  # fmt: skip


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"model": {"name": 5}}, "malformed model spec"),
        ({"model": {"name": "cnn1d", "input_shape": [1, 40], "num_classes": 10, "kwargs": "x"}}, "malformed"),
        ({"model": "cnn1d"}, "malformed model spec"),
        ({"dataset": 17}, "dataset"),
    ],
)
def test_wrongly_typed_checkpoint_metadata(trained, tmp_path, capsys, meta, message):
    tensors, saved = load_checkpoint(trained)
    path = save_checkpoint(tmp_path / "m.safetensors", tensors, {**saved, **meta})
    _refused(capsys, "eval", "--checkpoint", path, "--repeats", "2", message=message)


def test_corrupt_progress_file_is_a_clear_error(trained, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - {type: StructuredPruneConfig, ratio: 0.25}\n")
    out = tmp_path / "out"
    assert _run(capsys, "compress", recipe, "--checkpoint", trained, "--out", out, *QUICK)[0] == 0
    (out / "progress.json").write_text('{"stages": [{"name": 1}]')
    _refused(capsys, "compress", recipe, "--checkpoint", trained, "--out", out, *QUICK, message="is corrupt")


def test_corrupt_partial_surface_is_a_clear_error(trained, tmp_path, capsys):
    args = ["landscape", "--checkpoint", trained, "--dims", "1", "--resolution", "3", "--max-examples", "64",
            "--no-progress", "--out", tmp_path]  # fmt: skip
    assert _run(capsys, *args)[0] == 0
    (tmp_path / "surface.partial.npz").write_bytes(b"PK\x03\x04 not a zip")
    _refused(capsys, *args, "--resume", message="unreadable")


def test_corrupt_dataset_cache_is_regenerated(tmp_path, monkeypatch):
    from effdl.data import get_dataset

    monkeypatch.setenv("EFFDL_CACHE", str(tmp_path))
    first = get_dataset("mnist1d", num_samples=500)
    for cached in tmp_path.rglob("*.npz"):
        cached.write_bytes(b"PK\x03\x04 garbage")
    again = get_dataset("mnist1d", num_samples=500)
    assert torch.equal(first.train.tensors[0], again.train.tensors[0])


def test_out_under_a_file_and_out_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    base = ["train", "--model", "test_mlp", "--epochs", "1", "--no-progress", "--out"]
    _refused(capsys, *base, blocker, message="is a file")
    _refused(capsys, *base, blocker / "sub", message="cannot use")


def test_disk_full_is_a_clear_error_and_leaves_nothing_partial(tmp_path, capsys, monkeypatch):
    import effdl.core.io as io

    real = io.os.fsync

    def full(fd):
        if io.os.fstat(fd).st_size > 1000:  # small files (the marker) fit; the model does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(io.os, "fsync", full)
    _refused(capsys, "train", "--model", "test_mlp", "--epochs", "1", "--no-progress", "--out", tmp_path,
             message="No space left on device; free disk space or choose another --out")  # fmt: skip
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written file
    assert not (tmp_path / "model.safetensors").exists()


def test_read_only_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """Simulated (root may write anywhere): the first write, the run marker, fails with EROFS before training."""
    import effdl.core.io as io

    def read_only(fd):
        raise OSError(errno.EROFS, "Read-only file system")

    def no_work(*args, **kwargs):
        raise AssertionError("training started although --out cannot be written")

    monkeypatch.setattr(io.os, "fsync", read_only)
    monkeypatch.setattr("effdl.train.run._train", no_work)
    _refused(capsys, "train", "--model", "test_mlp", "--epochs", "1", "--no-progress", "--out", tmp_path,
             message="the file system is read-only: choose a writable --out")  # fmt: skip
    assert not list(tmp_path.rglob("*.tmp"))


def test_nan_in_the_data_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from effdl.data import get_dataset

    data = get_dataset("mnist1d", num_samples=500)
    data.train.tensors[0][3, 0, 5] = float("nan")
    monkeypatch.setattr("effdl.cli.commands.get_dataset", lambda *a, **k: data)
    _refused(capsys, "train", "--model", "test_mlp", "--epochs", "1", "--no-progress", "--out", tmp_path,
             message="check the data for NaN/Inf")  # fmt: skip


def test_lr_inf_is_refused(tmp_path, capsys):
    _refused(capsys, "train", "--model", "test_mlp", "--lr", "inf", "--out", tmp_path, message="lr")


def test_no_trainable_parameters_and_float_labels_are_clear_errors():
    from torch.utils.data import TensorDataset

    from effdl.core.errors import ConfigError
    from effdl.train import TrainConfig, Trainer

    frozen = torch.nn.Linear(4, 2).requires_grad_(False)
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    with pytest.raises(ConfigError, match="no trainable parameters"):
        Trainer(frozen, TrainConfig(epochs=1, progress=False)).fit(data)
    floats = TensorDataset(torch.randn(8, 4), torch.rand(8))
    with pytest.raises(ConfigError, match="labels are floating-point"):
        Trainer(torch.nn.Linear(4, 2), TrainConfig(epochs=1, progress=False)).fit(floats)


def test_an_unexpected_error_is_one_line_without_traceback(capsys, monkeypatch):
    def boom(args):
        raise np.linalg.LinAlgError("singular matrix")

    monkeypatch.setattr("effdl.cli.commands._train", boom)
    from effdl.cli import commands

    monkeypatch.setattr(commands, "_train", boom)
    code, _, err = _run(capsys, "train", "--model", "test_mlp")
    assert code == 1 and "Traceback" not in err
    assert "error: LinAlgError: singular matrix" in err and "--verbose" in err
    assert json.dumps(err)  # printable
