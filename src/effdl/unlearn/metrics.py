"""What an image-to-image model draws for a set of images, judged three ways: reconstruction error, a frozen
classifier's accuracy on the drawings, and the Fréchet distance between drawings and real images in that
classifier's feature space (FID with a digits classifier in place of Inception)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.unlearn.task import masked_input, patch_masks

__all__ = ["SetScore", "frechet_distance", "penultimate_features", "score_set"]


@dataclasses.dataclass
class SetScore:
    """Scores of one image set.

    Attributes:
        mse: mean squared error of the reconstructions against the originals.
        accuracy: the frozen classifier's accuracy on the reconstructions (labels: the originals').
        fid: Fréchet distance between reconstructions and the real images in the classifier's feature space.
    """

    mse: float
    accuracy: float
    fid: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict."""
        return dataclasses.asdict(self)


def penultimate_features(classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the classifier's last Linear layer for ``x`` (N, features).

    Example:
        >>> m = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> penultimate_features(m, torch.zeros(5, 1, 2, 2)).shape
        torch.Size([5, 3])
    """
    last = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ConfigError(f"{type(classifier).__name__} has no Linear layer whose input could serve as features")
    got: list[torch.Tensor] = []
    handle = last[-1].register_forward_pre_hook(lambda module, args: got.append(args[0].detach().flatten(1)))
    try:
        with torch.no_grad():
            classifier(x)
    finally:
        handle.remove()
    return got[0]


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` between two sets of feature rows (Heusel et al.
    2017); 0 for identical sets.

    Example:
        >>> x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
        >>> round(frechet_distance(x, x), 6), frechet_distance(x, x + 1.0) > 2.9
        (0.0, True)
    """
    xa, xb = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = xa.mean(0), xb.mean(0)
    ca, cb = np.cov(xa, rowvar=False), np.cov(xb, rowvar=False)
    # Tr((C_a C_b)^(1/2)) = sum sqrt(eig(C_a^(1/2) C_b C_a^(1/2))): a symmetric eigenproblem, stable and fast
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root_a @ cb @ root_a)
    cross = np.sqrt(np.clip(middle, 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * cross)
    return max(value, 0.0)


def reconstruct(model: nn.Module, x: torch.Tensor, *, mask_ratio: float = 0.5, seed: int = 12345) -> torch.Tensor:
    """The model's drawings of ``x`` under fixed masks hiding ``mask_ratio`` of the patches (the same masks for
    every model compared)."""
    with torch.no_grad():
        return model.eval()(masked_input(x, patch_masks(len(x), ratio=mask_ratio, seed=seed)))


def score_set(model: nn.Module, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
              mask_ratio: float = 0.5) -> SetScore:  # fmt: skip
    """Reconstruction error, classifier accuracy and Fréchet distance of the model's drawings of ``x`` (under
    masks hiding ``mask_ratio`` of the patches).

    Example:
        >>> from effdl.unlearn.task import InpaintingAutoencoder
        >>> clf = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
        >>> s = score_set(InpaintingAutoencoder(), clf, torch.rand(20, 1, 8, 8), torch.zeros(20, dtype=torch.long))
        >>> 0.0 <= s.accuracy <= 1.0
        True
    """
    if len(x) < 2:
        raise ConfigError(f"scoring needs at least 2 images, got {len(x)}")
    out = reconstruct(model, x, mask_ratio=mask_ratio)
    with torch.no_grad():
        accuracy = float((classifier(out).argmax(1) == y).float().mean())
    fid = frechet_distance(penultimate_features(classifier, out), penultimate_features(classifier, x))
    return SetScore(mse=float(((out - x) ** 2).mean()), accuracy=accuracy, fid=fid)
