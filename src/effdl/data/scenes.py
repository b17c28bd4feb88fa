"""An embedded multi-task dataset: small rendered scenes of shapes on textured backgrounds with exact per-pixel
ground truth for five tasks, generated offline and deterministically.

Each scene is a tilted, textured background plane and 1 to ``max_objects`` shapes (disk, square, triangle) at random
places and depths, each a surface with its own relief (a dome, a pyramid, a tilted plate); nearer surfaces hide
farther ones, and every surface is shaded by one light (Lambert), so the image carries the geometry. Tasks:

- ``segment``: per-pixel class (0 background, 1 disk, 2 square, 3 triangle); metric mean IoU.
- ``depth``: per-pixel distance from the camera; metric mean absolute error.
- ``normal``: per-pixel unit surface normal (3 channels); metric mean angle error in degrees.
- ``edge``: per-pixel object boundary (1 where the visible surface changes to another object or the background);
  metric F1.
- ``count``: how many shapes are visible (``0..max_objects``); metric accuracy.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import Dataset

from effdl.core.config import check_range
from effdl.core.errors import ConfigError

__all__ = ["SCENE_TASKS", "SceneDataset", "SceneSplit", "Scenes", "load_scenes", "render_scenes"]

#: the tasks and what each target is
SCENE_TASKS = {
    "segment": "per-pixel class: 0 background, 1 disk, 2 square, 3 triangle",
    "depth": "per-pixel distance from the camera",
    "normal": "per-pixel unit surface normal (x, y, z), facing the camera",
    "edge": "per-pixel object boundary (0 or 1)",
    "count": "visible shapes",
}
SHAPES = ("disk", "square", "triangle")
_LIGHT = np.array([0.45, -0.55, -0.70]) / np.linalg.norm([0.45, -0.55, -0.70])


@dataclasses.dataclass
class SceneSplit:
    """One split: ``images`` ``(n, 3, S, S)`` float32 in [0, 1] and one target tensor per task (see
    :data:`SCENE_TASKS`): ``segment`` ``(n, S, S)`` int64, ``depth`` ``(n, S, S)``, ``normal`` ``(n, 3, S, S)``,
    ``edge`` ``(n, S, S)`` float32, ``count`` ``(n,)`` int64."""

    images: torch.Tensor
    targets: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.images)

    def dataset(self, tasks: tuple[str, ...] | None = None, indices: torch.Tensor | None = None) -> SceneDataset:
        """``(image, {task: target})`` items of ``tasks`` (default all), optionally only at ``indices``."""
        return SceneDataset(self, tasks or tuple(self.targets), indices)


class SceneDataset(Dataset):
    """``(image, {task: target})`` items of a :class:`SceneSplit` (a subset of tasks and of examples)."""

    def __init__(self, split: SceneSplit, tasks: tuple[str, ...], indices: torch.Tensor | None = None) -> None:
        unknown = [t for t in tasks if t not in split.targets]
        if unknown:
            raise ConfigError(f"unknown scene tasks {unknown}; the tasks are {', '.join(split.targets)}")
        self.split, self.tasks = split, tuple(tasks)
        self.indices = indices if indices is not None else torch.arange(len(split))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        j = int(self.indices[i])
        return self.split.images[j], {t: self.split.targets[t][j] for t in self.tasks}


@dataclasses.dataclass
class Scenes:
    """The scene dataset: train, val and test splits (independent draws) and how they were made."""

    train: SceneSplit
    val: SceneSplit
    test: SceneSplit
    size: int
    max_objects: int
    seed: int

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names."""
        return tuple(SCENE_TASKS)

    def describe(self) -> str:
        """One line: sizes and tasks."""
        return (f"scenes: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test images of "
                f"{self.size}x{self.size}, 1-{self.max_objects} shapes; tasks {', '.join(self.tasks)}")  # fmt: skip


def load_scenes(*, train: int = 2000, val: int = 500, test: int = 1000, size: int = 24, max_objects: int = 3,
                seed: int = 0) -> Scenes:  # fmt: skip
    """Renders the scene dataset (fast: no cache needed). Each split is its own draw, seeded by ``(seed, split)``.

    Example:
        >>> s = load_scenes(train=4, val=2, test=2, size=16)
        >>> s.train.images.shape, s.train.targets["normal"].shape, s.train.targets["count"].shape
        (torch.Size([4, 3, 16, 16]), torch.Size([4, 3, 16, 16]), torch.Size([4]))
    """
    check_range("size", size, 8, hint="use size=24")
    check_range("max_objects", max_objects, 1, hint="use max_objects=3")
    splits = [render_scenes(n, size=size, max_objects=max_objects, seed=(seed, i))
              for i, n in enumerate((train, val, test))]  # fmt: skip
    return Scenes(*splits, size=size, max_objects=max_objects, seed=seed)


