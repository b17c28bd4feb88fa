"""Pure math of weight-only quantization: group-wise affine grids, packing of 4-bit codes, and the methods that
choose the integers — round-to-nearest, GPTQ (Frantar et al. 2023), AWQ's activation-aware scales (Lin et al.
2024) and HQQ's half-quadratic zero points (Badri & Shaji 2023).

Every grid has one form, the one PyTorch's CPU int4 kernel computes: ``w = (code - mid) * scale + offset`` per
group of ``group_size`` input features of one output row, with ``code`` in ``[0, 2^bits)`` and
``mid = 2^(bits-1)``. Symmetric grids have ``offset = 0``; an integer zero point ``z`` is
``offset = (mid - z) * scale``; HQQ's float zero points are any offset. Scales and offsets are rounded to
bfloat16 (what the kernel reads) before the codes are chosen, so the stored integers are optimal for the grid
that runs."""

from __future__ import annotations

import dataclasses
import math

import torch

from effdl.core.errors import ConfigError
from effdl.measure.activations import inverse_hessian_factor

__all__ = [
    "Grid",
    "awq_clip",
    "awq_input_scale",
    "dequantize",
    "gptq",
    "group_grid",
    "hqq",
    "pack_int4",
    "quantize_codes",
    "rtn",
    "unpack_int4",
]


@dataclasses.dataclass
class Grid:
    """Integer codes of a weight matrix and the grid that maps them back.

    Attributes:
        codes: (out, in) uint8 codes in ``[0, 2^bits)``.
        scale: (out, groups) bfloat16 step sizes.
        offset: (out, groups) bfloat16 offsets (zeros for a symmetric grid).
        bits: bits per code.
        group_size: input features per group.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    bits: int
    group_size: int

    def dequantize(self) -> torch.Tensor:
        """The float32 weight the codes stand for."""
        return dequantize(self.codes, self.scale, self.offset, self.bits, self.group_size)


def _groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    out, k = w.shape
    if k % group_size:
        raise ConfigError(f"group_size={group_size} does not divide the {k} input features")
    return w.reshape(out, k // group_size, group_size)


def group_grid(
    w: torch.Tensor, bits: int, group_size: int, *, symmetric: bool, clip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max ``(scale, offset)`` per group of ``w`` (out, in), both (out, groups) bfloat16; ``clip`` (out,
    groups) in (0, 1] shrinks each group's range (weights outside it are clamped when quantized).

    Example:
        >>> s, o = group_grid(torch.tensor([[-1.0, 0.0, 0.5, 2.0]]), 4, 4, symmetric=False)
        >>> round(s.item(), 3), round(o.item(), 3)
        (0.2, 0.602)
    """
    g = _groups(w.float(), group_size)
    qmax = 2**bits - 1
    mid = 2 ** (bits - 1)
    shrink = 1.0 if clip is None else clip.float()
    if symmetric:
        scale = g.abs().amax(-1) * shrink / (mid - 1)  # codes mid-(mid-1) .. mid+(mid-1): symmetric around zero
        offset = torch.zeros_like(scale)
    else:
        lo = g.amin(-1).clamp(max=0.0) * shrink  # zero stays exactly representable (Jacob et al. 2018)
        hi = g.amax(-1).clamp(min=0.0) * shrink
        scale = (hi - lo) / qmax
        zero = torch.round(-lo / scale.clamp(min=1e-12)).clamp(0, qmax)
        offset = (mid - zero) * scale
    scale = scale.clamp(min=1e-8)
    return scale.to(torch.bfloat16), offset.to(torch.bfloat16)


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int) -> torch.Tensor:
    """Nearest codes of ``w`` (out, in) on the grid ``(scale, offset)`` (out, groups): uint8 (out, in).

    Example:
        >>> quantize_codes(torch.tensor([[0.3, -0.3]]), torch.tensor([[0.1]]), torch.tensor([[0.0]]), 4).tolist()
        [[11, 5]]
    """
    out, k = w.shape
    gs = k // scale.shape[1]
    g = _groups(w.float(), gs)
    q = torch.round((g - offset.float()[..., None]) / scale.float()[..., None]) + 2 ** (bits - 1)
    return q.clamp(0, 2**bits - 1).reshape(out, k).to(torch.uint8)


