"""Any-precision networks: one set of weights run at several bit widths (Yu et al., "Any-Precision Deep Neural
Networks", AAAI 2021; the recognition network of VideoIQ, Sun et al., ICCV 2021).

:func:`any_precision_` turns every Conv and Linear layer of a model into an :class:`AnyPrecisionLayer` that keeps
the layer's one float weight and quantizes it on the fly at the width the model is set to:

- weights: per-output-channel symmetric codes at the highest width ``B`` with a learned step ``s`` (LSQ, Esser et al.
  2020; learned in log space so that Adam's updates are relative): ``q_B = round(clamp(w / s, -Q_B, Q_B))``; a
  lower width ``b`` keeps the ``b`` most significant bits of those codes, ``q_b = clamp(round(q_B / 2^(B-b)), -Q_b,
  Q_b)``, at step ``s * 2^(B-b)`` (rounding, not truncation, of the dropped bits), so the widths differ only by
  quantization;
- input activations: each width has its own learned step (LSQ), unsigned after a ReLU, signed otherwise;
- BatchNorm: each width has its own statistics and affine parameters (:class:`SwitchableBatchNorm`), since the
  activations' distributions differ per width.

The first and last layers stay at ``end_bits`` whatever the width (as in the papers, which keep them at high
precision). :func:`set_width_` / :func:`at_width` switch the whole model; :class:`AnyPrecisionTraining` is the
training-loop callback that trains every width per step (cross-entropy, plus distillation from the highest width
for the others, gradients summed into one optimizer step); :func:`width_bops` counts bit operations per width.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from effdl.core.callback import Callback, TrainerView
from effdl.core.config import Config, check_range, name_matches
from effdl.core.errors import ConfigError, ShapeError, UnsupportedError
from effdl.core.modules import swap_module_
from effdl.core.report import ModelSummary, Report
from effdl.core.transform import TransformContext, apply_, register_transform
from effdl.measure.macs import module_macs
from effdl.measure.profiler import profile
from effdl.models.structure import register_structure
from effdl.quant.math import check_bits, round_ste
from effdl.quant.modules import matmul_layers

__all__ = [
    "AnyPrecisionConfig",
    "AnyPrecisionLayer",
    "AnyPrecisionTraining",
    "SwitchableBatchNorm",
    "any_precision_",
    "at_width",
    "model_widths",
    "set_width_",
    "width_bops",
]

log = logging.getLogger(__name__)

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnyPrecisionConfig(Config):
    """How :func:`any_precision_` converts a model.

    Attributes:
        widths: the bit widths the model runs at (weights and input activations alike), 2 to 8; the highest holds
            the codes the others take their most significant bits from.
        end_bits: width of the first and last quantized layers at every model width (None: they switch too).
        ignore: module names or regexes kept in float (listed in the report's ``left_out``).

    Example:
        >>> AnyPrecisionConfig(widths=(8, 4, 2)).top
        8
        >>> AnyPrecisionConfig(widths=(8, 1))
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: widths must be integers in [2, 8], got widths=(8, 1); use widths=(8, 4, 2)
    """

    widths: tuple[int, ...] = (8, 4, 2)
    end_bits: int | None = 8
    ignore: tuple[str, ...] = ()

    def validate(self) -> None:
        ws = self.widths
        if (not isinstance(ws, tuple) or not ws or len(set(ws)) != len(ws)
                or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8 for b in ws)):  # fmt: skip
            raise ConfigError(f"widths must be integers in [2, 8], got widths={ws!r}; use widths=(8, 4, 2)")
        if self.end_bits is not None:
            check_bits(self.end_bits, "end_bits", low=2)

    @property
    def top(self) -> int:
        """The highest width."""
        return max(self.widths)

    @property
    def ordered(self) -> tuple[int, ...]:
        """The widths, highest first."""
        return tuple(sorted(self.widths, reverse=True))


def _grad_scaled(p: torch.Tensor, g: float) -> torch.Tensor:
    """``p`` in value, its gradient times ``g`` (LSQ's step-size gradient scale)."""
    return p * g + (p - p * g).detach()


class AnyPrecisionLayer(nn.Module):
    """A Conv or Linear layer that runs at any of ``widths``: one float weight, quantized on the fly.

    Args:
        layer: the float layer (kept as ``.layer``; its weight is the one shared tensor).
        widths: the widths it switches between (one fixed width for the first and last layers).
        signed_input: whether its input takes negative values (signed activation codes).

    Example:
        >>> m = AnyPrecisionLayer(nn.Linear(4, 3), (8, 2), signed_input=True)
        >>> x = torch.randn(5, 4)
        >>> m.init_steps_(x)
        >>> m.width = 2
        >>> m(x).shape
        torch.Size([5, 3])
    """

    def __init__(self, layer: nn.Module, widths: tuple[int, ...], *, signed_input: bool) -> None:
        super().__init__()
        if not isinstance(layer, _LAYERS):
            raise UnsupportedError(
                f"AnyPrecisionLayer wraps Conv1d/2d/3d and Linear layers, got {type(layer).__name__}"
            )
        self.layer = layer
        self.widths = tuple(sorted(widths, reverse=True))
        self.top = self.widths[0]
        self.signed_input = signed_input
        self.width = self.top
        w = layer.weight.detach()
        q = 2 ** (self.top - 1) - 1
        # steps are learned in log space: Adam's updates are then relative, whatever the step's magnitude
        self.log_weight_step = nn.Parameter(torch.log(w.abs().flatten(1).amax(1).clamp(min=1e-8) / q))  # (out,)
        self.log_input_step = nn.Parameter(torch.zeros(len(self.widths)))  # one per width, set by init_steps_

    def extra_repr(self) -> str:
        return f"widths={self.widths}, signed_input={self.signed_input}"

    def _index(self) -> int:
        width = self.width if self.width in self.widths else self.top  # fixed-width layers ignore the model width
        return self.widths.index(width)

    def current_width(self) -> int:
        """The width this layer runs at now."""
        return self.widths[self._index()]

    def input_range(self, bits: int) -> tuple[int, int]:
        """Integer range of the input codes at ``bits``."""
        if self.signed_input:
            q = 2 ** (bits - 1) - 1
            return -q, q
        return 0, 2**bits - 1

    def quantized_weight(self, bits: int | None = None) -> torch.Tensor:
        """The weight as used at ``bits`` (default: the current width), with straight-through gradients."""
        bits = self.current_width() if bits is None else bits
        w = self.layer.weight
        q_top = 2 ** (self.top - 1) - 1
        step = _grad_scaled(self.log_weight_step, 1.0 / math.sqrt(w.numel() * q_top)).exp()
        step = step.reshape(-1, *[1] * (w.dim() - 1))
        codes = round_ste(torch.clamp(w / step, -q_top, q_top))  # codes at the top width
        shift = 2 ** (self.top - bits)
        if shift > 1:  # the most significant bits, rounded: q_b = clamp(round(q_B / 2^(B-b)), -Q_b, Q_b)
            q_b = 2 ** (bits - 1) - 1
            codes = torch.clamp(round_ste(codes / shift), -q_b, q_b) * shift
        return codes * step

    def integer_weight(self, bits: int) -> torch.Tensor:
        """The integer codes of the weight at ``bits`` (for checks and export)."""
        with torch.no_grad():
            shift = 2 ** (self.top - bits)
            step = self.log_weight_step.exp().reshape(-1, *[1] * (self.layer.weight.dim() - 1))
            return torch.round(self.quantized_weight(bits) / (step * shift))

    @torch.no_grad()
    def init_steps_(self, x: torch.Tensor) -> None:
        """Initializes every width's input step from a batch of inputs (LSQ's ``2 mean|x| / sqrt(Q)``)."""
        mean = x.detach().abs().mean().clamp(min=1e-8)
        for i, b in enumerate(self.widths):
            self.log_input_step[i] = torch.log(2 * mean / math.sqrt(self.input_range(b)[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = self._index()
        bits = self.widths[i]
        lo, hi = self.input_range(bits)
        step = _grad_scaled(self.log_input_step[i], 1.0 / math.sqrt(x[0].numel() * hi)).exp()
        x = round_ste(torch.clamp(x / step, lo, hi)) * step  # LSQ fake-quant of the input
        w = self.quantized_weight(bits)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)


class SwitchableBatchNorm(nn.Module):
    """One BatchNorm per width (statistics and affine parameters), the one of the model's current width used.

    Example:
        >>> bn = SwitchableBatchNorm(nn.BatchNorm1d(3), (8, 4))
        >>> bn.width = 4
        >>> bn(torch.randn(2, 3, 5)).shape
        torch.Size([2, 3, 5])
    """

    def __init__(self, norm: nn.Module, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.widths = tuple(sorted(widths, reverse=True))
        self.norms = nn.ModuleList(copy.deepcopy(norm) for _ in self.widths)
        self.width = self.widths[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norms[self.widths.index(self.width)](x)


def _switching(model: nn.Module) -> Iterator[nn.Module]:
    return (m for m in model.modules() if isinstance(m, AnyPrecisionLayer | SwitchableBatchNorm))


def model_widths(model: nn.Module) -> tuple[int, ...]:
    """The widths an any-precision model runs at, highest first (empty for any other model).

    Example:
        >>> model_widths(nn.Linear(2, 2))
        ()
    """
    widths: set[int] = set()
    for m in _switching(model):
        if isinstance(m, SwitchableBatchNorm) or len(m.widths) > 1:
            widths.update(m.widths)
    return tuple(sorted(widths, reverse=True))


def set_width_(model: nn.Module, bits: int) -> nn.Module:
    """Sets every any-precision layer and switchable BatchNorm of ``model`` to run at ``bits``; returns the model.

    Raises:
        ConfigError: ``bits`` is not one of the model's widths.
    """
    widths = model_widths(model)
    if bits not in widths:
        raise ConfigError(f"the model runs at widths {list(widths)}, got bits={bits!r}; pick one of them")
    for m in _switching(model):
        m.width = bits
    return model


@contextlib.contextmanager
def at_width(model: nn.Module, bits: int) -> Iterator[nn.Module]:
    """Runs the block with ``model`` at ``bits``, then sets back the width it had.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
        >>> _ = any_precision_(m, AnyPrecisionConfig(widths=(8, 4), end_bits=None), example_inputs=torch.randn(4, 2))
        >>> with at_width(m, 4):
        ...     m[0].width
        4
        >>> m[0].width
        8
    """
    before = {m: m.width for m in _switching(model)}
    set_width_(model, bits)
    try:
        yield model
    finally:
        for m, w in before.items():
            m.width = w


def width_bops(model: nn.Module, example_inputs: torch.Tensor) -> dict[int, int]:
    """Bit operations of one example at each width: the sum over quantized layers of MACs x weight bits x input
    bits, at the width each layer runs at then (first/last at ``end_bits``); float layers count 32 x 32.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 3))
        >>> _ = any_precision_(m, AnyPrecisionConfig(widths=(8, 2), end_bits=None), example_inputs=torch.randn(2, 4))
        >>> width_bops(m, torch.randn(1, 4))  # 12 MACs
        {8: 768, 2: 48}
    """
    macs = module_macs(model, example_inputs[:1])  # an AnyPrecisionLayer's MACs are its own (it calls F.conv)
    out = {}
    for bits in model_widths(model):
        with at_width(model, bits):
            total = 0
            for name, m in model.named_modules():
                b = m.current_width() if isinstance(m, AnyPrecisionLayer) else 32
                total += macs.get(name, 0) * b * b
            out[bits] = total
    return out


def _summary(model: nn.Module, x: torch.Tensor) -> ModelSummary:
    """Parameters, MACs and size; an any-precision model stores its weights at the highest width."""
    s = profile(model, x, latency=False).summary()
    layers = [m for m in model.modules() if isinstance(m, AnyPrecisionLayer)]
    if layers:
        packed = sum(m.layer.weight.numel() * m.top for m in layers) // 8
        s.size_bytes = s.size_bytes - sum(4 * m.layer.weight.numel() for m in layers) + packed
    return s


@register_transform(AnyPrecisionConfig)
def _convert(model: nn.Module, config: AnyPrecisionConfig, context: TransformContext) -> Report:
    x = context.example_inputs
    if not isinstance(x, torch.Tensor):
        raise ShapeError("any_precision_ needs example_inputs, a batch tensor the model accepts (e.g. 32 examples)")
    if model_widths(model):
        raise ConfigError("the model is already an any-precision model; convert the float model once")
    before = _summary(model, x)
    inside = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    layers = [n for n, m in model.named_modules() if isinstance(m, _LAYERS)]
    left_out = [{"layer": n, "reason": "in ignore"} for n in layers if any(name_matches(n, p) for p in config.ignore)]
    left_out += [{"layer": n, "reason": "inside nn.MultiheadAttention, whose forward reads the weight directly"}
                 for n in layers if any(n.startswith(a + ".") for a in inside)]  # fmt: skip
    layers = [n for n in layers if n not in {d["layer"] for d in left_out}]
    left_out += [{"layer": n, "reason": f"{type(model.get_submodule(n)).__name__} is not a Conv or Linear layer"}
                 for n in matmul_layers(model) if n not in layers and n not in {d["layer"] for d in left_out}
                 and not any(n.startswith(q + ".") for q in layers)]  # fmt: skip
    if not layers:
        raise UnsupportedError(
            f"{type(model).__name__} has no Conv or Linear layer to quantize (ignore={config.ignore})"
        )
    if config.end_bits is not None and len(layers) <= 2:
        raise ConfigError(
            f"{type(model).__name__} has {len(layers)} quantizable layer(s), all of them first or last, which "
            f"end_bits={config.end_bits} keeps fixed: nothing would switch width; use end_bits=None"
        )
    inputs: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, n=n: inputs.setdefault(n, args[0].detach())) for n in layers]  # fmt: skip
    try:
        with torch.no_grad():
            training = model.training
            model.eval()
            model(x)
            model.train(training)
    finally:
        for h in hooks:
            h.remove()
    ends = {layers[0], layers[-1]} if config.end_bits is not None else set()
    record = _record(config, layers, inputs, ends)
    _restore(model, record)
    for name in layers:
        model.get_submodule(name).init_steps_(inputs[name])
    report = Report(command="any-precision", before=before, after=_summary(model, x), config=config.to_dict(),
                    details={"widths": list(config.ordered), "layers": record["layers"], "left_out": left_out,
                             "bops": {str(k): v for k, v in width_bops(model, x).items()}})  # fmt: skip
    ends_note = "every layer switches" if config.end_bits is None else f"first/last at {config.end_bits} bits"
    log.info("any-precision: %d layers at widths %s (%s)", len(layers), config.ordered, ends_note)
    return report


def _record(config: AnyPrecisionConfig, layers: list[str], inputs: dict[str, torch.Tensor], ends: set[str]):
    return {
        "config": config.to_dict(),
        "layers": [{"layer": n, "signed_input": bool((inputs[n] < 0).any()),
                    "widths": [config.end_bits] if n in ends else list(config.ordered)} for n in layers],
    }  # fmt: skip


def _restore(model: nn.Module, record: dict[str, Any]) -> None:
    config = AnyPrecisionConfig.from_dict(record["config"])
    for entry in record["layers"]:
        layer = model.get_submodule(entry["layer"])
        swap_module_(model, entry["layer"], AnyPrecisionLayer(layer, tuple(entry["widths"]),
                                                              signed_input=bool(entry["signed_input"])))  # fmt: skip
    for name, m in list(model.named_modules()):
        if isinstance(m, _NORMS):
            swap_module_(model, name, SwitchableBatchNorm(m, config.ordered))


def _describe(model: nn.Module, reference: nn.Module | None) -> dict[str, Any] | None:
    layers = {n: m for n, m in model.named_modules() if isinstance(m, AnyPrecisionLayer)}
    if not layers:
        return None
    end_bits = next((m.top for m in layers.values() if len(m.widths) == 1), None)
    return {"config": AnyPrecisionConfig(widths=model_widths(model), end_bits=end_bits).to_dict(),
            "layers": [{"layer": n, "signed_input": m.signed_input, "widths": list(m.widths)}
                       for n, m in layers.items()]}  # fmt: skip


register_structure("any-precision", describe=_describe, restore=_restore, order=30)


def any_precision_(model: nn.Module, config: AnyPrecisionConfig, *, example_inputs: torch.Tensor) -> Report:
    """Converts ``model`` in place into an any-precision model (see the module docs) and reports the layers, their
    widths and the bit operations per width. ``example_inputs`` (a batch of real inputs) initialize the input
    steps and tell which layers take signed inputs. The model starts at the highest width.

    Example:
        >>> from effdl.models import create_model
        >>> m = create_model("test_cnn1d")
        >>> r = any_precision_(m, AnyPrecisionConfig(widths=(8, 4)), example_inputs=torch.randn(8, 1, 40))
        >>> r.details["widths"], model_widths(m)
        ([8, 4], (8, 4))
    """
    if not isinstance(config, AnyPrecisionConfig):
        raise ConfigError(f"any_precision_ takes an AnyPrecisionConfig, got {type(config).__name__}")
    return apply_(model, config, example_inputs=example_inputs)


class AnyPrecisionTraining(Callback):
    """Trains every width of an any-precision model in each step: the loop's forward pass runs at the highest width
    (its cross-entropy is the loop's loss); this callback adds, for each lower width, ``lower`` times (the
    cross-entropy plus ``distill`` times the distillation loss from the highest width's detached outputs at
    ``temperature``, Hinton et al. 2015); one backward pass sums the gradients of all widths into one optimizer step.
    ``lower`` < 1 favours the highest width over the others.

    Example:
        >>> AnyPrecisionTraining(distill=1.0).state_dict()
        {}
    """

    def __init__(self, *, distill: float = 1.0, temperature: float = 1.0, lower: float = 1.0) -> None:
        check_range("distill", distill, 0.0, hint="use distill=1.0")
        check_range("lower", lower, 0.0, hint="use lower=1.0")
        self.lower = lower
        check_range("temperature", temperature, 0.0, low_open=True, hint="use temperature=1.0")
        self.distill = distill
        self.temperature = temperature

    def on_fit_start(self, trainer: TrainerView) -> None:
        widths = model_widths(trainer.model)
        if len(widths) < 2:
            raise ConfigError(
                "AnyPrecisionTraining needs an any-precision model with two or more widths; convert it first with "
                "any_precision_(model, AnyPrecisionConfig(widths=(8, 4, 2)), ...)"
            )
        set_width_(trainer.model, widths[0])

    def on_loss(self, trainer: TrainerView, batch, outputs: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        model = trainer.model
        widths = model_widths(model)
        x, y = batch[0], batch[1]
        t = self.temperature
        soft = F.log_softmax(outputs.detach() / t, dim=1)
        total = loss
        for bits in widths[1:]:
            with at_width(model, bits):
                out = model(x)
            term = F.cross_entropy(out, y)
            if self.distill:
                kd = F.kl_div(F.log_softmax(out / t, dim=1), soft, log_target=True, reduction="batchmean")
                term = term + self.distill * kd * t * t
            total = total + self.lower * term
        return total

    def state_dict(self) -> dict[str, Any]:
        return {}
