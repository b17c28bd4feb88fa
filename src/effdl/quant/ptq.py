"""Post-training quantization techniques that keep real models accurate, each a pure step on a model:

- :func:`reestimate_bn_`: BatchNorm statistics recomputed with the preceding layer's weights quantized (before
  folding), so the folded bias absorbs the shift weight quantization causes.
- :func:`equalize_`: cross-layer equalization (Nagel et al., "Data-Free Quantization", ICCV 2019).
- :func:`smooth_`: SmoothQuant's activation-to-weight scale migration (Xiao et al., ICML 2023).
- :func:`adaround_`: learned rounding (Nagel et al., "Up or Down? Adaptive Rounding", ICML 2020).
- :func:`correct_bias_`: empirical bias correction (Nagel et al. 2019, section 4.2).

The first three leave the float model's function unchanged (checked on the example inputs; a mismatch restores
the weights and raises); the last two change the quantized model only. ``quantize_`` runs them in the order of
:data:`~effdl.quant.config.PTQ_TECHNIQUES` when the config switches them on.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from effdl.core.errors import UnsupportedError
from effdl.core.modules import eval_mode
from effdl.measure.activations import calibration_batches
from effdl.measure.capture import batchnorm_pairs, capture, consumers, flatten_tensors
from effdl.quant.modules import FakeQuantizer, QuantLayer, QuantMultiheadAttention

__all__ = [
    "adaround_",
    "check_equivalent",
    "correct_bias_",
    "equalization_pairs",
    "equalize_",
    "float_view",
    "reestimate_bn_",
    "smooth_",
]

log = logging.getLogger(__name__)

_LAYER_OPS = ("conv1d", "conv2d", "conv3d", "linear")
# functions f with f(s * x) = s * f(x) for s > 0: a channel scale passes through them unchanged
_HOMOGENEOUS = ("relu", "relu_", "leaky_relu", "leaky_relu_", "dropout", "identity", "prelu")


# --------------------------------------------------------------------------------------------------------------
# BatchNorm re-estimation


@torch.no_grad()
def reestimate_bn_(model: nn.Module, data: Any, *, example_inputs: Any, bits: int = 8, batches: int = 8) -> list[str]:
    """Moves the statistics of every BatchNorm that follows a conv/linear layer by the shift that quantizing the
    weights (symmetric, per output channel, ``bits`` bits, all such layers at once) causes on ``batches`` batches
    of ``data``: ``mean += E_q[x] - E_f[x]`` per channel of the BatchNorm's input, so statistics that were right for
    the float model stay right for the quantized one (the variances are kept: quantization noise is no signal to
    normalize away); folding then bakes the corrected mean into the bias. The weights are restored. Returns the
    BatchNorm names.

    Per-channel weight quantization commutes with folding's per-channel rescale, so the folded quantized layer
    sees exactly the corrected statistics.

    Example:
        >>> m = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU()).eval()
        >>> reestimate_bn_(m, [torch.randn(8, 1, 16)], example_inputs=torch.randn(2, 1, 16), bits=4)
        ['1']
    """
    pairs = batchnorm_pairs(model, example_inputs)
    if not pairs:
        return []
    bns = {b: model.get_submodule(b) for _, b in pairs}
    floats = _bn_input_stats(model, bns, data, batches)
    saved: dict[str, torch.Tensor] = {}
    try:
        for layer_name, _ in pairs:
            layer = model.get_submodule(layer_name)
            saved[layer_name] = layer.weight.detach().clone()
            layer.weight.copy_(FakeQuantizer(bits, signed=True, axis=0)(layer.weight))
        for name, bn in bns.items():  # in order: each one measured with the ones before it already corrected
            mean_q = _bn_input_stats(model, {name: bn}, data, batches)[name]
            bn.running_mean.add_((mean_q - floats[name]).to(bn.running_mean.dtype))
    finally:
        for layer_name, w in saved.items():
            model.get_submodule(layer_name).weight.copy_(w)
    return list(bns)


def _bn_input_stats(model: nn.Module, bns: dict[str, nn.Module], data: Any, batches: int) -> dict[str, Any]:
    """Mean per channel of each BatchNorm's input over the batches (eval mode)."""
    sums: dict[str, list] = {}

    def hook(name):
        def record(_m, args):
            x = args[0].detach().double().transpose(0, 1).flatten(1)  # (channels, values)
            s = sums.setdefault(name, [0.0, 0])
            s[0], s[1] = s[0] + x.sum(1), s[1] + x.shape[1]

        return record

    handles = [bn.register_forward_pre_hook(hook(n)) for n, bn in bns.items()]
    try:
        with eval_mode(model):
            for args in calibration_batches(data, batches):
                model(*args)
    finally:
        for h in handles:
            h.remove()
    return {name: total / count for name, (total, count) in sums.items()}


