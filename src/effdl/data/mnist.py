"""MNIST and Fashion-MNIST from local IDX files (plain or .gz); nothing is ever downloaded."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from effdl.core.errors import DatasetNotFoundError
from effdl.data.base import DATASETS, DatasetSplits, to_tensors

__all__ = ["MAX_IDX_BYTES", "load_fashion_mnist", "load_mnist", "read_idx"]

_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
#: the largest IDX body effdl reads (MNIST's training images are 47 MB)
MAX_IDX_BYTES = 1 << 31

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (the format of the MNIST distribution), gzip-compressed or not.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = p.write_bytes(struct.pack(">HBBI", 0, 0x08, 1, 3) + bytes([7, 1, 2]))
        >>> read_idx(p).tolist()
        [7, 1, 2]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:  # the header first: the body is read only up to the size it declares
            head = fh.read(4)
            if len(head) < 4:
                raise DatasetNotFoundError(f"{path} is empty or truncated; it is not an IDX file")
            zero, code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or code not in _DTYPES or not 1 <= ndim <= 4:
                raise DatasetNotFoundError(
                    f"{path} is not an IDX file (bad magic number); re-extract the original archive"
                )
            raw_dims = fh.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DatasetNotFoundError(f"{path} is truncated inside its header; re-extract the original archive")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            dtype = np.dtype(_DTYPES[code])
            expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            if expected > MAX_IDX_BYTES:
                raise DatasetNotFoundError(
                    f"{path} declares {expected} data bytes (shape {list(dims)}), over the {MAX_IDX_BYTES} effdl "
                    "reads from one IDX file; it is not an MNIST-style file"
                )
            body = fh.read(expected + 1)  # never inflates more than the declared size (a gzip bomb stops here)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DatasetNotFoundError(f"{path} cannot be read ({exc}); re-extract the original archive") from exc
    if len(body) != expected:
        raise DatasetNotFoundError(
            f"{path} does not match its header: expected {expected} data bytes, found "
            f"{'more' if len(body) > expected else len(body)}; re-extract the original archive"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims).copy()  # writable, native byte order for torch


def _find(root: Path, stem: str, dataset: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    expected = ", ".join(f + "[.gz]" for f in _FILES.values())
    raise DatasetNotFoundError(
        f"{dataset}: {stem}[.gz] not found in {root}. effdl never downloads data: put the four IDX files "
        f"({expected}) in that folder and pass it as root= (CLI: --data-root)"
    )


def _load_idx_dataset(name: str, root: str | os.PathLike | None) -> DatasetSplits:
    if root is None:
        raise DatasetNotFoundError(
            f"{name} is read from local IDX files; pass root=PATH (CLI: --data-root PATH) to the folder holding "
            + ", ".join(f + "[.gz]" for f in _FILES.values())
        )
    root = Path(root)
    arrays = {k: read_idx(_find(root, stem, name)) for k, stem in _FILES.items()}
    return DatasetSplits(
        name=name,
        train=to_tensors(arrays["train_x"] / 255.0, arrays["train_y"], (1, 28, 28)),
        test=to_tensors(arrays["test_x"] / 255.0, arrays["test_y"], (1, 28, 28)),
        input_shape=(1, 28, 28),
        num_classes=10,
    )


@DATASETS.register(
    "mnist",
    description="MNIST from local IDX files (root=...)",
    input_shape=(1, 28, 28),
    num_classes=10,
    needs_files=True,
)
def load_mnist(*, root: str | os.PathLike | None = None) -> DatasetSplits:
    """MNIST from the four IDX files in ``root``; pixels scaled to [0, 1].

    Example:
        >>> load_mnist(root="/nonexistent")
        Traceback (most recent call last):
        ...
        effdl.core.errors.DatasetNotFoundError: mnist: train-images-idx3-ubyte[.gz] not found in /nonexistent. ...
    """
    return _load_idx_dataset("mnist", root)


@DATASETS.register(
    "fashion-mnist",
    description="Fashion-MNIST from local IDX files (root=...)",
    input_shape=(1, 28, 28),
    num_classes=10,
    needs_files=True,
)
def load_fashion_mnist(*, root: str | os.PathLike | None = None) -> DatasetSplits:
    """Fashion-MNIST from the four IDX files in ``root`` (same file names as MNIST); pixels scaled to [0, 1].

    Example:
        >>> "fashion-mnist" in DATASETS
        True
    """
    return _load_idx_dataset("fashion-mnist", root)
