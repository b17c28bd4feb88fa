"""``quantize_``: the one verb of the quantization family for simulated (fake-quant) quantization at any bit width,
plus calibration and the helpers around it. Real int8 execution is :func:`effdl.quant.int8.convert_int8`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from effdl.core.config import name_matches
from effdl.core.errors import ConfigError, ShapeError, UnsupportedError
from effdl.core.modules import eval_mode, swap_module_, use_unfused_transformer_layers_
from effdl.core.report import ModelSummary, Report
from effdl.core.transform import TransformContext, apply_, register_transform
from effdl.measure.activations import calibration_batches
from effdl.measure.profiler import profile
from effdl.measure.summary import SIZE_ESTIMATORS
from effdl.models.base import check_example_inputs
from effdl.models.structure import register_structure
from effdl.quant.config import QuantConfig
from effdl.quant.fold import fold_batchnorm_
from effdl.quant.modules import (
    QUANT_LAYERS,
    Accumulator,
    FakeQuantizer,
    QuantHFConv1D,
    QuantLayer,
    QuantLinear,
    QuantMultiheadAttention,
    matmul_layers,
    quant_type_for,
)
from effdl.quant.ptq import (
    adaround_,
    check_equivalent,
    correct_bias_,
    equalize_,
    float_view,
    reestimate_bn_,
    smooth_,
)
from effdl.quant.weight_only.config import WeightOnlyConfig

__all__ = [
    "calibrate",
    "calibration_inputs",
    "dequantize_",
    "freeze_",
    "prepare_",
    "quantization_config",
    "quantize_",
    "quantized_layers",
    "quantized_size_bytes",
    "restore_quantized_",
]

log = logging.getLogger(__name__)


def quantized_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """The fake-quantized layers of ``model`` by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLayer)}


def prepare_(model: nn.Module, config: QuantConfig, *, example_inputs: Any = None) -> list[str]:
    """Folds BatchNorm (if asked) and swaps every supported layer (exact ``nn.Conv1d/2d/3d`` and ``nn.Linear``)
    that is not ignored for its fake-quantized counterpart. Returns the names of the quantized layers.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> prepare_(m, QuantConfig(bits_w=4, bits_a=None, ignore=("2",)))
        ['0']
    """
    if quantized_layers(model):
        raise ConfigError("the model is already quantized; start from the float model (or call dequantize_ first)")
    for pattern in config.per_layer:
        hits = [n for n, m in model.named_modules() if n and name_matches(n, pattern)]
        bad = [n for n in hits if quant_type_for(model.get_submodule(n)) is None]
        if not hits:
            raise ConfigError(f"per_layer pattern {pattern!r} matches no module; quantizable layers: {_names(model)}")
        if bad and len(bad) == len(hits):
            kinds = ", ".join(f"{n} ({type(model.get_submodule(n)).__name__})" for n in bad)
            raise UnsupportedError(
                f"per_layer pattern {pattern!r} names layers effdl cannot quantize: {kinds}; supported layer types: "
                f"{', '.join(t.__name__ for t in QUANT_LAYERS)} (remove the entry or name a Conv/Linear layer)"
            )
    folded: dict[str, str] = {}
    if config.fold_bn:
        with eval_mode(model):
            folded = dict(fold_batchnorm_(model, example_inputs=example_inputs))
    if config.equalize:
        if example_inputs is None:
            raise ConfigError("equalize=True needs example_inputs (the pairs are found on one forward pass)")
        equalize_(model, example_inputs)  # checks the float outputs are unchanged
    done = []
    for name, module in list(model.named_modules()):
        qtype = quant_type_for(module)
        if qtype is None or any(name_matches(name, p) for p in config.ignore):
            continue
        if qtype is QuantMultiheadAttention and config.accumulator_bits is not None:
            continue  # its attention products have no accumulator model; left out (float) and reported
        wq = FakeQuantizer(
            config.bits_for(name),
            signed=True,
            axis=qtype.weight_axis if config.per_channel else None,
            stochastic=config.stochastic_rounding,
        )
        observer = config.observer_for(name)
        iq = None if config.bits_a is None else FakeQuantizer(config.bits_a, signed=False, observer=observer)
        acc = None
        if config.accumulator_bits is not None:
            acc = Accumulator(config.accumulator_bits, mode=config.accumulator_mode, cyclic=config.cyclic)
        layer = qtype.from_float(module, weight_quant=wq, input_quant=iq, accumulator=acc)
        layer.source_config = config.to_dict()  # what made it: a checkpoint records it to rebuild the model
        if config.smoothquant is not None and qtype in (QuantLinear, QuantHFConv1D):
            inputs = layer.weight.shape[1 - qtype.weight_axis]
            layer.register_buffer("smooth_scale", torch.ones(inputs, dtype=layer.weight.dtype))  # set by smooth_
        if name in folded:
            layer.folded_bn = folded[name]  # the checkpoint records the pair, so a fresh model folds the same
        swap_module_(model, name, layer)
        done.append(name)
    use_unfused_transformer_layers_(model)  # its fused kernel would read the float weights directly
    if not done:
        raise UnsupportedError(
            f"{type(model).__name__} has no layer effdl can quantize (supported: "
            f"{', '.join(t.__name__ for t in QUANT_LAYERS)}); check ignore={list(config.ignore)}"
        )
    return done


