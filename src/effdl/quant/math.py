"""Pure quantization arithmetic: integer ranges, scales and zero points, quantize / dequantize, fake-quantization
with the straight-through estimator (STE), stochastic rounding, learned step size (LSQ) and fixed-point multipliers.

No module here holds state; the fake-quant modules and the integer engine call these functions.

Conventions: ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` and ``x_hat = (q - zero_point) * scale``.
Signed weights use the narrow symmetric range ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (so 2 bits is ternary); 1 bit
signed is binary, ``x_hat = scale * sign(x)`` with ``sign(0) = +1``. Unsigned activations use ``[0, 2^b - 1]``.
"""

from __future__ import annotations

import torch

from effdl.core.errors import ConfigError

__all__ = [
    "MAX_BITS",
    "accumulator_range",
    "check_bits",
    "dequantize",
    "fake_quantize",
    "fixed_point_multiplier",
    "lsq_fake_quantize",
    "qparams_from_range",
    "qrange",
    "quantize",
    "requantize",
    "round_ste",
    "stochastic_round",
    "wrap_around",
]

MAX_BITS = 8


def check_bits(bits: int, name: str = "bits", *, low: int = 1, high: int = MAX_BITS) -> int:
    """Returns ``bits`` if it is an integer in ``[low, high]``, else raises :class:`ConfigError`.

    Example:
        >>> check_bits(4)
        4
        >>> check_bits(9, "bits_w")
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: bits_w must be an integer in [1, 8], got bits_w=9; use bits_w=8 for int8 ...
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= high:
        raise ConfigError(
            f"{name} must be an integer in [{low}, {high}], got {name}={bits!r}; use {name}={high} for int8 or "
            f"{name}=4 for 4-bit quantization"
            if high == MAX_BITS
            else f"{name} must be an integer in [{low}, {high}], got {name}={bits!r}"
        )
    return bits


def qrange(bits: int, *, signed: bool, narrow: bool = True) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` of a ``bits``-bit code.

    Signed codes are symmetric (``narrow``, the default: ``-qmax``) or two's complement (``-qmax - 1``); 1 bit
    signed is binary, returned as ``(-1, 1)``: pass ``binary=True`` to the quantize functions for the codes
    -1 and +1 (no zero); 2 bits narrow is ternary, also ``(-1, 1)``.

    Example:
        >>> qrange(8, signed=True), qrange(8, signed=False), qrange(2, signed=True), qrange(1, signed=True)
        ((-127, 127), (0, 255), (-1, 1), (-1, 1))
    """
    check_bits(bits)
    if not signed:
        return 0, 2**bits - 1
    if bits == 1:
        return -1, 1
    qmax = 2 ** (bits - 1) - 1
    return (-qmax if narrow else -qmax - 1), qmax