# --------------------------------------------------------------------------------------------------------------
# Cross-layer equalization


def equalization_pairs(model: nn.Module, example_inputs: Any) -> list[tuple[str, str]]:
    """(first, second) layer names where the first's output channels feed only the second's input channels,
    directly or through one positively homogeneous activation (ReLU, leaky ReLU, PReLU, dropout), found on one
    real forward. The second may be an ordinary or a depthwise convolution, or a Linear.

    Example:
        >>> m = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 4, 3, groups=4), nn.ReLU(),
        ...                   nn.Conv1d(4, 2, 1))
        >>> equalization_pairs(m, torch.zeros(2, 1, 16))
        [('0', '2'), ('2', '4')]
    """
    cap = capture(model, example_inputs)
    users = consumers(cap)
    modules = dict(model.named_modules())
    pairs = []
    for call in cap.calls:
        if call.name not in _LAYER_OPS or not isinstance(call.output, torch.Tensor):
            continue
        first = _layer_of(cap, call)
        if first is None:
            continue
        out = call.output
        readers = users.get(id(out), [])
        if len(readers) == 1 and readers[0].name in _HOMOGENEOUS and not _prelu_shared(readers[0]):
            out = readers[0].output
            readers = users.get(id(out), [])
        if len(readers) != 1 or readers[0].name not in _LAYER_OPS or readers[0].args[0] is not out:
            continue
        second = _layer_of(cap, readers[0])
        if second is None or second == first:
            continue
        a, b = modules[first], modules[second]
        if not _equalizable(a, b):
            continue
        pairs.append((first, second))
    return pairs


def _prelu_shared(call) -> bool:
    return call.name == "prelu" and len(call.args) > 1 and call.args[1].numel() == 1


def _layer_of(cap, call) -> str | None:
    key = cap.param_key(call.args[1] if len(call.args) > 1 else call.kwargs.get("weight"))
    if key is None or key in cap.aliases:  # a tied weight: scaling it would change its other use
        return None
    return key.rpartition(".")[0]


def _groups(m: nn.Module) -> int:
    return getattr(m, "groups", 1)


def _equalizable(a: nn.Module, b: nn.Module) -> bool:
    if _groups(a) not in (1, a.weight.shape[0]) or _groups(b) not in (1, b.weight.shape[0]):
        return False
    depthwise_b = _groups(b) > 1
    width = b.weight.shape[0] if depthwise_b else b.weight.shape[1]
    if _groups(a) > 1 and _groups(a) != a.weight.shape[0]:
        return False
    return a.weight.shape[0] == width


def _output_ranges(m: nn.Module) -> torch.Tensor:
    return m.weight.detach().abs().flatten(1).amax(dim=1)  # (out,)


def _input_ranges(m: nn.Module) -> torch.Tensor:
    w = m.weight.detach().abs()
    if _groups(m) > 1:  # depthwise: input channel i is output channel i
        return w.flatten(1).amax(dim=1)
    return w.transpose(0, 1).flatten(1).amax(dim=1)  # (in,)


@torch.no_grad()
def _scale_pair(a: nn.Module, b: nn.Module) -> float:
    r1, r2 = _output_ranges(a), _input_ranges(b)
    s = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 / r2.clamp(min=1e-12)), torch.ones_like(r1))  # s_i
    shape_a = (-1,) + (1,) * (a.weight.dim() - 1)
    a.weight.div_(s.reshape(shape_a))  # W1' = S^-1 W1
    if a.bias is not None:
        a.bias.div_(s)
    if _groups(b) > 1:
        b.weight.mul_(s.reshape((-1,) + (1,) * (b.weight.dim() - 1)))
    else:
        b.weight.mul_(s.reshape((1, -1) + (1,) * (b.weight.dim() - 2)))  # W2' = W2 S
    return float((s.log().abs()).max())


