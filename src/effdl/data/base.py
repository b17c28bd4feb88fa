"""The dataset container every loader returns, the dataset registry, and ``get_dataset``."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from effdl.core.config import check_options
from effdl.core.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "cache_dir",
    "dataset_fingerprint",
    "get_dataset",
    "list_datasets",
    "read_npz_cache",
    "write_npz_cache",
]

log = logging.getLogger(__name__)

DATASETS: Registry[Callable[..., DatasetSplits]] = Registry("dataset")


@dataclasses.dataclass
class DatasetSplits:
    """A classification dataset held in memory as tensors.

    Attributes:
        name: registry name of the dataset.
        train: training split of ``(input, label)`` pairs; the loaders return a TensorDataset of float32 inputs of
            shape ``(N, *input_shape)`` and int64 labels (any Dataset of such pairs works, e.g. a Subset).
        test: test split, same layout.
        input_shape: shape of one example without the batch dimension, e.g. ``(1, 40)`` or ``(3, 32, 32)``.
        num_classes: number of classes (the vocabulary size of a language-model dataset).
        task: ``"classification"`` (one label per example) or ``"language-model"`` (token inputs of shape
            ``(length,)`` and the next token at every position as targets; models return logits of shape
            ``(batch, vocabulary, length)``, the layout ``cross_entropy`` takes, and reports add perplexity).

    Example:
        >>> x = torch.zeros(4, 1, 3); y = torch.tensor([0, 1, 0, 1])
        >>> d = DatasetSplits("toy", TensorDataset(x, y), TensorDataset(x, y), (1, 3), 2)
        >>> d.describe()
        'toy: 4 train / 4 test examples of shape (1, 3), 2 classes'
    """

    name: str
    train: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    task: str = "classification"

    def describe(self) -> str:
        """One line: sizes, example shape, classes."""
        if self.task == "language-model":
            return (
                f"{self.name}: {len(self.train)} train / {len(self.test)} test sequences of "
                f"{self.input_shape[0]} tokens, vocabulary {self.num_classes}"
            )
        return (
            f"{self.name}: {len(self.train)} train / {len(self.test)} test examples of shape "
            f"{tuple(self.input_shape)}, {self.num_classes} classes"
        )

    def example_inputs(self, batch_size: int = 1) -> torch.Tensor:
        """The first ``batch_size`` test inputs, e.g. for profiling or tracing.

        Example:
            >>> x = torch.arange(6.).view(2, 1, 3); y = torch.tensor([0, 1])
            >>> DatasetSplits("toy", TensorDataset(x, y), TensorDataset(x, y), (1, 3), 2).example_inputs().shape
            torch.Size([1, 1, 3])
        """
        n = len(self.test)
        return torch.stack([torch.as_tensor(self.test[i % n][0]) for i in range(batch_size)])

    def fingerprint(self) -> str:
        """A short SHA-256 of the name, shapes and every example of both splits (a Dataset that holds no tensors
        is sampled: its length and up to 256 examples): what a resumed run checks it trains on the same data.

        Example:
            >>> x = torch.zeros(2, 1, 3); y = torch.tensor([0, 1])
            >>> a = DatasetSplits("toy", TensorDataset(x, y), TensorDataset(x, y), (1, 3), 2)
            >>> b = DatasetSplits("toy", TensorDataset(x + 1, y), TensorDataset(x, y), (1, 3), 2)
            >>> a.fingerprint() == b.fingerprint()
            False
        """
        digest = hashlib.sha256(f"{self.name}|{list(self.input_shape)}|{self.num_classes}|{self.task}".encode())
        for split in (self.train, self.test):
            _digest_dataset(split, digest)
        return digest.hexdigest()[:16]


def dataset_fingerprint(*datasets: Any) -> str:
    """A short SHA-256 of datasets (TensorDatasets in full, others sampled; a DatasetSplits by its own
    :meth:`~DatasetSplits.fingerprint`, a dict by its values): what a resumed run checks it works on the same data.

    Example:
        >>> ds = TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 0]))
        >>> dataset_fingerprint(ds) == dataset_fingerprint(ds), dataset_fingerprint(ds) == dataset_fingerprint()
        (True, False)
    """
    digest = hashlib.sha256(b"datasets")
    for ds in datasets:
        if isinstance(ds, DatasetSplits):
            digest.update(ds.fingerprint().encode())
        elif isinstance(ds, dict):
            for key in sorted(ds):
                digest.update(str(key).encode() + dataset_fingerprint(ds[key]).encode())
        elif isinstance(ds, list | tuple) and not isinstance(ds, Dataset):
            digest.update(dataset_fingerprint(*ds).encode())
        elif isinstance(ds, torch.Tensor):
            _digest_tensor(ds, digest)
        else:
            _digest_dataset(ds, digest)
    return digest.hexdigest()[:16]


def _digest_dataset(ds: Dataset, digest) -> None:
    if isinstance(ds, TensorDataset):
        for t in ds.tensors:
            _digest_tensor(torch.as_tensor(t), digest)
        return
    if isinstance(ds, Subset):
        digest.update(repr(list(ds.indices)).encode())
        _digest_dataset(ds.dataset, digest)
        return
    n = len(ds)  # type: ignore[arg-type]
    digest.update(f"len {n}".encode())
    for i in sorted({int(j) for j in torch.linspace(0, max(n - 1, 0), min(n, 256)).tolist()}):
        for item in ds[i]:
            _digest_tensor(torch.as_tensor(item), digest)


def _digest_tensor(t: torch.Tensor, digest) -> None:
    t = t.detach().cpu().contiguous()
    digest.update(f"{t.dtype}{list(t.shape)}".encode())
    if t.numel():
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def cache_dir() -> Path:
    """Where generated datasets are cached: ``$EFFDL_CACHE`` or ``~/.cache/effdl``.

    Example:
        >>> isinstance(cache_dir(), Path)
        True
    """
    root = os.environ.get("EFFDL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "effdl"
    return Path(root)


def read_npz_cache(path: Path, keys: tuple[str, ...], what: str) -> dict[str, Any] | None:
    """The arrays ``keys`` of a generated dataset's ``.npz`` cache, or None when it is missing or unreadable (a
    warning then says it is generated again).

    Example:
        >>> read_npz_cache(Path("/nonexistent.npz"), ("x",), "demo") is None
        True
    """
    import zipfile
    import zlib

    import numpy as np

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        log.warning("ignoring the unreadable %s cache %s (%s); generating it again", what, path, exc)
        return None


def write_npz_cache(path: Path, arrays: dict[str, Any], what: str, *, compress: bool = False) -> None:
    """Writes a generated dataset's arrays to ``path`` atomically; a cache folder that cannot be written only logs
    a warning (the run goes on without a cache)."""
    import io

    import numpy as np

    from effdl.core.io import atomic_write_bytes

    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        log.warning("could not write the %s cache %s (%s)", what, path, exc)


def get_dataset(name: str, **kwargs) -> DatasetSplits:
    """Loads a registered dataset by name; keyword arguments go to its loader (e.g. ``root=`` for file-backed ones).

    Example:
        >>> d = get_dataset("digits")
        >>> d.input_shape, d.num_classes
        ((1, 8, 8), 10)
        >>> get_dataset("imagenet")
        Traceback (most recent call last):
        ...
        effdl.core.errors.UnknownNameError: unknown dataset 'imagenet'; valid datasets: cifar10, digits, ...
    """
    loader = DATASETS.get(name, allow_callable=False)
    check_options(f"dataset {name!r}", loader, kwargs)
    return loader(**kwargs)


def list_datasets() -> list[dict[str, object]]:
    """Name, description and metadata of every registered dataset.

    Example:
        >>> [d["name"] for d in list_datasets()][:2]
        ['cifar10', 'digits']
    """
    return [{"name": e.name, "description": e.description, **e.meta} for e in DATASETS.entries()]


def to_tensors(x, y, input_shape: tuple[int, ...]) -> TensorDataset:
    """Builds a TensorDataset of float32 inputs reshaped to ``(N, *input_shape)`` and int64 labels."""
    xt = torch.as_tensor(x, dtype=torch.float32).reshape(-1, *input_shape).contiguous()
    yt = torch.as_tensor(y, dtype=torch.int64).reshape(-1)
    return TensorDataset(xt, yt)
