"""Factorized layers, built as plain ``nn.Sequential`` stacks of standard layers (so they train, save, prune and
export like any other module), and their parameter / MAC counts."""

from __future__ import annotations

import torch
from torch import nn

from effdl.core.errors import UnsupportedError
from effdl.factorize.math import svd_factors, tucker2_factors

__all__ = [
    "KINDS",
    "LowRank",
    "check_factorizable",
    "factor_macs",
    "factor_params",
    "factorize_layer",
    "full_rank",
    "layer_matrix",
]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: how each layer type can be factorized
KINDS = {"linear": ("svd",), "conv": ("channel", "tucker2")}


def check_factorizable(module: nn.Module, name: str = "") -> None:
    """Raises :class:`UnsupportedError` unless ``module`` is a Linear or an ungrouped, non-transposed Conv."""
    where = f" ({name})" if name else ""
    if type(module) is nn.Linear:
        return
    if type(module) in _CONVS:
        if module.groups != 1:
            raise UnsupportedError(
                f"grouped/depthwise convolution{where} has groups={module.groups}; it is already factorized along "
                "channels. Leave it out with ignore=[name]"
            )
        return
    raise UnsupportedError(
        f"cannot factorize {type(module).__name__}{where}; supported: nn.Linear and nn.Conv1d/2d/3d with groups=1"
    )


def layer_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight as a matrix (out, in * prod(kernel)), whose SVD the channel decomposition truncates."""
    return module.weight.detach().reshape(module.weight.shape[0], -1)


def full_rank(module: nn.Module, kind: str) -> tuple[int, ...]:
    """The ranks at which ``kind`` reproduces the layer exactly: ``(r,)`` or ``(r_out, r_in)`` for Tucker-2."""
    if kind == "tucker2":  # the ranks of the two channel unfoldings, (out, in*k) and (in, out*k)
        k = module.weight[0, 0].numel()
        return (min(module.out_channels, module.in_channels * k), min(module.in_channels, module.out_channels * k))
    return (min(layer_matrix(module).shape),)


def factor_params(module: nn.Module, kind: str, ranks: tuple[int, ...]) -> int:
    """Parameters of the factorized layer (weights and bias).

    Example:
        >>> factor_params(nn.Linear(100, 50), "svd", (10,))
        1550
    """
    bias = 0 if module.bias is None else module.bias.numel()
    out_ch = module.weight.shape[0]
    if kind == "tucker2":
        r_out, r_in = ranks
        k = module.weight[0, 0].numel()
        return module.in_channels * r_in + r_out * r_in * k + r_out * out_ch + bias
    (r,) = ranks
    return r * layer_matrix(module).shape[1] + out_ch * r + bias


def factor_macs(module: nn.Module, kind: str, ranks: tuple[int, ...], positions: tuple[int, int]) -> int:
    """MACs per example of the factorized layer; ``positions`` = (input positions, output positions) per example
    (1 for a Linear on a vector, the spatial size for convolutions)."""
    pos_in, pos_out = positions
    out_ch = module.weight.shape[0]
    if kind == "tucker2":
        r_out, r_in = ranks
        k = module.weight[0, 0].numel()
        return pos_in * module.in_channels * r_in + pos_out * (r_out * r_in * k + r_out * out_ch)
    (r,) = ranks
    return pos_out * (r * layer_matrix(module).shape[1] + out_ch * r)


class LowRank(nn.Sequential):
    """A factorized layer: an ``nn.Sequential`` of standard layers (so it trains, prunes and exports as usual) that
    knows which decomposition made it and at which ranks, so a checkpoint records the structure.

    Example:
        >>> f = LowRank("svd", (2,), nn.Linear(4, 2, bias=False), nn.Linear(2, 3))
        >>> f.kind, f.ranks, f(torch.zeros(1, 4)).shape
        ('svd', (2,), torch.Size([1, 3]))
    """

    def __init__(self, kind: str, ranks: tuple[int, ...], *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.kind = kind
        self.ranks = tuple(int(r) for r in ranks)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, ranks={self.ranks}"

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight the factors multiply out to (code that reads ``layer.weight``, e.g. for its dtype or to
        call the functional op, still gets the layer's exact map), shaped like the original layer's weight."""
        mats = [m.weight.flatten(1) if m.weight.dim() > 2 else m.weight for m in self]  # (out_i, in_i * k_i)
        if self.kind == "svd":
            return mats[1] @ mats[0]
        if self.kind == "channel":  # (out, r) @ (r, in * k)
            first = self[0].weight
            return (mats[1] @ first.flatten(1)).reshape(mats[1].shape[0], *first.shape[1:])
        reduce, middle, expand = self[0].weight, self[1].weight, self[2].weight  # tucker2
        core = torch.einsum("abk,bi->aik", middle.flatten(2), reduce.flatten(1))  # (r_out, in, k)
        dense = torch.einsum("oa,aik->oik", expand.flatten(1), core)
        return dense.reshape(expand.shape[0], reduce.shape[1], *middle.shape[2:])

    @property
    def bias(self) -> torch.Tensor | None:
        """The bias (on the last factor)."""
        return self[-1].bias