@torch.no_grad()
def equalize_(
    model: nn.Module, example_inputs: Any, *, iterations: int = 20, rtol: float = 1e-4
) -> list[tuple[str, str]]:
    """Cross-layer equalization: for each pair from :func:`equalization_pairs`, output channel ``i`` of the first
    layer is divided by ``s_i = sqrt(r1_i / r2_i)`` and input channel ``i`` of the second multiplied by it, so both
    weight ranges become ``sqrt(r1_i * r2_i)`` (Nagel et al. 2019, eq. 10). Chains (pointwise -> depthwise ->
    pointwise) are swept until the scales settle. The float outputs on ``example_inputs`` are checked unchanged;
    otherwise the weights are restored and :class:`UnsupportedError` raised. Returns the pairs.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        >>> with torch.no_grad():
        ...     m[0].weight[2] *= 50
        >>> x = torch.randn(5, 4)
        >>> y = m(x)
        >>> equalize_(m, x)
        [('0', '2')]
        >>> torch.allclose(m(x), y, rtol=1e-5, atol=1e-5)
        True
    """
    with eval_mode(model):
        pairs = equalization_pairs(model, example_inputs)
        if not pairs:
            return []
        modules = dict(model.named_modules())
        names = {n for p in pairs for n in p}
        saved = {n: {k: v.detach().clone() for k, v in modules[n].named_parameters(recurse=False)} for n in names}
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        before = model(*args)
        for _ in range(iterations):
            change = max(_scale_pair(modules[a], modules[b]) for a, b in pairs)
            if change < 1e-3:
                break
        after = model(*args)
    try:
        check_equivalent(before, after, what=f"cross-layer equalization of {pairs}", rtol=rtol)
    except UnsupportedError:
        for n, params in saved.items():
            for k, v in params.items():
                getattr(modules[n], k).copy_(v)
        raise
    log.info("equalized %d layer pairs", len(pairs))
    return pairs


def _first_tensor(out: Any) -> torch.Tensor:
    return flatten_tensors(out)[0].detach()


# --------------------------------------------------------------------------------------------------------------
# SmoothQuant


def _in_axis(layer: nn.Module) -> int:
    """Axis of a weight's input channels (1 for Linear's (out, in); 0 for Hugging Face Conv1D's (in, out))."""
    return 1 - getattr(layer, "weight_axis", 0)


@torch.no_grad()
def smooth_(model: nn.Module, data: Any, *, alpha: float = 0.5, batches: int = 8) -> list[str]:
    """SmoothQuant's migration for every fake-quantized Linear-like layer (``QuantLinear``, Hugging Face ``Conv1D``)
    that has a ``smooth_scale`` buffer: ``s_j = max|x_j|^alpha / max|w_j|^(1 - alpha)`` from the inputs seen on
    ``data`` and the weight column ``j``; the layer then computes ``(x / s) @ (W * s)^T``, the same function with an
    input that is easier to quantize. Returns the smoothed layer names.

    Example:
        >>> from effdl.quant import QuantConfig, prepare_, quantized_layers
        >>> m = nn.Sequential(nn.Linear(4, 3))
        >>> _ = prepare_(m, QuantConfig(smoothquant=0.5))
        >>> x = torch.randn(8, 4) * torch.tensor([1.0, 1.0, 50.0, 1.0])
        >>> smooth_(m, [x])
        ['0']
        >>> bool(quantized_layers(m)["0"].smooth_scale[2] > quantized_layers(m)["0"].smooth_scale[0])
        True
    """
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    layers = {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, QuantLayer) and hasattr(m, "smooth_scale") and uses.get(id(m.weight), 0) == 1
    }  # a tied weight (GPT-2's lm_head is its embedding table) cannot absorb the scale: left as it is
    if not layers:
        return []
    amax: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(_m, args):
            x = args[0].detach()
            a = x.abs().reshape(-1, x.shape[-1]).amax(dim=0)
            amax[name] = a if name not in amax else torch.maximum(amax[name], a)

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with float_view(model), eval_mode(model):
            for args in calibration_batches(data, batches):
                model(*args)
    finally:
        for h in handles:
            h.remove()
    done = []
    for name, layer in layers.items():
        if name not in amax:
            continue
        w = layer.weight.detach().abs()
        w_max = w.amax(dim=1 - _in_axis(layer))  # (in,)
        s = (amax[name].clamp(min=1e-5) ** alpha) / (w_max.clamp(min=1e-5) ** (1 - alpha))
        s = s.clamp(min=1e-5)
        shape = (1, -1) if _in_axis(layer) == 1 else (-1, 1)
        layer.weight.mul_((s / layer.smooth_scale).reshape(shape))  # relative to any earlier smoothing
        layer.smooth_scale.copy_(s)
        done.append(name)
    return done


@contextlib.contextmanager
def float_view(model: nn.Module) -> Iterator[None]:
    """Inside, every quantizer of ``model`` passes values through: the float function of a fake-quant model
    (SmoothQuant's exact rescaling stays).

    Example:
        >>> from effdl.quant import QuantConfig, quantize_
        >>> m, x = nn.Sequential(nn.Linear(4, 2)), torch.randn(3, 4)
        >>> y = m(x)
        >>> _ = quantize_(m, QuantConfig(bits_w=2, bits_a=2), example_inputs=x)
        >>> with float_view(m):
        ...     torch.allclose(m(x), y)
        True
    """
    quantizers = [q for q in model.modules() if isinstance(q, FakeQuantizer)]
    states = [q.enabled for q in quantizers]
    for q in quantizers:
        q.enabled = False
    try:
        yield
    finally:
        for q, s in zip(quantizers, states, strict=True):
            q.enabled = s