def _names(model: nn.Module) -> str:
    return ", ".join(n for n, m in model.named_modules() if quant_type_for(m) is not None) or "(none)"


def calibration_inputs(data: Any, batches: int) -> Iterator[tuple]:
    """Yields the input tuples of up to ``batches`` batches of ``data`` (a DataLoader, a Dataset, or an iterable of
    tensors or ``(inputs, targets)``); raises :class:`ConfigError` if there are none. The same reader as one-shot
    methods use (:func:`effdl.measure.activations.calibration_batches`).

    Example:
        >>> [x[0].shape for x in calibration_inputs([torch.zeros(2, 3)] * 5, 2)]
        [torch.Size([2, 3]), torch.Size([2, 3])]
    """
    yield from calibration_batches(data, batches)


@torch.no_grad()
def calibrate(model: nn.Module, data: Any, *, batches: int = 8) -> int:
    """Runs up to ``batches`` batches of ``data`` (a DataLoader, a Dataset, or an iterable of tensors or
    ``(inputs, targets)``) through the model in eval mode with every activation observer recording, then freezes
    the scales. Returns the number of batches used.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 2))
        >>> _ = prepare_(m, QuantConfig(bits_w=8, bits_a=8))
        >>> calibrate(m, [torch.randn(8, 4) for _ in range(3)])
        3
    """
    quantizers = [q for q in model.modules() if isinstance(q, FakeQuantizer)]
    if not quantizers:
        raise ConfigError("calibrate needs a quantized model; call quantize_ or prepare_ first")
    for q in quantizers:
        q.observing = True
    used = 0
    try:
        with eval_mode(model):
            for args in calibration_inputs(data, batches):
                model(*args)
                used += 1
    finally:
        for q in quantizers:
            q.observing = False
    return used


def restore_quantized_(
    model: nn.Module, config: QuantConfig | dict, *, folded: list[tuple[str, str]] | None = None
) -> None:
    """Turns a freshly built float model into the quantized model ``config`` describes, ready for
    ``load_state_dict`` of a saved quantized state (learned LSQ scales included): BatchNorm layers are replaced
    the way folding replaces them, without computing the fold (the saved weights overwrite it).
    :func:`~effdl.models.load_model` calls it for quantized checkpoints.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 2))
        >>> _ = quantize_(m, QuantConfig(bits_w=4, bits_a=4, lsq=True), example_inputs=torch.randn(8, 4))
        >>> fresh = nn.Sequential(nn.Linear(4, 2))
        >>> restore_quantized_(fresh, quantization_config(m))
        >>> _ = fresh.load_state_dict(m.state_dict())
        >>> x = torch.randn(3, 4)
        >>> torch.equal(fresh.eval()(x), m.eval()(x))
        True
    """
    config = QuantConfig.from_dict(config) if isinstance(config, dict) else config
    if config.fold_bn:
        fold_batchnorm_(model, structure_only=True, pairs=folded)
    prepare_(model, config.replace(fold_bn=False, equalize=False))  # the saved weights are already equalized
    for layer in quantized_layers(model).values():
        layer.source_config = config.to_dict()
    if config.lsq:
        for q in model.modules():
            if isinstance(q, FakeQuantizer):
                q.make_learnable(uncalibrated=True)


