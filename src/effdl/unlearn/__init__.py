"""Machine unlearning for image-to-image generative models (Li, Hsu, Chen, Marculescu, ICLR 2024): fine-tune only
the encoder so that forget images map to what the original encoder makes of Gaussian noise while retain images
keep their original codes; baselines (retain-only fine-tuning, gradient ascent, random targets); an embedded
inpainting task on scikit-learn's digits with a frozen classifier as the judge.

Example:
    >>> import torch
    >>> from effdl.unlearn import InpaintingAutoencoder, UnlearnConfig, unlearn_
    >>> model = InpaintingAutoencoder()
    >>> report = unlearn_(model, UnlearnConfig(steps=3), forget=torch.rand(8, 1, 8, 8), retain=torch.rand(8, 1, 8, 8))
    >>> report.details["method"]
    'noise-target'
"""

from effdl.unlearn.method import METHODS, UnlearnConfig, unlearn_
from effdl.unlearn.metrics import SetScore, frechet_distance, penultimate_features, score_set
from effdl.unlearn.study import UnlearnStudyConfig, rows_table, run_study
from effdl.unlearn.task import (
    DigitSplits,
    InpaintingAutoencoder,
    digit_splits,
    masked_input,
    patch_masks,
    train_autoencoder,
    train_classifier,
)

__all__ = [
    "METHODS",
    "DigitSplits",
    "InpaintingAutoencoder",
    "SetScore",
    "UnlearnConfig",
    "UnlearnStudyConfig",
    "digit_splits",
    "frechet_distance",
    "masked_input",
    "patch_masks",
    "penultimate_features",
    "rows_table",
    "run_study",
    "score_set",
    "train_autoencoder",
    "train_classifier",
    "unlearn_",
]
