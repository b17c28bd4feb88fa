"""The embedded image-to-image task: inpainting of scikit-learn's 8x8 digits with half of their 2x2 patches masked,
an encoder-decoder that fills them in, and a frozen classifier that judges what the decoder draws."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn
from torch.utils.data import TensorDataset

from effdl.core.config import check_range
from effdl.core.errors import ConfigError
from effdl.core.seed import seed_everything
from effdl.models.base import create_model
from effdl.train.config import TrainConfig
from effdl.train.loop import Trainer

__all__ = [
    "DigitSplits",
    "InpaintingAutoencoder",
    "check_mask_ratio",
    "check_width",
    "digit_splits",
    "masked_input",
    "patch_masks",
    "train_autoencoder",
    "train_classifier",
]

log = logging.getLogger(__name__)

IMAGE = (8, 8)


def check_mask_ratio(ratio: float) -> None:
    """The share of an image the task hides must leave something to see and something to draw."""
    check_range("mask_ratio", ratio, 0, 1, low_open=True, high_open=True,
                hint="mask_ratio is the share of 2x2 patches hidden; use 0.5 (half hidden) or 0.75")


def patch_masks(n: int, *, patch: int = 2, ratio: float = 0.5, seed: int = 0) -> torch.Tensor:
    """``n`` masks of shape (1, 8, 8): 1 where a pixel is hidden, whole ``patch`` x ``patch`` patches, ``ratio`` of
    them per image, drawn from a generator seeded with ``seed`` (the same seed gives the same masks).

    Example:
        >>> m = patch_masks(3, seed=0)
        >>> m.shape, float(m.mean())
        (torch.Size([3, 1, 8, 8]), 0.5)
    """
    check_mask_ratio(ratio)
    g = torch.Generator().manual_seed(seed)
    h, w = IMAGE[0] // patch, IMAGE[1] // patch
    k = round(h * w * ratio)
    order = torch.argsort(torch.rand(n, h * w, generator=g), dim=1)
    hidden = torch.zeros(n, h * w)
    hidden.scatter_(1, order[:, :k], 1.0)
    return hidden.view(n, 1, h, w).repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def masked_input(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The task's input transform T: the visible pixels and the mask as a second channel, (N, 2, 8, 8).

    Example:
        >>> masked_input(torch.ones(1, 1, 8, 8), patch_masks(1))[0, 0].sum().item()
        32.0
    """
    return torch.cat([x * (1 - mask), mask], dim=1)


def check_width(width: int) -> None:
    """Refuses an encoder width the inpainting model cannot take (its first conv has ``width // 2`` channels)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 2 or width % 2:
        raise ConfigError(f"width must be an even number >= 2 (the first conv has width // 2 channels), got "
                          f"{width!r}; use width=64")  # fmt: skip


class InpaintingAutoencoder(nn.Module):
    """Encoder (the part unlearning fine-tunes) and decoder of the inpainting task.

    ``forward(masked_input(x, mask))`` returns the whole 8x8 image in [0, 1], drawn from the visible pixels.

    Example:
        >>> m = InpaintingAutoencoder()
        >>> m(masked_input(torch.zeros(2, 1, 8, 8), patch_masks(2))).shape, m.encoder(torch.zeros(1, 2, 8, 8)).shape
        (torch.Size([2, 1, 8, 8]), torch.Size([1, 64, 4, 4]))
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        check_width(width)
        self.encoder = nn.Sequential(
            nn.Conv2d(2, width // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.GELU(), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width, width // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(width // 2, 1, 3, padding=1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@dataclasses.dataclass
class DigitSplits:
    """Images ``(N, 1, 8, 8)`` in [0, 1] and labels of three disjoint, class-stratified parts of the digits:
    ``train`` (the generative model and the classifier learn from it; the real retain set is its retain classes),
    ``proxy`` (never trained on: the proxy retain set comes from it) and ``test`` (every measurement)."""

    train: tuple[torch.Tensor, torch.Tensor]
    proxy: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]

    def part(self, split: str, classes: tuple[int, ...], *, keep: bool = True) -> torch.Tensor:
        """The images of ``split`` whose label is in ``classes`` (``keep=False``: not in them)."""
        x, y = getattr(self, split)
        hit = torch.isin(y, torch.tensor(classes, dtype=y.dtype))
        return x[hit if keep else ~hit]


def digit_splits(seed: int = 0) -> DigitSplits:
    """scikit-learn's 1797 digits split 60/20/20 (stratified, seeded) into train, proxy and test.

    Example:
        >>> s = digit_splits(0)
        >>> len(s.train[0]), len(s.proxy[0]), len(s.test[0])
        (1078, 359, 360)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, *IMAGE)
    y = torch.tensor(y, dtype=torch.int64)
    idx = torch.arange(len(y))
    tr, rest = train_test_split(idx.numpy(), test_size=0.4, stratify=y.numpy(), random_state=seed)
    px, te = train_test_split(rest, test_size=0.5, stratify=y[rest].numpy(), random_state=seed)
    return DigitSplits(*((x[i], y[i]) for i in (torch.as_tensor(tr), torch.as_tensor(px), torch.as_tensor(te))))


def train_autoencoder(
    images: torch.Tensor,
    *,
    epochs: int = 40,
    width: int = 64,
    masks_per_image: int = 4,
    mask_ratio: float = 0.5,
    seed: int = 0,
    progress: bool = False,
) -> tuple[InpaintingAutoencoder, int]:
    """Trains the inpainting model (encoder width ``width``) on ``images`` (each seen under ``masks_per_image`` fixed
    random masks hiding ``mask_ratio`` of the patches, mean squared error on the whole image). Returns the model
    (eval mode) and the number of optimizer steps taken."""
    if len(images) == 0:
        raise ConfigError("train_autoencoder got no images; pass at least one")
    seed_everything(seed)
    x = images.repeat(masks_per_image, 1, 1, 1)
    inputs = masked_input(x, patch_masks(len(x), ratio=mask_ratio, seed=seed))
    model = InpaintingAutoencoder(width)
    config = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, weight_decay=1e-4, seed=seed, progress=progress)
    trainer = Trainer(model, config, loss_fn=nn.MSELoss())
    trainer.fit(TensorDataset(inputs, x))
    return model.eval(), trainer.step


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 30, seed: int = 0) -> nn.Module:
    """The frozen judge: effdl's ``cnn2d`` trained on clean digits with its recommended settings (eval mode)."""
    seed_everything(seed)
    model = create_model("cnn2d")
    config = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, weight_decay=5e-2, seed=seed, progress=False)
    Trainer(model, config).fit(TensorDataset(images, labels))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
