"""scikit-learn's bundled 8x8 handwritten digits, with a fixed stratified train/test split."""

from __future__ import annotations

from effdl.core.config import check_range
from effdl.data.base import DATASETS, DatasetSplits, to_tensors

__all__ = ["load_digits"]


@DATASETS.register(
    "digits",
    description="scikit-learn's bundled 8x8 digits (1437 train / 360 test, stratified)",
    input_shape=(1, 8, 8),
    num_classes=10,
    needs_files=False,
)
def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> DatasetSplits:
    """The 1797 8x8 digits shipped with scikit-learn, scaled to [0, 1], split stratified by class.

    Args:
        test_fraction: share of examples held out for testing.
        seed: seed of the split (0 gives the reference split).

    Example:
        >>> d = load_digits()
        >>> len(d.train), len(d.test), float(d.train.tensors[0].max())
        (1437, 360, 1.0)
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    check_range("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True, hint="use 0.2")
    x, y = _sk_digits(return_X_y=True)
    x = x / 16.0  # pixel values are 0..16
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    return DatasetSplits(
        name="digits",
        train=to_tensors(xtr, ytr, (1, 8, 8)),
        test=to_tensors(xte, yte, (1, 8, 8)),
        input_shape=(1, 8, 8),
        num_classes=10,
    )