def quantization_config(model: nn.Module) -> QuantConfig | None:
    """The :class:`QuantConfig` that made ``model``'s fake-quantized layers (None for a float model).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 2))
        >>> _ = prepare_(m, QuantConfig(bits_w=4, bits_a=None))
        >>> quantization_config(m).bits_w
        4
    """
    for layer in quantized_layers(model).values():
        source = getattr(layer, "source_config", None)
        if source is not None:
            return QuantConfig.from_dict(source)
    return None


def _describe(model: nn.Module, reference: nn.Module | None) -> dict[str, Any] | None:
    config = quantization_config(model)
    if config is None:
        return None
    folded = [[n, m.folded_bn] for n, m in quantized_layers(model).items() if getattr(m, "folded_bn", None)]
    return {"config": config.to_dict(), **({"folded": folded} if folded else {})}


def _packed_size(model: nn.Module) -> int | None:
    return quantized_size_bytes(model) if quantized_layers(model) else None


SIZE_ESTIMATORS.append(_packed_size)  # reports count a fake-quant model's weights at their bit width

# fake-quantized layers replace Conv/Linear (and folding removes BatchNorm): a fresh model is prepared the same way,
# before the tensors are resized to pruned shapes (a BatchNorm is folded while it still matches its layer's width)
register_structure(
    "fake-quant",
    describe=_describe,
    restore=lambda model, record: restore_quantized_(
        model, record["config"], folded=[tuple(p) for p in record["folded"]] if "folded" in record else None
    ),
    order=15,
)  # fmt: skip


def freeze_(model: nn.Module, frozen: bool = True) -> None:
    """Stops (or resumes) activation observers updating in training mode, e.g. for the last epochs of QAT."""
    for q in model.modules():
        if isinstance(q, FakeQuantizer):
            q.frozen = frozen


def dequantize_(model: nn.Module) -> list[str]:
    """Turns every fake-quantized layer back into its float layer (weights kept as trained). Returns their names."""
    names = list(quantized_layers(model))
    for name in names:
        swap_module_(model, name, model.get_submodule(name).to_float())
    return names


def quantized_size_bytes(model: nn.Module) -> int:
    """Bytes of the model stored with packed integer weights: ``bits_w`` bits per quantized weight, an int32 per
    bias of a layer with quantized inputs, a float32 per scale and zero point, float32 for everything else
    (observer statistics and counters are not counted).

    Example:
        >>> m = nn.Sequential(nn.Linear(100, 10, bias=False))
        >>> _ = prepare_(m, QuantConfig(bits_w=4, bits_a=None, per_channel=False))
        >>> _ = m(torch.zeros(1, 100))  # sets the weight scale
        >>> quantized_size_bytes(m)  # 1000 weights at 4 bits + one scale and zero point
        508
    """
    bits = 0
    skip: set[int] = set()
    for layer in quantized_layers(model).values():
        wq = layer.weight_quant
        if wq is not None and wq.enabled:
            bits += layer.weight.numel() * wq.bits
            skip.add(id(layer.weight))
    for module in model.modules():
        if isinstance(module, FakeQuantizer):
            bits += 32 * (module.scale.numel() + module.zero_point.numel())
            skip.update({id(module.scale), id(module.zero_point)})
        if isinstance(module, Accumulator):
            skip.update({id(module.overflows), id(module.total)})
        if hasattr(module, "observer") and module.observer is not None:
            skip.update(id(b) for b in module.observer.buffers())
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in skip:
            bits += t.numel() * 32
            skip.add(id(t))
    return (bits + 7) // 8


def _summary(model: nn.Module, x: Any, size: int | None = None) -> ModelSummary:
    s = profile(model, x, latency=False).summary()
    if size is not None:
        s.size_bytes = size
    return s


