"""The multi-task network: one residual backbone whose blocks each task executes or skips (AdaShare's select-or-skip
policy; all executed is hard parameter sharing), and one small head per task. With a fixed policy a forward pass
computes each distinct prefix of executed blocks once, so tasks that share their first blocks share that compute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from effdl.core.errors import ConfigError
from effdl.multitask.tasks import TaskSpec

__all__ = ["MultiTaskNet", "ResidualBlock"]


class ResidualBlock(nn.Module):
    """A basic residual block (two 3x3 convolutions with BatchNorm) whose residual branch can be gated: ``gate`` 1
    executes it, 0 skips it (the block is then its shortcut: the identity, or a strided 1x1 convolution where the
    block changes shape), a value in between scales it (soft or straight-through policies)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | float = 1.0) -> torch.Tensor:
        """``relu(shortcut(x) + gate * body(x))``; the body is not run when ``gate`` is the number 0."""
        if isinstance(gate, (int, float)) and gate == 0:
            return F.relu(self.shortcut(x))
        return F.relu(self.shortcut(x) + gate * self.body(x))


class MultiTaskNet(nn.Module):
    """A residual backbone shared by ``tasks`` and a head per task; ``forward(x)`` returns ``{task: output}``
    (dense outputs at the input's resolution, ``(B, channels, H, W)``; image-level ``(B, channels)``).

    Which blocks a task executes is its row of ``gates`` (a ``(tasks, blocks)`` buffer of 0/1; all ones = hard
    sharing). During AdaShare's policy learning (``sampling = True``) the gates are drawn instead from
    ``policy_logits`` (``(tasks, blocks, 2)``: select, skip) with straight-through Gumbel-softmax at
    ``temperature``; blocks before ``learn_from`` are executed (the curriculum learns the last blocks first).

    Args:
        tasks: ``{name: TaskSpec}``.
        widths: channels of each residual block; strides: the stride of each (a block with stride 2 halves the
            resolution).
        in_channels: image channels.

    Example:
        >>> from effdl.multitask.tasks import TaskSpec
        >>> tasks = {"seg": TaskSpec("segment", 4), "n": TaskSpec("label", 3)}
        >>> net = MultiTaskNet(tasks, widths=(8, 8), strides=(1, 2))
        >>> {k: tuple(v.shape) for k, v in net(torch.rand(2, 3, 16, 16)).items()}
        {'seg': (2, 4, 16, 16), 'n': (2, 3)}
    """

    def __init__(self, tasks: Mapping[str, TaskSpec], *, widths: Sequence[int] = (16, 16, 32, 32, 32, 32),
                 strides: Sequence[int] | None = None, in_channels: int = 3) -> None:  # fmt: skip
        super().__init__()
        if not tasks:
            raise ConfigError("a multi-task network needs at least one task")
        strides = tuple(strides) if strides is not None else tuple(2 if i == 2 else 1 for i in range(len(widths)))
        if len(strides) != len(widths):
            raise ConfigError(f"{len(widths)} block widths but {len(strides)} strides; give one stride per block")
        self.specs = dict(tasks)
        self.task_names = tuple(tasks)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())  # fmt: skip
        chans = [widths[0], *widths]
        self.blocks = nn.ModuleList(ResidualBlock(chans[i], chans[i + 1], s) for i, s in enumerate(strides))
        c = widths[-1]
        self.heads = nn.ModuleDict()
        for name, spec in tasks.items():
            if spec.dense:
                self.heads[name] = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                                 nn.Conv2d(c, spec.channels, 1))  # fmt: skip
            else:
                self.heads[name] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, spec.channels))
        t, n = len(tasks), len(widths)
        self.register_buffer("gates", torch.ones(t, n))
        self.policy_logits = nn.Parameter(torch.zeros(t, n, 2), requires_grad=False)
        self.sampling = False
        self.temperature = 5.0
        self.learn_from = 0

    @property
    def num_blocks(self) -> int:
        """Residual blocks in the backbone."""
        return len(self.blocks)

    def set_policy(self, gates: torch.Tensor | Sequence[Sequence[int]]) -> None:
        """Fixes which blocks each task executes: ``(tasks, blocks)`` of 0/1, rows in ``task_names`` order."""
        gates = torch.as_tensor(gates, dtype=torch.float32)
        if gates.shape != self.gates.shape or not bool(((gates == 0) | (gates == 1)).all()):
            raise ConfigError(f"a policy is a {tuple(self.gates.shape)} matrix of 0/1 (tasks x blocks), got "
                              f"{tuple(gates.shape)}")  # fmt: skip
        self.gates.copy_(gates)

    def select_probabilities(self) -> torch.Tensor:
        """``(tasks, blocks)`` probability of executing each block under the policy logits."""
        return self.policy_logits.softmax(dim=-1)[..., 0]

    def _head(self, name: str, h: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.heads[name](h)
        if self.specs[name].dense and out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out

    def forward(self, x: torch.Tensor, tasks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """``{task: output}`` for ``tasks`` (default all)."""
        names = tuple(tasks) if tasks is not None else self.task_names
        size = tuple(x.shape[-2:])
        stem = self.stem(x)
        outputs: dict[str, torch.Tensor] = {}
        if self.sampling:
            for name in names:
                t = self.task_names.index(name)
                sample = F.gumbel_softmax(self.policy_logits[t], tau=self.temperature, hard=True)[:, 0]
                h = stem
                for i, block in enumerate(self.blocks):
                    h = block(h, 1.0 if i < self.learn_from else sample[i])
                outputs[name] = self._head(name, h, size)
            return outputs
        cache: dict[tuple[int, ...], torch.Tensor] = {(): stem}
        for name in names:
            row = tuple(int(g) for g in self.gates[self.task_names.index(name)].tolist())
            h = stem
            for i in range(len(row)):
                key = row[: i + 1]
                if key not in cache:
                    cache[key] = self.blocks[i](h, row[i])
                h = cache[key]
            outputs[name] = self._head(name, h, size)
        return outputs
