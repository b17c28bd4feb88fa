"""Search spaces that train here: parameterized families of small CNNs (1D for MNIST-1D, 2D for the 8x8 digits),
with a seeded sampler, a mutation operator for evolutionary search, and a string encoding.

An architecture is a stack of ``depth`` blocks ``conv(k, stride) -> BatchNorm -> ReLU`` (with an identity or a 1x1
projection shortcut when ``residual``), then flatten and a linear classifier. Its encoding reads
``c16-32_k5-3_s1-2_r1``: channels, kernel sizes and strides per block, residual on or off.
"""

from __future__ import annotations

import dataclasses
import re

import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.core.registry import Registry

__all__ = ["SPACES", "Architecture", "SearchSpace", "get_space"]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One point of a search space.

    Example:
        >>> a = Architecture.decode("c16-32_k5-3_s1-2_r1")
        >>> a.channels, a.residual, a.encode()
        ((16, 32), True, 'c16-32_k5-3_s1-2_r1')
    """

    channels: tuple[int, ...]
    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    residual: bool

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n == 0 or len(self.kernels) != n or len(self.strides) != n:
            raise ConfigError(
                f"an architecture needs one channel count, kernel size and stride per block, got channels="
                f"{self.channels}, kernels={self.kernels}, strides={self.strides}"
            )
        if min(self.channels) < 1 or min(self.kernels) < 1 or min(self.strides) < 1:
            raise ConfigError(f"channels, kernels and strides must be >= 1, got {self.encode()}")

    @property
    def depth(self) -> int:
        """Number of conv blocks."""
        return len(self.channels)

    def encode(self) -> str:
        """``c16-32_k5-3_s1-2_r1``."""

        def join(values):
            return "-".join(str(v) for v in values)

        return f"c{join(self.channels)}_k{join(self.kernels)}_s{join(self.strides)}_r{int(self.residual)}"

    @classmethod
    def decode(cls, text: str) -> Architecture:
        """Parses :meth:`encode`'s string, with a clear error on anything else."""
        m = re.fullmatch(r"c([\d-]+)_k([\d-]+)_s([\d-]+)_r([01])", text.strip())
        if not m:
            raise ConfigError(f"cannot parse architecture {text!r}; expected e.g. 'c16-32_k5-3_s1-2_r1'")
        parts = [tuple(int(v) for v in g.split("-") if v) for g in m.groups()[:3]]
        return cls(parts[0], parts[1], parts[2], m.group(4) == "1")


class _Block(nn.Module):
    def __init__(self, conv, norm, c_in: int, c_out: int, k: int, stride: int, residual: bool):
        super().__init__()
        self.conv = conv(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
        self.bn = norm(c_out)
        self.act = nn.ReLU()
        self.shortcut = None
        if residual:
            same = c_in == c_out and stride == 1
            self.shortcut = (
                nn.Identity() if same else nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))
            )

    def forward(self, x):
        out = self.bn(self.conv(x))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act(out)


