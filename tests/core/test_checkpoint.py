import json
import pickle

import pytest
import torch

from effdl.core import CheckpointError, UnsafeCheckpointError, load_checkpoint, read_metadata, save_checkpoint


def test_round_trip_with_metadata_and_sidecar(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    save_checkpoint(path, tensors, {"epoch": 3, "nested": {"a": [1, 2]}})
    loaded, meta = load_checkpoint(path)
    assert torch.equal(loaded["w"], tensors["w"]) and torch.equal(loaded["b"], tensors["b"])
    assert meta["epoch"] == 3 and meta["nested"] == {"a": [1, 2]} and meta["format"] == "effdl.checkpoint"
    assert json.loads((tmp_path / "ckpt.safetensors.json").read_text())["epoch"] == 3
    assert read_metadata(path)["epoch"] == 3


def test_tied_tensors_are_saved(tmp_path):
    w = torch.randn(2, 2)
    save_checkpoint(tmp_path / "t.safetensors", {"a": w, "b": w})
    loaded, _ = load_checkpoint(tmp_path / "t.safetensors")
    assert torch.equal(loaded["a"], loaded["b"])


def test_atomic_write_leaves_no_temp_files(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(1)})
    save_checkpoint(tmp_path / "c.safetensors", {"w": torch.zeros(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors", "c.safetensors.json"]
    assert load_checkpoint(tmp_path / "c.safetensors")[0]["w"].item() == 0.0


@pytest.mark.parametrize("cut", [4, 20, -3])
def test_truncated_checkpoint_is_refused(tmp_path, cut):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.randn(100)})
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"truncated|corrupt"):
        load_checkpoint(path)


def test_corrupt_header_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.randn(10)})
    data = bytearray(path.read_bytes())
    data[10:14] = b"\xff\xfe\x00\x01"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_pickle_refused_without_trust_flag(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"pickle.*trust_pickle=True.*--trust-pickle"):
        load_checkpoint(path)
    tensors, meta = load_checkpoint(path, trust_pickle=True)
    assert torch.equal(tensors["w"], torch.ones(2)) and meta == {}


def test_pickle_detected_by_content_not_suffix(tmp_path):
    path = tmp_path / "innocent.safetensors"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_trusted_pickle_still_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    with path.open("wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="tensors-only"):
        load_checkpoint(path, trust_pickle=True)


def test_newer_version_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.ones(1)}, {"version": 99})
    with pytest.raises(CheckpointError, match="newer effdl"):
        load_checkpoint(path)


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(CheckpointError, match="JSON-serializable"):
        save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(1)}, {"bad": object()})


def test_safetensors_whose_header_size_starts_with_0x80_is_not_taken_for_pickle(tmp_path):
    # a header of 0x..80 bytes begins with the byte a pickle stream starts with; found by pruning tests
    for pad in range(300):
        path = save_checkpoint(tmp_path / "w.safetensors", {"w": torch.zeros(2)}, {"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        raise AssertionError("no header size with low byte 0x80 found")
    tensors, meta = load_checkpoint(path)
    assert meta["pad"] == "x" * pad and torch.equal(tensors["w"], torch.zeros(2))