def factorize_layer(module: nn.Module, kind: str, ranks: tuple[int, ...], *, init: bool = True) -> LowRank:
    """The factorized replacement of ``module``: a :class:`LowRank` sequence of two (SVD, channel) or three (Tucker-2)
    layers initialised from the decomposition (``init=False``: only the structure, for loading saved weights), with
    the original bias on the last one.

    - ``svd``: Linear(in, r, no bias) -> Linear(r, out).
    - ``channel``: Conv(in, r, k, same stride/padding/dilation, no bias) -> 1x1 Conv(r, out) (Zhang et al., TPAMI
      2016: the SVD of the (out, in*k) kernel matrix).
    - ``tucker2``: 1x1 Conv(in, r_in) -> Conv(r_in, r_out, k) -> 1x1 Conv(r_out, out) (Kim et al., ICLR 2016).

    Example:
        >>> lin = nn.Linear(6, 4)
        >>> f = factorize_layer(lin, "svd", (4,))
        >>> x = torch.randn(2, 6)
        >>> torch.allclose(f(x), lin(x), atol=1e-5)
        True
    """
    check_factorizable(module)
    dtype, device = module.weight.dtype, module.weight.device
    if type(module) is nn.Linear:
        if kind != "svd":
            raise UnsupportedError(f"a Linear layer is factorized with kind='svd', got kind={kind!r}")
        first = nn.Linear(module.in_features, ranks[0], bias=False)
        second = nn.Linear(ranks[0], module.out_features, bias=module.bias is not None)
        if init:
            first_w, second_w = svd_factors(module.weight.detach(), ranks[0])
            _copy(first, first_w, None)
            _copy(second, second_w, module.bias)
        return LowRank(kind, ranks, first, second).to(device=device, dtype=dtype)
    conv = type(module)
    dims = module.weight.dim() - 2
    ones = (1,) * dims
    same = {"padding_mode": module.padding_mode}
    if kind == "channel":
        (r,) = ranks
        spatial = conv(module.in_channels, r, module.kernel_size, module.stride, module.padding, module.dilation,
                       bias=False, **same)  # fmt: skip
        point = conv(r, module.out_channels, ones, bias=module.bias is not None)
        if init:
            first_w, second_w = svd_factors(layer_matrix(module), r)
            _copy(spatial, first_w.reshape(r, *module.weight.shape[1:]), None)
            _copy(point, second_w.reshape(module.out_channels, r, *ones), module.bias)
        return LowRank(kind, ranks, spatial, point).to(device=device, dtype=dtype)
    if kind == "tucker2":
        r_out, r_in = ranks
        reduce = conv(module.in_channels, r_in, ones, bias=False)
        middle = conv(r_in, r_out, module.kernel_size, module.stride, module.padding, module.dilation,
                      bias=False, **same)  # fmt: skip
        expand = conv(r_out, module.out_channels, ones, bias=module.bias is not None)
        if init:
            u_in, core, u_out = tucker2_factors(module.weight.detach(), r_out, r_in)
            _copy(reduce, u_in.T.reshape(r_in, module.in_channels, *ones), None)
            _copy(middle, core, None)
            _copy(expand, u_out.reshape(module.out_channels, r_out, *ones), module.bias)
        return LowRank(kind, ranks, reduce, middle, expand).to(device=device, dtype=dtype)
    raise UnsupportedError(f"a convolution is factorized with kind='channel' or 'tucker2', got kind={kind!r}")


def _copy(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias.detach())
