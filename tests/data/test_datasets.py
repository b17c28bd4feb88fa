import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from effdl.core import ConfigError, DatasetNotFoundError, UnknownNameError
from effdl.data import (
    EpochSampler,
    calibration_subset,
    get_dataset,
    list_datasets,
    load_cifar10,
    load_mnist,
    make_loader,
    split_validation,
)


def test_mnist1d_default_split_and_determinism():
    a = get_dataset("mnist1d")
    b = get_dataset("mnist1d", cache=False)  # regenerated, not read from the cache
    assert (len(a.train), len(a.test), a.input_shape, a.num_classes) == (4000, 1000, (1, 40), 10)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert a.train.tensors[0].dtype == torch.float32 and a.train.tensors[1].dtype == torch.int64
    assert set(a.train.tensors[1].tolist()) == set(range(10))


def test_mnist1d_generation_leaves_global_rng_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    get_dataset("mnist1d", num_samples=200, cache=False)
    assert np.random.rand() == expected


def test_mnist1d_size_option_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFDL_CACHE", str(tmp_path))
    d = get_dataset("mnist1d", num_samples=1000)
    assert (len(d.train), len(d.test)) == (800, 200)
    assert (tmp_path / "mnist1d_1000_42.npz").is_file()
    (tmp_path / "mnist1d_1000_42.npz").write_bytes(b"garbage")  # a corrupt cache is regenerated
    assert torch.equal(get_dataset("mnist1d", num_samples=1000).train.tensors[0], d.train.tensors[0])


def test_digits_stratified_fixed_split():
    d = get_dataset("digits")
    assert (len(d.train), len(d.test), d.input_shape) == (1437, 360, (1, 8, 8))
    counts = torch.bincount(d.test.tensors[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    assert torch.equal(get_dataset("digits").test.tensors[0], d.test.tensors[0])


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid datasets: cifar10, digits, fashion-mnist, mnist, mnist1d"):
        get_dataset("mnist2d")
    assert {d["name"] for d in list_datasets()} >= {"mnist1d", "digits"}
    with pytest.raises(ConfigError, match=r"dataset 'digits' got unknown option.*'root'; valid options: test_fraction"):
        get_dataset("digits", root="/data")


def _write_idx(path, array, code=0x08, gz=False):
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def test_mnist_reads_local_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    tr_x, te_x = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 256, (4, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte", tr_x, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(6) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", te_x)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4))
    d = get_dataset("mnist", root=tmp_path)
    assert d.train.tensors[0].shape == (6, 1, 28, 28)
    assert torch.allclose(d.test.tensors[0][2, 0], torch.tensor(te_x[2] / 255.0, dtype=torch.float32))
    assert d.test.tensors[1].tolist() == [0, 1, 2, 3]


def test_mnist_missing_files_say_what_to_put_where(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"train-images-idx3-ubyte\[.gz\] not found in .*--data-root"):
        load_mnist(root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="pass root=PATH"):
        get_dataset("fashion-mnist")


def test_truncated_idx_is_refused(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)))
    data = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(data[:-10])
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        _write_idx(tmp_path / name, np.zeros(2))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)))
    with pytest.raises(DatasetNotFoundError, match="truncated"):
        load_mnist(root=tmp_path)


def _write_cifar(folder, n=4):
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.full((n, 3072), 128, dtype=np.uint8), b"labels": list(range(n))}
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh, protocol=2)


def test_cifar10_reads_python_batches(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    d = load_cifar10(root=tmp_path)
    assert d.train.tensors[0].shape == (20, 3, 32, 32) and d.test.tensors[0].shape == (4, 3, 32, 32)
    assert abs(float(d.train.tensors[0][0, 0, 0, 0]) - (128 / 255 - 0.4914) / 0.2470) < 1e-5


class _Evil:
    def __reduce__(self):
        return (exec, ("import os",))


def test_cifar10_refuses_code_in_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    with (folder / "test_batch").open("wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": []}, fh)
    with pytest.raises(DatasetNotFoundError, match=r"refusing to load builtins\.exec"):
        load_cifar10(root=folder)


def test_cifar10_missing_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"data_batch_1.*not found"):
        load_cifar10(root=tmp_path)


def test_epoch_sampler_shards_cover_the_epoch_and_skip_resumes():
    samplers = [EpochSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    for s in samplers:
        s.set_epoch(2)
    shards = [list(s) for s in samplers]
    assert all(len(s) == 4 for s in shards)  # padded to equal length
    assert {i for shard in shards for i in shard} == set(range(10))
    s = samplers[0]
    s.set_epoch(2, skip=2)
    assert list(s) == shards[0][2:] and len(s) == 2
    s.set_epoch(3)
    assert list(s) != shards[0]  # a new permutation each epoch


def test_loader_is_seeded():
    ds = torch.utils.data.TensorDataset(torch.arange(20.0))
    first = [b[0].tolist() for b in make_loader(ds, 5, shuffle=True, seed=1)]
    again = [b[0].tolist() for b in make_loader(ds, 5, shuffle=True, seed=1)]
    assert first == again and sorted(i for batch in first for i in batch) == list(range(20))


def test_split_and_calibration_helpers():
    ds = torch.utils.data.TensorDataset(torch.randn(30, 1, 4), torch.zeros(30))
    tr, va = split_validation(ds, 0.2, seed=1)
    assert len(tr) == 24 and len(va) == 6 and not set(tr.indices) & set(va.indices)
    calib = calibration_subset(ds, 10, seed=0)
    assert calib.shape == (10, 1, 4) and torch.equal(calib, calibration_subset(ds, 10, seed=0))
    with pytest.raises(ConfigError, match=r"num_examples must be in \[1, 30\]"):
        calibration_subset(ds, 0)
    with pytest.raises(ConfigError, match="empty dataset"):
        EpochSampler(0)