def quantize_(
    model: nn.Module,
    config: QuantConfig | WeightOnlyConfig,
    *,
    example_inputs: Any,
    data: Any = None,
    calibration_batches: int = 8,
) -> Report:
    """Quantizes ``model`` in place (simulated, fake-quant) as ``config`` says and reports what changed.

    A weight-only config (:class:`~effdl.quant.RTNConfig`, ``GPTQConfig``, ``AWQConfig``, ``HQQConfig``) instead
    stores Linear weights as packed int4/int8 run by PyTorch's CPU kernels; GPTQ and AWQ calibrate on ``data``.

    Folds BatchNorm, swaps Conv/Linear layers for fake-quantized ones, calibrates activation ranges on ``data``
    (or on ``example_inputs`` alone when no data is given), and with ``config.lsq`` turns the scales into learned
    parameters. The result runs as post-training quantization, or trains as QAT with the usual training loop.
    For real int8 speed use :func:`effdl.quant.convert_int8`.

    Args:
        model: the float model (changed in place).
        config: a :class:`QuantConfig`.
        example_inputs: a batch the model accepts (for MACs, and calibration when ``data`` is None).
        data: calibration batches (DataLoader, Dataset, or iterable of tensors / ``(inputs, targets)``).
        calibration_batches: how many batches of ``data`` to use (weight-only configs carry their own).

    Returns:
        A :class:`~effdl.core.Report`; ``after.size_bytes`` counts packed ``bits_w``-bit weights.

    Example:
        >>> from effdl.models import create_model
        >>> m = create_model("test_cnn1d").eval()
        >>> r = quantize_(m, QuantConfig(bits_w=4, bits_a=8), example_inputs=torch.randn(4, 1, 40))
        >>> r.after.size_bytes < r.before.size_bytes / 4
        True
    """
    if not isinstance(config, QuantConfig | WeightOnlyConfig):
        raise ConfigError(
            f"quantize_ takes a QuantConfig or a weight-only config (RTNConfig, GPTQConfig, AWQConfig, HQQConfig), "
            f"got {type(config).__name__}; for real int8 execution call "
            "convert_int8(model, Int8Config(...), example_inputs=..., data=...)"
        )
    return apply_(
        model, config, example_inputs=example_inputs, data=data, options={"calibration_batches": calibration_batches}
    )


@register_transform(QuantConfig)
def _fake_quant(model: nn.Module, config: QuantConfig, context: TransformContext) -> Report:
    example_inputs = context.example_inputs
    if not isinstance(example_inputs, torch.Tensor):
        raise ShapeError(
            "quantize_ needs example_inputs, a batch tensor the model accepts (e.g. data.example_inputs())"
        )
    check_example_inputs(model, example_inputs, caller="quantize_")
    data = context.data
    calibration_batches = context.options.get("calibration_batches", 8)
    before = _summary(model, example_inputs)
    calib = data if data is not None else [example_inputs]
    techniques: dict[str, Any] = {}
    if config.bn_reestimate:
        techniques["bn_reestimate"] = reestimate_bn_(
            model, calib, example_inputs=example_inputs, bits=config.bits_w, batches=calibration_batches
        )
    names = prepare_(model, config, example_inputs=example_inputs)
    if config.smoothquant is not None:
        with float_view(model), torch.no_grad(), eval_mode(model):
            reference = model(example_inputs)
            techniques["smoothquant"] = smooth_(model, calib, alpha=config.smoothquant, batches=calibration_batches)
            check_equivalent(reference, model(example_inputs), what="SmoothQuant's migration")
    used = calibrate(model, calib, batches=calibration_batches)
    if config.adaround:
        techniques["adaround"] = adaround_(model, calib, iterations=config.adaround, batches=calibration_batches)
    if config.bias_correction:
        techniques["bias_correction"] = {"left_out": correct_bias_(model, calib, batches=calibration_batches)}
    if config.lsq:
        for q in model.modules():
            if isinstance(q, FakeQuantizer):
                q.make_learnable()
    after = _summary(model, example_inputs, quantized_size_bytes(model))
    layers = quantized_layers(model)
    details = {
        "method": "qat-lsq" if config.lsq else "fake-quant",
        "calibration_batches": used,
        "techniques": techniques,
        "layers": [
            {
                "layer": n,
                "type": type(m).__name__,
                "bits_w": m.weight_quant.bits if m.weight_quant is not None else None,
                "bits_a": m.input_quant.bits if m.input_quant is not None else None,
                "weights": m.weight.numel(),
            }
            for n, m in layers.items()
        ],
        "left_out": [  # float layers that hold a weight matrix, except those the config asked to ignore
            {"layer": n, "reason": why or "kept float (an accumulator is not modelled for this layer)"}
            for n, why in matmul_layers(model).items()
            if n not in layers and not any(n.startswith(q + ".") for q in layers)
            and not any(name_matches(n, p) for p in config.ignore)
        ],
    }
    log.info("quantized %d layers (W%s A%s)", len(names), config.bits_w, config.bits_a)
    return Report(command="quantize", before=before, after=after, config=config.to_dict(), details=details)