def accumulator_range(bits: int) -> tuple[int, int]:
    """Range of a two's-complement accumulator of ``bits`` bits (2 to 64).

    Example:
        >>> accumulator_range(8)
        (-128, 127)
    """
    check_bits(bits, "accumulator bits", low=2, high=64)
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _view(t: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Reshapes per-channel ``t`` (C,) to broadcast along ``axis`` of ``x``."""
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def qparams_from_range(
    min_val: torch.Tensor, max_val: torch.Tensor, bits: int, *, symmetric: bool, signed: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map ``[min_val, max_val]`` (per tensor or per channel) onto the code range.

    The range is widened to contain 0 (so that zero is exact). Symmetric: ``scale = max|x| / qmax``, zero point 0
    (for binary, ``scale = max|x|``; observers of binary weights use ``mean|x|`` instead). Affine:
    ``scale = (max - min) / (qmax - qmin)``, zero point ``qmin - round(min / scale)``.

    Example:
        >>> s, z = qparams_from_range(torch.tensor(0.0), torch.tensor(2.55), 8, symmetric=False, signed=False)
        >>> round(float(s), 4), int(z)
        (0.01, 0)
    """
    qmin, qmax = qrange(bits, signed=signed)
    min_val = torch.clamp(min_val.float(), max=0.0)
    max_val = torch.clamp(max_val.float(), min=0.0)
    tiny = torch.finfo(torch.float32).eps
    if symmetric:
        amax = torch.maximum(-min_val, max_val)
        scale = torch.clamp(amax / qmax, min=tiny)
        return scale, torch.zeros_like(scale)
    scale = torch.clamp((max_val - min_val) / (qmax - qmin), min=tiny)
    zero_point = torch.clamp(qmin - torch.round(min_val / scale), qmin, qmax)
    return scale, zero_point


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    *,
    axis: int | None = None,
    binary: bool = False,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integer codes of ``x``, returned as a float tensor of whole numbers. ``stochastic`` rounds up with
    probability equal to the fractional part (unbiased). ``binary`` gives the codes -1 and +1 (``sign``, with
    ``sign(0) = +1``; stochastically, +1 with probability ``(clip(x/s, -1, 1) + 1) / 2``).

    Example:
        >>> quantize(torch.tensor([0.26, -1.0, 9.0]), torch.tensor(0.5), torch.tensor(0.0), -7, 7)
        tensor([ 1., -2.,  7.])
    """
    s, z = _view(scale, x, axis), _view(zero_point, x, axis)
    if binary and not stochastic:
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    v = x / s
    if binary:  # stochastic binarization: P(+1) = (clip(v) + 1) / 2 (Courbariaux et al. 2015)
        p = (v.clamp(-1, 1) + 1) / 2
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return torch.where(u < p, 1.0, -1.0).to(x.dtype)
    v = stochastic_round(v, generator) if stochastic else torch.round(v)
    return torch.clamp(v + z, qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, axis: int | None = None):
    """``(q - zero_point) * scale``.

    Example:
        >>> dequantize(torch.tensor([3.0]), torch.tensor(0.5), torch.tensor(1.0))
        tensor([1.])
    """
    return (q - _view(zero_point, q, axis)) * _view(scale, q, axis)


def stochastic_round(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rounds down or up with probability equal to the distance to the other integer: ``E[round(x)] = x``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> abs(float(stochastic_round(torch.full((20000,), 0.3), g).mean()) - 0.3) < 0.02
        True
    """
    floor = torch.floor(x)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return floor + (u < (x - floor)).to(x.dtype)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity in the backward pass (straight-through estimator).

    Example:
        >>> x = torch.tensor([0.4, 1.6], requires_grad=True)
        >>> round_ste(x).sum().backward()
        >>> x.grad
        tensor([1., 1.])
    """
    return x + (torch.round(x) - x).detach()


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    *,
    axis: int | None = None,
    binary: bool = False,
) -> torch.Tensor:
    """Quantize-dequantize with the clipped straight-through estimator: the gradient is 1 where ``x`` lies inside
    the representable range and 0 where it was clipped (as torch's ``fake_quantize_per_tensor_affine``). Scale and
    zero point get no gradient (see :func:`lsq_fake_quantize` for a learned scale).

    Example:
        >>> x = torch.tensor([0.3, 5.0], requires_grad=True)
        >>> y = fake_quantize(x, torch.tensor(0.25), torch.tensor(0.0), -3, 3)
        >>> y.detach(), torch.autograd.grad(y.sum(), x)[0]
        (tensor([0.2500, 0.7500]), tensor([1., 0.]))
    """
    s, z = _view(scale, x, axis).detach(), _view(zero_point, x, axis).detach()
    if binary:  # scale * sign(x); gradient passes where |x| <= scale (hard tanh)
        clipped = torch.maximum(torch.minimum(x, s), -s)
        return clipped + (s * torch.where(x >= 0, 1.0, -1.0).to(x.dtype) - clipped).detach()
    lo, hi = (qmin - z) * s, (qmax - z) * s
    clipped = torch.maximum(torch.minimum(x, hi), lo)
    x_hat = (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z) * s
    return clipped + (x_hat - clipped).detach()


def lsq_fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    *,
    axis: int | None = None,
    binary: bool = False,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """Fake-quantization with a learned step size (LSQ, Esser et al. 2020, eq. 3-5): the gradient reaches ``scale``
    as ``-x/s + round(x/s)`` inside the range and ``qmin``/``qmax`` outside, multiplied by ``grad_scale``
    (the paper uses ``1 / sqrt(numel * qmax)``). The zero point is held fixed.

    Example:
        >>> s = torch.tensor(0.5, requires_grad=True)
        >>> y = lsq_fake_quantize(torch.tensor([0.3, 9.0]), s, torch.tensor(0.0), -7, 7)
        >>> y.detach(), torch.autograd.grad(y.sum(), s)[0]  # 0.3: round(0.6) - 0.6 = 0.4; 9.0: clipped, qmax = 7
        (tensor([0.5000, 3.5000]), tensor(7.4000))
    """
    s = _view(scale, x, axis)
    s = s * grad_scale + (s - s * grad_scale).detach()  # same value, gradient scaled
    z = _view(zero_point, x, axis).detach()
    if binary:
        sign = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
        v = torch.clamp(x / s, -1, 1)
        return (v + (sign - v).detach()) * s
    v = torch.clamp(x / s + z, qmin, qmax)
    return (round_ste(v) - z) * s


def fixed_point_multiplier(multiplier: torch.Tensor, bits: int = 31) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits positive real multipliers ``M`` into an integer ``m0`` of ``bits`` fractional bits and a right shift
    so that ``M ~= m0 * 2^-shift`` with ``2^(bits-1) <= m0 < 2^bits`` (gemmlowp / TFLite requantization). The
    relative error is below ``2^-bits``.

    Example:
        >>> m0, shift = fixed_point_multiplier(torch.tensor([0.75]))
        >>> int(m0[0]), int(shift[0]), float(m0[0]) / 2 ** int(shift[0])
        (1610612736, 31, 0.75)
    """
    m = multiplier.double().flatten()
    if bool((m <= 0).any()) or not bool(torch.isfinite(m).all()):
        raise ConfigError(f"requantization multipliers must be positive and finite, got min {float(m.min())}")
    exponent = torch.floor(torch.log2(m)) + 1  # M = f * 2^exponent with f in [0.5, 1)
    m0 = torch.round(m * torch.pow(2.0, bits - exponent)).long()
    carry = m0 >= 2**bits  # rounding reached the next power of two
    m0 = torch.where(carry, m0 // 2, m0)
    shift = (bits - exponent).long() - carry.long()
    return m0.reshape(multiplier.shape), shift.reshape(multiplier.shape)


def requantize(acc: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor, *, axis: int | None = None) -> torch.Tensor:
    """``round(acc * m0 / 2^shift)`` in integer arithmetic (int64, rounding half away from zero), the integer
    counterpart of ``round(acc * M)``.

    Example:
        >>> m0, shift = fixed_point_multiplier(torch.tensor(0.5))
        >>> requantize(torch.tensor([3, -3, 4]), m0, shift)
        tensor([ 2, -2,  2])
    """
    acc = acc.long()
    m0, shift = _view(m0, acc, axis), _view(shift, acc, axis)
    # acc (|acc| < 2^31) times m0 (< 2^31) fits in int64; shifts above 62 would round everything to zero
    prod = acc * m0
    half = torch.where(shift > 0, torch.bitwise_left_shift(torch.ones_like(shift), (shift - 1).clamp(min=0)), 0)
    mag = torch.bitwise_right_shift(prod.abs() + half, shift)
    return torch.where(prod < 0, -mag, mag)


def wrap_around(acc: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement wrap-around of integer values (given as any dtype holding whole numbers) into a
    ``bits``-bit accumulator: ``((acc + 2^(b-1)) mod 2^b) - 2^(b-1)``. Exact, and independent of the order of the
    additions (modular addition is associative), so wrapping the exact sum equals wrapping every partial sum.

    Example:
        >>> wrap_around(torch.tensor([127, 128, -129, 300]), 8)
        tensor([ 127, -128,  127,   44])
    """
    low, _ = accumulator_range(bits)
    period = 2**bits
    return torch.remainder(acc - low, period) + low