# --------------------------------------------------------------------------------------------------------------
# Per-layer reconstruction: AdaRound and bias correction


def _runs_alone(name: str, layer: nn.Module) -> bool:
    return isinstance(layer, QuantLayer) and not isinstance(layer, QuantMultiheadAttention) and (
        layer.weight_quant is not None and layer.weight_quant.enabled and layer.weight_quant.bits > 1
    )


@torch.no_grad()
def _layer_io(model: nn.Module, layer: nn.Module, data: Any, batches: int, *, quantized: bool) -> tuple[list, list]:
    """The inputs and outputs of ``layer`` over the calibration batches, in the quantized model or (quantizers off)
    the float one."""
    xs, ys = [], []

    def record(_m, args, out):
        xs.append(args[0].detach())
        ys.append(out.detach())

    handle = layer.register_forward_hook(record)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(eval_mode(model))
            if not quantized:
                stack.enter_context(float_view(model))
            for args in calibration_batches(data, batches):
                model(*args)
    finally:
        handle.remove()
    return xs, ys


class _SoftRounding(nn.Module):
    """A weight quantizer whose codes are ``floor(w / s) + h(V)`` with a learned rectified sigmoid ``h``
    (AdaRound, eq. 22-23); it has a frozen quantizer's attributes so the layer's forward uses it unchanged."""

    zeta, gamma = 1.1, -0.1

    def __init__(self, quant: FakeQuantizer, weight: torch.Tensor) -> None:
        super().__init__()
        self.bits, self.enabled, self.calibrated, self.axis = quant.bits, True, True, quant.axis
        self.onnx_qdq = False
        self.register_buffer("scale", quant.scale.detach().clone())
        self.register_buffer("zero_point", quant.zero_point.detach().clone())
        self.qmin, self.qmax = quant.qmin, quant.qmax
        units = weight.detach() / self._s(weight)
        self.register_buffer("floor", torch.floor(units))
        rest = (units - self.floor).clamp(0.01, 0.99)
        self.v = nn.Parameter(-torch.log((self.zeta - self.gamma) / (rest - self.gamma) - 1))  # h(V) = rest

    def _s(self, w: torch.Tensor) -> torch.Tensor:
        if self.axis is None or self.scale.dim() == 0:
            return self.scale
        shape = [1] * w.dim()
        shape[self.axis] = -1
        return self.scale.reshape(shape)

    def h(self) -> torch.Tensor:
        return (torch.sigmoid(self.v) * (self.zeta - self.gamma) + self.gamma).clamp(0, 1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self._s(w) * torch.clamp(self.floor + self.h(), self.qmin, self.qmax)

    def hard(self, w: torch.Tensor) -> torch.Tensor:
        return self._s(w) * torch.clamp(self.floor + (self.h() >= 0.5).to(w.dtype), self.qmin, self.qmax)


def adaround_(
    model: nn.Module,
    data: Any,
    *,
    iterations: int = 500,
    batches: int = 8,
    lr: float = 1e-2,
    reg: float = 0.01,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """AdaRound on every fake-quantized layer with a calibrated weight quantizer, in model order: the rounding of
    each weight (down or up) is learned so that the layer's output on its quantized-model inputs matches the float
    model's output (mean squared error), with AdaRound's regularizer pushing each ``h`` to 0 or 1 (beta annealed
    from 20 to 2). The weights are then set to the chosen grid points, so the frozen weight quantizer returns
    exactly these codes. Returns, per layer, the output MSE with round-to-nearest and with AdaRound.

    Example:
        >>> from effdl.quant import QuantConfig, quantize_
        >>> _ = torch.manual_seed(0)
        >>> m = nn.Sequential(nn.Linear(16, 8))
        >>> data = [torch.randn(64, 16) for _ in range(2)]
        >>> _ = quantize_(m, QuantConfig(bits_w=3, bits_a=None), example_inputs=data[0], data=data)
        >>> r = adaround_(m, data, iterations=200)
        >>> r["0"]["adaround"] < r["0"]["nearest"]
        True
    """
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, float]] = {}
    layers = [(n, m) for n, m in model.named_modules() if _runs_alone(n, m)]
    for name, layer in layers:
        xs, _ = _layer_io(model, layer, data, batches, quantized=True)
        _, targets = _layer_io(model, layer, data, batches, quantized=False)
        if not xs:
            continue
        quant = layer.weight_quant
        nearest = _mse(layer, xs, targets)
        soft = _SoftRounding(quant, layer.weight)
        layer.weight_quant = soft
        try:
            with torch.enable_grad():
                _fit(layer, soft, xs, targets, iterations=iterations, lr=lr, reg=reg, generator=generator)
            with torch.no_grad():
                hard = soft.hard(layer.weight)
        finally:
            layer.weight_quant = quant
        with torch.no_grad():
            old = layer.weight.detach().clone()
            layer.weight.copy_(hard)
            learned = _mse(layer, xs, targets)
            if learned > nearest:  # never worse than rounding to nearest on the calibration data
                layer.weight.copy_(quant(old))
                learned = nearest
        out[name] = {"nearest": nearest, "adaround": learned}
        log.debug("adaround %s: output MSE %.3g -> %.3g", name, nearest, learned)
    return out


