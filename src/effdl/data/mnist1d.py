"""MNIST-1D (Greydanus & Kobak, 2020), generated offline by the ``mnist1d`` package and cached as .npz."""

from __future__ import annotations

import logging
import random

import numpy as np

from effdl.core.config import check_range
from effdl.data.base import DATASETS, DatasetSplits, cache_dir, read_npz_cache, to_tensors, write_npz_cache

__all__ = ["load_mnist1d"]

log = logging.getLogger(__name__)


@DATASETS.register(
    "mnist1d",
    description="MNIST-1D, generated offline (default 4000 train / 1000 test, length 40)",
    input_shape=(1, 40),
    num_classes=10,
    needs_files=False,
)
def load_mnist1d(*, num_samples: int = 5000, seed: int = 42, cache: bool = True) -> DatasetSplits:
    """MNIST-1D with the package's published default settings (5000 examples, 80/20 split, length 40).

    Generation (about a second) uses ``mnist1d.data.make_dataset`` and never downloads; the result is cached as
    ``mnist1d_<num_samples>_<seed>.npz`` under :func:`effdl.data.cache_dir`. Inputs have shape ``(1, 40)``.

    Args:
        num_samples: total examples (train + test, split 80/20); larger values give larger sets.
        seed: the generator's seed (42 is the published dataset).
        cache: read and write the .npz cache.

    Example:
        >>> d = load_mnist1d()
        >>> len(d.train), len(d.test), d.input_shape
        (4000, 1000, (1, 40))
    """
    check_range("num_samples", num_samples, 10, hint="use num_samples=5000 for the published dataset")
    path = cache_dir() / f"mnist1d_{num_samples}_{seed}.npz"
    arrays = read_npz_cache(path, ("x", "y", "x_test", "y_test"), "MNIST-1D") if cache else None
    if arrays is None:
        arrays = _generate(num_samples, seed)
        if cache:
            write_npz_cache(path, arrays, "MNIST-1D")
    return DatasetSplits(
        name="mnist1d",
        train=to_tensors(arrays["x"], arrays["y"], (1, 40)),
        test=to_tensors(arrays["x_test"], arrays["y_test"], (1, 40)),
        input_shape=(1, 40),
        num_classes=10,
    )


def _generate(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    np_state, py_state = np.random.get_state(), random.getstate()  # mnist1d reseeds the global generators
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    log.info("generated MNIST-1D: %d examples, seed %d", num_samples, seed)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}
