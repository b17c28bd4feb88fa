"""CIFAR-10 from the local "python version" batches (``cifar-10-batches-py``); nothing is ever downloaded.

The batches are pickles, so they are read with an unpickler that admits only the NumPy array constructors they
contain: a tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from effdl.core.errors import DatasetNotFoundError
from effdl.data.base import DATASETS, DatasetSplits, to_tensors

__all__ = ["load_cifar10"]

_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]
_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(1, 3, 1, 1)
_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(1, 3, 1, 1)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles (protocol 2) store the raw bytes of an array
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            batch = _ArraysOnly(fh, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
        raise DatasetNotFoundError(
            f"{path} is not a valid CIFAR-10 python batch ({exc}); re-extract the archive"
        ) from exc
    return data, labels


@DATASETS.register(
    "cifar10",
    description="CIFAR-10 from local python batches (root=...)",
    input_shape=(3, 32, 32),
    num_classes=10,
    needs_files=True,
)
def load_cifar10(*, root: str | os.PathLike | None = None) -> DatasetSplits:
    """CIFAR-10 from ``root`` (the extracted ``cifar-10-batches-py`` folder, or its parent), normalized per channel.

    Example:
        >>> load_cifar10()
        Traceback (most recent call last):
        ...
        effdl.core.errors.DatasetNotFoundError: cifar10 is read from local files; pass root=PATH (CLI: --data-root ...
    """
    if root is None:
        raise DatasetNotFoundError(
            "cifar10 is read from local files; pass root=PATH (CLI: --data-root PATH) to the extracted "
            "cifar-10-batches-py folder holding data_batch_1..5 and test_batch"
        )
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [f for f in _TRAIN + _TEST if not (root / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"cifar10: {', '.join(missing)} not found in {root}. effdl never downloads data: extract "
            "cifar-10-python.tar.gz and pass the cifar-10-batches-py folder as root= (CLI: --data-root)"
        )
    train = [_read_batch(root / f) for f in _TRAIN]
    test = [_read_batch(root / f) for f in _TEST]

    def norm(x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) / 255.0 - _MEAN) / _STD

    return DatasetSplits(
        name="cifar10",
        train=to_tensors(
            norm(np.concatenate([b[0] for b in train])), np.concatenate([b[1] for b in train]), (3, 32, 32)
        ),
        test=to_tensors(norm(test[0][0]), test[0][1], (3, 32, 32)),
        input_shape=(3, 32, 32),
        num_classes=10,
    )