@torch.no_grad()
def _mse(layer: nn.Module, xs: list, targets: list) -> float:
    with eval_mode(layer):
        return float(sum(F.mse_loss(layer(x), y, reduction="sum") for x, y in zip(xs, targets, strict=True))
                     / sum(y.numel() for y in targets))  # fmt: skip


def _fit(layer, soft, xs, targets, *, iterations, lr, reg, generator) -> None:
    opt = torch.optim.Adam([soft.v], lr=lr)
    warmup = int(0.2 * iterations)
    was = layer.training
    layer.eval()
    for it in range(iterations):
        i = int(torch.randint(len(xs), (1,), generator=generator))
        loss = F.mse_loss(layer(xs[i]), targets[i])
        if it >= warmup:  # beta from 20 to 2 (cosine-free linear decay, as the paper's code)
            beta = 20 + (2 - 20) * (it - warmup) / max(iterations - warmup, 1)
            h = soft.h()
            loss = loss + reg * (1 - (2 * h - 1).abs().pow(beta)).sum() / h.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    layer.train(was)


@torch.no_grad()
def correct_bias_(model: nn.Module, data: Any, *, batches: int = 8) -> dict[str, str]:
    """Empirical bias correction, layer by layer in model order: each fake-quantized layer's bias gains the mean
    (over batch and positions) of ``y_float - y_quant`` per output channel, where ``y_quant`` comes from the
    quantized model with earlier layers already corrected. Returns the layers left out, with why (no bias).

    Example:
        >>> from effdl.quant import QuantConfig, quantize_
        >>> _ = torch.manual_seed(0)
        >>> m = nn.Sequential(nn.Linear(16, 8))
        >>> data = [torch.randn(64, 16) + 1 for _ in range(2)]
        >>> _ = quantize_(m, QuantConfig(bits_w=2, bits_a=None), example_inputs=data[0], data=data)
        >>> correct_bias_(m, data)
        {}
    """
    skipped: dict[str, str] = {}
    for name, layer in [(n, m) for n, m in model.named_modules() if _runs_alone(n, m)]:
        if layer.bias is None:
            skipped[name] = "no bias to correct (the layer was built with bias=False)"
            continue
        _, yq = _layer_io(model, layer, data, batches, quantized=True)
        _, yf = _layer_io(model, layer, data, batches, quantized=False)
        if not yq:
            continue
        axis = layer.channel_axis % yq[0].dim()
        diff = sum(_channel_sum(f - q, axis) for f, q in zip(yf, yq, strict=True))
        count = sum(y.numel() // y.shape[axis] for y in yq)
        layer.bias.add_(diff / count)
    return skipped


def _channel_sum(t: torch.Tensor, axis: int) -> torch.Tensor:
    return t.transpose(0, axis).reshape(t.shape[axis], -1).sum(dim=1)


def check_equivalent(before: Any, after: Any, *, what: str, rtol: float = 1e-4) -> None:
    """Raises :class:`UnsupportedError` unless ``after``'s first output tensor equals ``before``'s within ``rtol``
    (relative to the largest magnitude): the check of a transform that must not change the float function.

    Example:
        >>> check_equivalent(torch.ones(2), torch.ones(2) * 1.00001, what="scaling")
    """
    ref, got = _first_tensor(before), _first_tensor(after)
    err = float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-12))
    if not math.isfinite(err) or err > rtol:
        raise UnsupportedError(
            f"{what} changed the float outputs (max relative error {err:.2e} > {rtol}); the model was restored; "
            "switch this technique off for this model (or ignore the layers named)"
        )
