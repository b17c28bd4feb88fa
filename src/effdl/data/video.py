"""MNIST-1D "video": clips of frames of one class whose frames differ in difficulty, generated offline.

Each clip shows one class ``frames`` times: every frame is its own MNIST-1D example of that class (Greydanus & Kobak
2020; train clips from MNIST-1D's training examples, validation clips from a held-out part of them, test clips from
its test examples) degraded by its own difficulty ``d`` drawn uniformly from [0, 1]: the signal's contrast falls to
``1 - 0.97 d`` over a fixed Gaussian noise floor of scale 0.1 (a quarter of its variance white, three quarters smoothed
over ~2 samples, as MNIST-1D's own correlated noise). ``d ~ 0`` is a clean example, ``d ~ 1`` is nearly lost in the
noise. This is the embedded stand-in for the videos of input-adaptive precision (Sun et al., ICCV
2021): some frames are easy, some need full precision, some are not worth looking at. Deterministic with a seed.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from torch.utils.data import TensorDataset

from effdl.core.config import check_range
from effdl.data.mnist1d import load_mnist1d

__all__ = ["ClipSet", "VideoSplits", "load_mnist1d_video"]

log = logging.getLogger(__name__)

_NOISE = (0.1, 0.0)  # noise scale a + b d (MNIST-1D examples have unit standard deviation): a fixed floor
_ATTENUATION = 0.97  # signal amplitude 1 - 0.97 d
_SMOOTH = 2.0  # standard deviation (samples) of the Gaussian that smooths the correlated part of the noise
_VAL_SHARE = 0.15  # of MNIST-1D's training examples, held out for validation clips


@dataclasses.dataclass
class ClipSet:
    """Clips of one split.

    Attributes:
        x: frames, ``(clips, frames, 1, 40)`` float32.
        y: clip labels, ``(clips,)`` int64.
        difficulty: each frame's difficulty in [0, 1], ``(clips, frames)`` float32.
    """

    x: torch.Tensor
    y: torch.Tensor
    difficulty: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.numel())

    def frames(self) -> TensorDataset:
        """Every frame as an example of its clip's class: ``(clips * frames, 1, 40)`` inputs and their labels."""
        n, t = self.x.shape[:2]
        return TensorDataset(self.x.reshape(n * t, *self.x.shape[2:]), self.y.repeat_interleave(t))


@dataclasses.dataclass
class VideoSplits:
    """Train, validation and test clips of the MNIST-1D video dataset.

    Attributes:
        train, val, test: the splits.
        frames_per_clip: frames of every clip.
        input_shape: shape of one frame, ``(1, 40)``.
        num_classes: 10.
        seed: the generator's seed.
    """

    train: ClipSet
    val: ClipSet
    test: ClipSet
    frames_per_clip: int
    input_shape: tuple[int, ...] = (1, 40)
    num_classes: int = 10
    seed: int = 0

    def describe(self) -> str:
        """One line: sizes and shapes."""
        return (f"mnist1d-video: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test clips of "
                f"{self.frames_per_clip} frames of shape {self.input_shape}, {self.num_classes} classes")  # fmt: skip


def load_mnist1d_video(
    *, clips: tuple[int, int, int] = (2000, 500, 1000), frames: int = 8, seed: int = 0
) -> VideoSplits:
    """Generates the MNIST-1D video dataset (about a second; MNIST-1D itself is generated once and cached).

    Args:
        clips: clips in the train, validation and test splits.
        frames: frames per clip (at most the examples of a class in the smallest pool, ~100).
        seed: seeds labels, the examples drawn, difficulties and noise.

    Example:
        >>> d = load_mnist1d_video(clips=(20, 5, 5), frames=4)
        >>> d.train.x.shape, d.train.difficulty.shape, len(d.test.frames())
        (torch.Size([20, 4, 1, 40]), torch.Size([20, 4]), 20)
    """
    if len(clips) != 3 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in clips):
        raise ValueError(f"clips takes three positive counts (train, val, test), got {clips!r}; use (2000, 500, 1000)")
    check_range("frames", frames, 1, 100, hint="use frames=8")
    source = load_mnist1d(num_samples=10_000)  # 8000 train / 2000 test examples
    x, y = source.train.tensors  # type: ignore[attr-defined]
    cut = int(len(y) * (1 - _VAL_SHARE))
    pools = [(x[:cut], y[:cut]), (x[cut:], y[cut:]), source.test.tensors]  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    sets = [_clips(rng, px, py, n, frames) for (px, py), n in zip(pools, clips, strict=True)]
    return VideoSplits(*sets, frames_per_clip=frames, seed=seed)


def _clips(rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, n: int, frames: int) -> ClipSet:
    from scipy.ndimage import gaussian_filter1d

    xs, ys = x.numpy(), y.numpy()
    by_class = [np.flatnonzero(ys == c) for c in range(10)]
    labels = rng.integers(0, 10, size=n)
    picks = np.stack([rng.choice(by_class[c], size=frames, replace=False) for c in labels])  # (n, frames)
    clean = xs[picks]  # (n, frames, 1, 40)
    d = rng.random((n, frames))[..., None, None]
    white = rng.standard_normal(clean.shape)
    smooth = gaussian_filter1d(rng.standard_normal(clean.shape), _SMOOTH, axis=-1)
    smooth /= smooth.std()  # unit scale after smoothing
    scale = _NOISE[0] + _NOISE[1] * d
    noisy = clean * (1 - _ATTENUATION * d) + scale * (0.5 * white + np.sqrt(0.75) * smooth)  # unit-variance noise
    return ClipSet(torch.from_numpy(noisy.astype(np.float32)), torch.from_numpy(labels).long(),
                   torch.from_numpy(d[..., 0, 0].astype(np.float32)))  # fmt: skip