def dequantize(
    codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int, group_size: int
) -> torch.Tensor:
    """``(code - mid) * scale + offset`` per group: the float32 (out, in) weight.

    Example:
        >>> dequantize(torch.tensor([[11, 5]], dtype=torch.uint8), torch.tensor([[0.1]]), torch.zeros(1, 1), 4, 2)
        tensor([[ 0.3000, -0.3000]])
    """
    out, k = codes.shape
    g = _groups(codes.float() - 2 ** (bits - 1), group_size)
    return (g * scale.float()[..., None] + offset.float()[..., None]).reshape(out, k)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte, the even column in the low nibble: (out, in) -> (out, in / 2) uint8.

    Example:
        >>> pack_int4(torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)).tolist()
        [[33, 15]]
    """
    if codes.shape[-1] % 2:
        raise ConfigError(f"4-bit packing needs an even number of input features, got {codes.shape[-1]}")
    c = codes.to(torch.uint8)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`.

    Example:
        >>> unpack_int4(torch.tensor([[33, 15]], dtype=torch.uint8)).tolist()
        [[1, 2, 15, 0]]
    """
    lo, hi = packed & 0x0F, packed >> 4
    return torch.stack([lo, hi], dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def rtn(w: torch.Tensor, bits: int, group_size: int, *, symmetric: bool) -> Grid:
    """Round-to-nearest on the min-max grid of each group.

    Example:
        >>> g = rtn(torch.randn(4, 64), 8, 32, symmetric=True)
        >>> g.codes.shape, g.scale.shape
        (torch.Size([4, 64]), torch.Size([4, 2]))
    """
    scale, offset = group_grid(w, bits, group_size, symmetric=symmetric)
    return Grid(quantize_codes(w, scale, offset, bits), scale, offset, bits, group_size)


def gptq(
    w: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int,
    *,
    symmetric: bool,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
) -> Grid:
    """GPTQ (Frantar et al. 2023, Alg. 1): quantizes the columns of ``w`` (out, in) one at a time and spreads each
    column's rounding error over the columns not yet quantized through the inverse Hessian's Cholesky factor, so
    that ``||W X - Q X||^2`` on the calibration inputs is small.

    Args:
        w: the float weight (out, in).
        hessian: ``2 X^T X / n`` (in, in) of the layer's calibration inputs.
        bits, group_size, symmetric: the grid.
        damp: added to the diagonal, as a fraction of its mean (numerical stability).
        block_size: columns updated together (lazy batch updates, sec. 3.2).
        act_order: quantize columns in order of decreasing Hessian diagonal; each group's grid is then fixed from
            the original weights first ("static groups"), so groups stay contiguous for the kernel.

    Example:
        >>> _ = torch.manual_seed(0); x = torch.randn(256, 32); w = torch.randn(8, 32)
        >>> h = 2 * x.T @ x / 256
        >>> q = gptq(w, h, 4, 32, symmetric=False)
        >>> err = lambda g: ((x @ (w - g.dequantize()).T) ** 2).sum()
        >>> bool(err(q) < err(rtn(w, 4, 32, symmetric=False)))
        True
    """
    out, k = w.shape
    groups = k // group_size
    scale = torch.empty(out, groups, dtype=torch.bfloat16)
    offset = torch.empty(out, groups, dtype=torch.bfloat16)
    perm = None
    if act_order:
        diag = torch.diag(hessian)
        perm = torch.argsort(torch.where(diag == 0, diag.new_ones(()), diag), descending=True, stable=True)
    W, Hinv = inverse_hessian_factor(w, hessian, damp=damp, method="GPTQ", perm=perm)
    if act_order:  # static groups: the grid of every group comes from the original (dead-zeroed) weights
        original = torch.empty_like(W)
        original[:, perm] = W
        for gi in range(groups):
            sl = slice(gi * group_size, (gi + 1) * group_size)
            scale[:, gi : gi + 1], offset[:, gi : gi + 1] = group_grid(original[:, sl], bits, group_size,
                                                                      symmetric=symmetric)  # fmt: skip
    else:
        perm = torch.arange(k)
    codes = torch.empty(out, k, dtype=torch.uint8)
    mid = 2 ** (bits - 1)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])  # the column's index in the original order
            gi = col // group_size
            if not act_order and col % group_size == 0:  # a new group: its grid from the weights as updated so far
                ahead = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :group_size]
                scale[:, gi : gi + 1], offset[:, gi : gi + 1] = group_grid(ahead, bits, group_size,
                                                                          symmetric=symmetric)  # fmt: skip
            s, o = scale[:, gi].float(), offset[:, gi].float()
            wcol = W1[:, i]
            q = torch.clamp(torch.round((wcol - o) / s) + mid, 0, 2**bits - 1)
            codes[:, col] = q.to(torch.uint8)
            err = (wcol - ((q - mid) * s + o)) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]  # OBS update of the remaining columns (eq. 3)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Grid(codes, scale, offset, bits, group_size)