class SearchCNN(nn.Module):
    """The network an :class:`Architecture` describes."""

    def __init__(self, arch: Architecture, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        dims = len(input_shape) - 1
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
        norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims]
        blocks, c_in = [], input_shape[0]
        for c, k, s in zip(arch.channels, arch.kernels, arch.strides, strict=True):
            blocks.append(_Block(conv, norm, c_in, c, k, s, arch.residual))
            c_in = c
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A family of :class:`Architecture`\\ s over fixed choices, for one dataset's input shape.

    Example:
        >>> space = get_space("mnist1d_cnn")
        >>> arch = space.sample(torch.Generator().manual_seed(0))
        >>> space.contains(arch), space.build(arch)(torch.zeros(2, 1, 40)).shape
        (True, torch.Size([2, 10]))
    """

    name: str
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    strides: tuple[int, ...] = (1, 2)
    residual: tuple[bool, ...] = (False, True)
    max_downsampling: int = 4  # product of strides, so that small inputs keep a spatial extent

    def _pick(self, options, g: torch.Generator):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    def sample(self, generator: torch.Generator) -> Architecture:
        """A uniformly random architecture (each choice drawn independently; strides redrawn while their product
        exceeds ``max_downsampling``)."""
        depth = self._pick(self.depths, generator)
        channels = tuple(self._pick(self.widths, generator) for _ in range(depth))
        kernels = tuple(self._pick(self.kernels, generator) for _ in range(depth))
        while True:
            strides = tuple(self._pick(self.strides, generator) for _ in range(depth))
            if _product(strides) <= self.max_downsampling:
                break
        return Architecture(channels, kernels, strides, self._pick(self.residual, generator))

    def mutate(self, arch: Architecture, generator: torch.Generator) -> Architecture:
        """A neighbour: one choice changed (a block's width, kernel or stride, the residual flag, or the depth by
        adding or removing the last block)."""
        for _ in range(100):
            kind = self._pick(("width", "kernel", "stride", "residual", "depth"), generator)
            c, k, s, r = list(arch.channels), list(arch.kernels), list(arch.strides), arch.residual
            i = int(torch.randint(arch.depth, (1,), generator=generator))
            if kind == "width":
                c[i] = self._pick(self.widths, generator)
            elif kind == "kernel":
                k[i] = self._pick(self.kernels, generator)
            elif kind == "stride":
                s[i] = self._pick(self.strides, generator)
            elif kind == "residual":
                r = not r if len(self.residual) > 1 else r
            else:
                depth = self._pick(self.depths, generator)
                while len(c) < depth:
                    c.append(self._pick(self.widths, generator))
                    k.append(self._pick(self.kernels, generator))
                    s.append(1)
                c, k, s = c[:depth], k[:depth], s[:depth]
            new = Architecture(tuple(c), tuple(k), tuple(s), r)
            if new != arch and self.contains(new):
                return new
        return self.sample(generator)

    def contains(self, arch: Architecture) -> bool:
        """Whether every choice of ``arch`` is one of this space's options."""
        return (
            arch.depth in self.depths
            and all(c in self.widths for c in arch.channels)
            and all(k in self.kernels for k in arch.kernels)
            and all(s in self.strides for s in arch.strides)
            and arch.residual in self.residual
            and _product(arch.strides) <= self.max_downsampling
        )

    def build(self, arch: Architecture | str) -> nn.Module:
        """The untrained network (weights from the global RNG, like any ``nn.Module``)."""
        arch = Architecture.decode(arch) if isinstance(arch, str) else arch
        return SearchCNN(arch, self.input_shape, self.num_classes)

    def size(self) -> int:
        """How many architectures the choices allow (ignoring the downsampling limit)."""
        per_block = len(self.widths) * len(self.kernels) * len(self.strides)
        return sum(per_block**d for d in self.depths) * len(self.residual)


def _product(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


SPACES: Registry[SearchSpace] = Registry("search space")
SPACES.add(
    "mnist1d_cnn",
    SearchSpace(
        "mnist1d_cnn", "mnist1d", (1, 40), 10, depths=(1, 2, 3, 4), widths=(4, 8, 16, 32, 64), kernels=(3, 5, 7, 9)
    ),
    description="1D CNNs for MNIST-1D: 1-4 blocks, widths 4-64, kernels 3-9, stride 1/2, residual or not",
)
SPACES.add(
    "digits_cnn",
    SearchSpace("digits_cnn", "digits", (1, 8, 8), 10, depths=(1, 2, 3), widths=(4, 8, 16, 32, 64), kernels=(3, 5)),
    description="2D CNNs for the 8x8 digits: 1-3 blocks, widths 4-64, kernels 3/5, stride 1/2, residual or not",
)


def get_space(name: str | SearchSpace) -> SearchSpace:
    """A registered search space by name (an unknown name lists the valid ones), or the space itself.

    Example:
        >>> get_space("digits_cnn").input_shape
        (1, 8, 8)
    """
    return name if isinstance(name, SearchSpace) else SPACES.get(name, allow_callable=False)
