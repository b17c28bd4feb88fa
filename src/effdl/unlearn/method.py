"""Machine unlearning for image-to-image models (Li, Hsu, Chen, Marculescu, ICLR 2024) and the baselines it is
compared with. Only the encoder is fine-tuned, from its original weights ``θ0``:

- ``noise-target`` (the paper, eq. 5): ``||E_θ(T(x_r)) - E_θ0(T(x_r))||² + α ||E_θ(T(x_f)) - E_θ0(T(n))||²``, with
  ``n ~ N(0, I)`` in the paper's normalized pixel space (here: Gaussian noise with the data's pixel mean and
  standard deviation) put through the same input transform ``T`` as the forget image;
- ``retain-finetune``: reconstruction loss on the retain set only;
- ``gradient-ascent``: ascend the reconstruction loss of the forget set;
- ``random-target``: reconstruct forget inputs as random retain images (noisy labels), retain inputs as themselves.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time

import torch
from torch import nn
from torch.nn import functional as F

from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import ConfigError, ShapeError
from effdl.core.report import Report
from effdl.core.transform import restored_on_failure
from effdl.train.config import TrainConfig
from effdl.train.optim import build_scheduler
from effdl.unlearn.task import check_mask_ratio, masked_input, patch_masks

__all__ = ["METHODS", "UnlearnConfig", "unlearn_"]

log = logging.getLogger(__name__)

METHODS = ("noise-target", "retain-finetune", "gradient-ascent", "random-target")


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnlearnConfig(Config):
    """How to make an encoder-decoder forget.

    Attributes:
        method: one of :data:`METHODS`.
        alpha: weight of the forget term (noise-target).
        steps: optimizer steps (Adam on the encoder only).
        lr: learning rate.
        batch_size: forget images per step (and retain images, unless ``retain_batch_size`` is set).
        retain_batch_size: retain images per step (default: ``batch_size``); a larger retain batch keeps the retain
            set's term steadier against the forget term.
        schedule: ``"constant"`` learning rate, or ``"cosine"`` decay to zero over ``steps``.
        mask_ratio: share of 2x2 patches the task hides (as the model was trained; the task's input transform T).
        seed: seeds the batches, masks and noise.

    Example:
        >>> UnlearnConfig(alpha=0.5).describe()
        'unlearn noise-target alpha=0.5, 300 steps'
    """

    method: str = "noise-target"
    alpha: float = 0.3
    steps: int = 300
    lr: float = 1e-3
    batch_size: int = 64
    retain_batch_size: int | None = None
    schedule: str = "constant"
    mask_ratio: float = 0.5
    seed: int = 0

    def validate(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("schedule", self.schedule, ("constant", "cosine"))
        check_range("alpha", self.alpha, 0.0, hint="use alpha=0.3")
        check_range("steps", self.steps, 1, hint="use steps=300")
        check_range("lr", self.lr, 0.0, low_open=True, hint="use lr=1e-3")
        check_range("batch_size", self.batch_size, 1, hint="use batch_size=64")
        check_mask_ratio(self.mask_ratio)
        if self.retain_batch_size is not None:
            check_range("retain_batch_size", self.retain_batch_size, 1, hint="use retain_batch_size=None")

    def describe(self) -> str:
        extra = f" alpha={self.alpha:g}" if self.method == "noise-target" else ""
        return f"unlearn {self.method}{extra}, {self.steps} steps"


def _check_images(name: str, x: torch.Tensor, need: bool) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1:] != (1, 8, 8):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ShapeError(f"{name} must be images of shape (N, 1, 8, 8), got {got}")
    if need and len(x) == 0:
        raise ConfigError(f"the {name} set is empty; pass at least one image")


def _overlap(a: torch.Tensor, b: torch.Tensor) -> int:
    if len(a) == 0 or len(b) == 0:
        return 0
    fa, fb = a.flatten(1), b.flatten(1)
    keys = {tuple(r.tolist()) for r in fb}
    return sum(tuple(r.tolist()) in keys for r in fa)


def unlearn_(model: nn.Module, config: UnlearnConfig, *, forget: torch.Tensor, retain: torch.Tensor) -> Report:
    """Fine-tunes ``model.encoder`` in place so the model forgets ``forget`` and keeps ``retain`` (images
    ``(N, 1, 8, 8)``); the decoder is not touched. On any exception the model is restored as it was.

    Raises:
        ConfigError: an empty forget set (or retain set, for methods that use one), or an image in both.

    Example:
        >>> from effdl.unlearn.task import InpaintingAutoencoder
        >>> m = InpaintingAutoencoder()
        >>> r = unlearn_(m, UnlearnConfig(steps=2), forget=torch.rand(4, 1, 8, 8), retain=torch.rand(4, 1, 8, 8))
        >>> r.details["steps"]
        2
    """
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module) or not isinstance(getattr(model, "decoder", None), nn.Module):
        raise ConfigError(f"unlearn_ needs a model with .encoder and .decoder modules, got {type(model).__name__}")
    _check_images("forget", forget, need=config.method != "retain-finetune")
    needs_retain = config.method != "gradient-ascent"
    _check_images("retain", retain, need=needs_retain)
    shared = _overlap(forget, retain)
    if shared:
        raise ConfigError(
            f"{shared} forget image(s) are also in the retain set; the two sets must be disjoint (remove them from "
            "the retain set)"
        )
    with restored_on_failure(model):
        return _run(model, config, forget, retain)


def _run(model: nn.Module, config: UnlearnConfig, forget: torch.Tensor, retain: torch.Tensor) -> Report:
    original = copy.deepcopy(model.encoder).eval()
    for p in original.parameters():
        p.requires_grad_(False)
    frozen = [p for p in model.decoder.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    params = list(model.encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    scheduler = build_scheduler(optimizer, TrainConfig(epochs=1, schedule=config.schedule), config.steps)
    g = torch.Generator().manual_seed(config.seed)
    was_training = model.training
    model.eval()  # no dropout or batch statistics in this model family; eval keeps the decoder exactly as it was
    t0 = time.perf_counter()
    losses = []
    pixels = torch.cat([forget.flatten(), retain.flatten()])
    noise_stats = (float(pixels.mean()), float(pixels.std()))
    try:
        for _ in range(config.steps):
            loss = _loss(model, original, config, forget, retain, g, noise_stats)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    seconds = time.perf_counter() - t0
    log.info("%s: final loss %.4g in %.1f s", config.describe(), losses[-1], seconds)
    details = {"method": config.method, "steps": config.steps, "seconds": seconds, "final_loss": losses[-1],
               "forget_images": len(forget), "retain_images": len(retain)}  # fmt: skip
    return Report(command="unlearn", config=config.to_dict(), details=details)


def _batch(x: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    return x[torch.randint(0, len(x), (n,), generator=g)]


def _loss(model, original, config, forget, retain, g, noise_stats) -> torch.Tensor:
    n = config.batch_size
    nr = config.retain_batch_size or n
    mean, std = noise_stats
    mask_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    mask = patch_masks(max(n, nr), ratio=config.mask_ratio, seed=mask_seed)
    mf, mr = mask[:n], mask[:nr]
    if config.method == "noise-target":
        xr, xf = _batch(retain, nr, g), _batch(forget, n, g)
        # n ~ N(0, I) in the normalized pixel space the paper works in, i.e. the data's pixel mean and std in ours
        noise = mean + std * torch.randn(xf.shape, generator=g)
        with torch.no_grad():
            target_r = original(masked_input(xr, mr))
            target_f = original(masked_input(noise, mf))
        keep = F.mse_loss(model.encoder(masked_input(xr, mr)), target_r)
        drop = F.mse_loss(model.encoder(masked_input(xf, mf)), target_f)
        return keep + config.alpha * drop
    if config.method == "retain-finetune":
        xr = _batch(retain, nr, g)
        return F.mse_loss(model(masked_input(xr, mr)), xr)
    if config.method == "gradient-ascent":
        xf = _batch(forget, n, g)
        return -F.mse_loss(model(masked_input(xf, mf)), xf)
    xr, xf, other = _batch(retain, nr, g), _batch(forget, n, g), _batch(retain, n, g)  # random-target
    return F.mse_loss(model(masked_input(xf, mf)), other) + F.mse_loss(model(masked_input(xr, mr)), xr)