def awq_input_scale(
    w: torch.Tensor,
    x: torch.Tensor,
    mean_abs: torch.Tensor,
    bits: int,
    group_size: int,
    *,
    symmetric: bool,
    grid: int = 20,
) -> tuple[torch.Tensor, float, float]:
    """AWQ (Lin et al. 2024, sec. 3.2): per-input-feature scales ``s = mean|x|^alpha`` that protect the weights
    of salient features; ``alpha`` in ``[0, 1)`` is searched on ``grid`` points to minimise
    ``||Q(W diag(s)) (x / s) - W x||^2`` on the sample rows ``x``. Returns ``(s, best error, error at alpha=0)``
    (``alpha = 0`` is round-to-nearest).

    Example:
        >>> _ = torch.manual_seed(0); x = torch.randn(64, 32) * torch.linspace(0.1, 5, 32); w = torch.randn(8, 32)
        >>> s, best, plain = awq_input_scale(w, x, x.abs().mean(0), 4, 32, symmetric=False)
        >>> s.shape, best <= plain
        (torch.Size([32]), True)
    """
    w = w.detach().float()
    x = x.float()
    ref = x @ w.T
    base = mean_abs.float().clamp(min=1e-6)
    best, best_s, plain = math.inf, torch.ones_like(base), math.inf
    for n in range(grid):
        alpha = n / grid
        s = base.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()  # centre the scales around 1 (as the reference code does)
        q = rtn(w * s, bits, group_size, symmetric=symmetric).dequantize()
        err = float(((x / s) @ q.T - ref).pow(2).mean())
        if n == 0:
            plain = err
        if err < best:
            best, best_s = err, s
    return best_s, best, plain


def awq_clip(
    w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int, *, symmetric: bool, grid: int = 20,
    max_shrink: float = 0.5,
) -> Grid:  # fmt: skip
    """AWQ's clipping search (Lin et al. 2024, the ``auto_clip`` step of the reference code): for every group of
    every output row, the range shrink in ``[1 - max_shrink, 1]`` (``grid`` points) whose quantized group gives the
    smallest error of that group's contribution to the output, ``mean_rows (x_g . (w_g - q_g))^2``, on the sample
    rows ``x``. Shrink 1 is the min-max grid, so no group gets worse than round-to-nearest.

    Example:
        >>> _ = torch.manual_seed(0); x = torch.randn(64, 32); w = torch.randn(8, 32)
        >>> err = lambda g: float(((x @ (w - g.dequantize()).T) ** 2).mean())
        >>> err(awq_clip(w, x, 4, 32, symmetric=False)) <= err(rtn(w, 4, 32, symmetric=False))
        True
    """
    w = w.detach().float()
    out, k = w.shape
    groups = k // group_size
    xg = x.float().reshape(len(x), groups, group_size)  # (rows, groups, size)
    best_err = torch.full((out, groups), math.inf)
    best = torch.ones(out, groups)
    for n in range(grid):
        ratio = 1.0 - max_shrink * n / grid
        clip = torch.full((out, groups), ratio)
        scale, offset = group_grid(w, bits, group_size, symmetric=symmetric, clip=clip)
        diff = (w - dequantize(quantize_codes(w, scale, offset, bits), scale, offset, bits, group_size))
        diff = diff.reshape(out, groups, group_size)
        err = torch.einsum("rgs,ogs->rog", xg, diff).pow(2).mean(0)  # (out, groups)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, clip, best)
    scale, offset = group_grid(w, bits, group_size, symmetric=symmetric, clip=best)
    return Grid(quantize_codes(w, scale, offset, bits), scale, offset, bits, group_size)


def hqq(
    w: torch.Tensor,
    bits: int,
    group_size: int,
    *,
    iters: int = 20,
    lp_norm: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
) -> Grid:
    """HQQ (Badri & Shaji 2023): keeps the min-max scale of each group and fits a float zero point by
    half-quadratic splitting on the ``l_p`` (``p < 1``) norm of the weight error, without data: alternate
    ``W_e = shrink_p(W - dq(Q(W)))`` (a generalised soft threshold) and ``z = mean(Q(W) - (W - W_e) / s)``,
    with ``beta`` growing by ``kappa``; stops when the error stops falling.

    Example:
        >>> _ = torch.manual_seed(0); w = torch.randn(16, 64)
        >>> e = lambda g: (w - g.dequantize()).abs().pow(0.7).sum()
        >>> bool(e(hqq(w, 4, 32)) <= e(rtn(w, 4, 32, symmetric=False)))
        True
    """
    g = _groups(w.detach().float(), group_size)  # (out, groups, size)
    qmax, mid = 2**bits - 1, 2 ** (bits - 1)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    s = ((hi - lo) / qmax).clamp(min=1e-8).to(torch.bfloat16).float()
    z = -lo / s  # float zero point: w ~ (q - z) * s

    def quant(zp):
        return torch.clamp(torch.round(g / s + zp), 0, qmax)

    def lp_error(zp):
        return float((g - (quant(zp) - zp) * s).abs().pow(lp_norm).sum())

    best_z, best = z.clone(), lp_error(z)
    for _ in range(iters):
        q = quant(z)
        r = g - (q - z) * s
        shrink = torch.sign(r) * torch.relu(r.abs() - (1.0 / beta) * r.abs().clamp(min=1e-12).pow(lp_norm - 1))
        z = torch.mean(q - (g - shrink) / s, dim=-1, keepdim=True)
        beta *= kappa
        err = lp_error(z)
        if err >= best:
            break
        best, best_z = err, z.clone()
    scale = s[..., 0].to(torch.bfloat16)
    offset = ((mid - best_z[..., 0]) * s[..., 0]).to(torch.bfloat16)
    return Grid(quantize_codes(w, scale, offset, bits), scale, offset, bits, group_size)