def render_scenes(n: int, *, size: int = 24, max_objects: int = 3, seed: int | tuple[int, ...] = 0) -> SceneSplit:
    """Renders ``n`` scenes (see the module's description); the same ``seed`` gives the same scenes.

    Example:
        >>> s = render_scenes(3, size=16, seed=1)
        >>> sorted(s.targets), bool(torch.equal(s.images, render_scenes(3, size=16, seed=1).images))
        (['count', 'depth', 'edge', 'normal', 'segment'], True)
    """
    check_range("n", n, 1, hint="render at least one scene")
    rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
    u = (np.arange(size) + 0.5) / size
    xx, yy = np.meshgrid(u, u)  # (S, S): x to the right, y down
    xx, yy = xx[None], yy[None]

    def draw(*shape: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        return rng.uniform(low, high, size=(n, *shape))

    # the background: a tilted plane with a grating texture of a random colour
    tilt = draw(2, low=-0.15, high=0.15)
    depth = 0.9 + tilt[:, 0, None, None] * (xx - 0.5) + tilt[:, 1, None, None] * (yy - 0.5)
    gx = np.broadcast_to(tilt[:, 0, None, None], depth.shape).copy()
    gy = np.broadcast_to(tilt[:, 1, None, None], depth.shape).copy()
    freq, angle, phase = draw(1, low=3, high=8), draw(1, high=np.pi), draw(1, high=2 * np.pi)
    wave = np.sin(2 * np.pi * freq[:, :, None] * (np.cos(angle)[:, :, None] * xx + np.sin(angle)[:, :, None] * yy)
                  + phase[:, :, None])  # fmt: skip
    albedo = draw(3, low=0.25, high=0.75)[:, :, None, None] * (0.75 + 0.25 * wave[:, None])
    owner = np.zeros((n, size, size), dtype=np.int64)  # 0 background, j + 1 object j
    segment = np.zeros((n, size, size), dtype=np.int64)
    objects = rng.integers(1, max_objects + 1, size=n)
    for j in range(max_objects):
        active = (j < objects)[:, None, None]
        kind = rng.integers(1, len(SHAPES) + 1, size=n)[:, None, None]
        centre, radius = draw(2, low=0.2, high=0.8), draw(1, low=0.14, high=0.24)[:, :, None]
        base, colour = draw(1, low=0.35, high=0.75)[:, :, None], draw(3, low=0.2, high=1.0)
        slope = draw(2, low=-0.6, high=0.6)
        dx, dy = xx - centre[:, 0, None, None], yy - centre[:, 1, None, None]
        # disk: a dome (a flattened sphere cap); square: a pyramid; triangle: a tilted plate
        rho2 = dx**2 + dy**2
        cap = np.sqrt(np.clip(radius**2 - rho2, 1e-6, None))
        in_disk, z_disk = rho2 < radius**2, base - 0.6 * cap
        gx_disk, gy_disk = np.clip(0.6 * dx / cap, -3, 3), np.clip(0.6 * dy / cap, -3, 3)
        half = 0.85 * radius
        in_square, z_square = np.maximum(abs(dx), abs(dy)) < half, base - 0.5 * (half - np.maximum(abs(dx), abs(dy)))
        x_major = abs(dx) >= abs(dy)
        gx_square, gy_square = np.where(x_major, 0.5 * np.sign(dx), 0.0), np.where(x_major, 0.0, 0.5 * np.sign(dy))
        in_tri = (dy < 0.7 * radius) & (abs(dx) < 0.9 * (dy + radius) / 1.7)  # apex up, base below
        z_tri = base + slope[:, 0, None, None] * dx + slope[:, 1, None, None] * dy
        z = np.select([kind == 1, kind == 2], [z_disk, z_square], z_tri)
        inside = np.select([kind == 1, kind == 2], [in_disk, in_square], in_tri) & active
        visible = inside & (z < depth)
        depth = np.where(visible, z, depth)
        gx = np.where(visible, np.select([kind == 1, kind == 2], [gx_disk, gx_square], slope[:, 0, None, None]), gx)
        gy = np.where(visible, np.select([kind == 1, kind == 2], [gy_disk, gy_square], slope[:, 1, None, None]), gy)
        owner = np.where(visible, j + 1, owner)
        segment = np.where(visible, kind, segment)
        albedo = np.where(visible[:, None], colour[:, :, None, None], albedo)
    normal = np.stack([gx, gy, -np.ones_like(gx)], axis=1)  # (dz/dx, dz/dy, -1): facing the camera
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    shade = np.clip(np.einsum("nchw,c->nhw", normal, _LIGHT), 0.0, None)
    image = albedo * (0.35 + 0.65 * shade[:, None]) + rng.normal(0.0, 0.02, size=albedo.shape)
    edge = np.zeros((n, size, size), dtype=bool)
    right, down = owner[:, :, 1:] != owner[:, :, :-1], owner[:, 1:, :] != owner[:, :-1, :]
    edge[:, :, 1:] |= right
    edge[:, :, :-1] |= right
    edge[:, 1:, :] |= down
    edge[:, :-1, :] |= down
    seen = np.stack([(owner == j + 1).sum(axis=(1, 2)) for j in range(max_objects)], axis=1)
    count = (seen >= 3).sum(axis=1)  # a shape counts when at least 3 of its pixels show
    return SceneSplit(
        images=torch.from_numpy(np.clip(image, 0.0, 1.0).astype(np.float32)),
        targets={
            "segment": torch.from_numpy(segment),
            "depth": torch.from_numpy(depth.astype(np.float32)),
            "normal": torch.from_numpy(normal.astype(np.float32)),
            "edge": torch.from_numpy(edge.astype(np.float32)),
            "count": torch.from_numpy(count.astype(np.int64)),
        },
    )
