"""The weight-only transform: replaces Linear layers by :class:`WeightOnlyLinear` with codes chosen by RTN, GPTQ,
AWQ or HQQ (dispatched by config type through ``quantize_`` / ``apply_`` / recipes), the structure record that
lets such a checkpoint load, and the report of what was quantized and what was left in float."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import torch
from torch import nn

from effdl.core.config import name_matches
from effdl.core.errors import CheckpointError, ConfigError, UnsupportedError
from effdl.core.modules import swap_module_
from effdl.core.report import Report
from effdl.core.transform import TransformContext, register_transform
from effdl.measure.activations import InputStats, calibration_batches, layer_by_layer
from effdl.measure.profiler import profile
from effdl.models.base import check_example_inputs
from effdl.models.structure import register_structure
from effdl.quant.weight_only.config import (
    GROUP_SIZES,
    SUPPORTED_BITS,
    AWQConfig,
    GPTQConfig,
    HQQConfig,
    WeightOnlyConfig,
)
from effdl.quant.weight_only.math import Grid, awq_clip, awq_input_scale, gptq, hqq, rtn
from effdl.quant.weight_only.modules import WeightOnlyLinear

__all__ = ["bits_per_weight", "weight_only_layers", "weight_only_targets"]

log = logging.getLogger(__name__)


def weight_only_layers(model: nn.Module) -> dict[str, WeightOnlyLinear]:
    """The weight-only quantized layers of ``model`` by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, WeightOnlyLinear)}


def weight_only_targets(model: nn.Module, config: WeightOnlyConfig) -> tuple[dict[str, nn.Linear], list[dict]]:
    """The Linear layers ``config`` quantizes, and every other weight-bearing layer with the reason it stays float.

    Raises:
        ConfigError: a group size that does not divide a layer's input features (naming the sizes that would).

    Example:
        >>> from effdl.quant.weight_only.config import RTNConfig
        >>> m = nn.Sequential(nn.Embedding(10, 64), nn.Linear(64, 32), nn.Linear(32, 10))
        >>> layers, skipped = weight_only_targets(m, RTNConfig(group_size=32, ignore=("2",)))
        >>> list(layers), [(s["layer"], s["reason"]) for s in skipped]
        (['1'], [('0', 'Embedding: not a Linear layer'), ('2', 'ignored by the config')])
    """
    layers: dict[str, nn.Linear] = {}
    skipped: list[dict] = []
    bad = []
    for name, m in model.named_modules():
        if not name or isinstance(m, WeightOnlyLinear):
            continue
        weight = getattr(m, "weight", None)
        if not isinstance(m, nn.Linear):
            if isinstance(weight, nn.Parameter) and not any(True for _ in m.children()):
                kind = type(m).__name__
                if not isinstance(m, nn.LayerNorm | nn.modules.batchnorm._NormBase | nn.GroupNorm):
                    skipped.append({"layer": name, "reason": f"{kind}: not a Linear layer"})
            continue
        if any(name_matches(name, p) for p in config.ignore):
            skipped.append({"layer": name, "reason": "ignored by the config"})
            continue
        gs = config.group_size or m.in_features
        if m.in_features % gs:
            fits = [g for g in GROUP_SIZES if m.in_features % g == 0]
            bad.append(f"{name} has {m.in_features} input features (group sizes that divide it: "
                       f"{', '.join(map(str, fits)) or 'none'})")  # fmt: skip
            continue
        layers[name] = m
    if bad:
        raise ConfigError(
            f"group_size={config.group_size} does not divide the input features of {'; '.join(bad)}; use one of "
            "those, group_size=None (per channel), or ignore= those layers"
        )
    if not layers:
        raise UnsupportedError(
            f"{type(model).__name__} has no Linear layer to quantize weight-only (ignore={list(config.ignore)}); "
            "weight-only quantization covers nn.Linear and its subclasses"
        )
    return layers, skipped


def bits_per_weight(model: nn.Module) -> float | None:
    """Average stored bits per weight of the weight-only layers, scales and offsets included (None if none).

    Example:
        >>> m = nn.Sequential(WeightOnlyLinear.from_float(nn.Linear(128, 16), bits=4, group_size=128))
        >>> bits_per_weight(m)  # 4 bits + 32 bits of scale and offset per 128 weights
        4.25
    """
    layers = weight_only_layers(model).values()
    weights = sum(m.in_features * m.out_features for m in layers)
    return sum(m.weight_bits for m in layers) / weights if weights else None


def _grid(config: WeightOnlyConfig, w: torch.Tensor, stats: InputStats | None) -> tuple[Grid, torch.Tensor | None]:
    gs = config.group_size or w.shape[1]
    if isinstance(config, GPTQConfig):
        grid = gptq(w, stats.hessian(), config.bits, gs, symmetric=config.symmetric, damp=config.damp,
                    block_size=config.block_size, act_order=config.act_order)  # fmt: skip
        return grid, None
    if isinstance(config, AWQConfig):
        s, _, _ = awq_input_scale(w, stats.sample, stats.mean_abs(), config.bits, gs, symmetric=config.symmetric,
                                  grid=config.grid)  # fmt: skip
        if not config.clip:
            return rtn(w * s, config.bits, gs, symmetric=config.symmetric), s
        rows = stats.sample[: config.clip_samples] / s  # what the scaled weight multiplies
        return awq_clip(w * s, rows, config.bits, gs, symmetric=config.symmetric, grid=config.grid), s
    if isinstance(config, HQQConfig):
        return hqq(w, config.bits, gs, iters=config.iters, lp_norm=config.lp_norm, beta=config.beta,
                   kappa=config.kappa), None  # fmt: skip
    return rtn(w, config.bits, gs, symmetric=config.symmetric), None


def _output_error(layer: nn.Linear, q: WeightOnlyLinear, stats: InputStats | None) -> float | None:
    """Relative error of the layer's output on the sampled calibration rows (None without a sample)."""
    if stats is None or stats.sample is None:
        return None
    x = stats.sample
    with torch.no_grad():
        ref = x @ layer.weight.detach().float().T
        got = (x / q.input_scale if q.input_scale is not None else x) @ q.dequantize().T
    return float((got - ref).norm() / ref.norm().clamp(min=1e-12))


@register_transform(WeightOnlyConfig)
def _weight_only(model: nn.Module, config: WeightOnlyConfig, context: TransformContext) -> Report:
    args = check_example_inputs(model, context.example_inputs, caller="quantize_")
    x = args if len(args) > 1 else args[0]
    before = profile(model, x, latency=False).summary()
    layers, skipped = weight_only_targets(model, config)
    rows: dict[str, dict[str, Any]] = {}

    def quantize_layer(name: str, layer: nn.Module, stats: InputStats | None) -> None:
        grid, input_scale = _grid(config, layer.weight.detach().float(), stats)
        q = WeightOnlyLinear.from_grid(grid, layer.bias, input_scale=input_scale, compute_dtype=config.compute_dtype)
        rows[name] = {"layer": name, "in": layer.in_features, "out": layer.out_features, "kernel": q.kernel,
                      "bits_per_weight": q.weight_bits / (q.in_features * q.out_features),
                      "output_error": _output_error(layer, q, stats)}  # fmt: skip
        swap_module_(model, name, q)

    if config.needs_data:
        data = context.data
        if data is None:
            raise ConfigError(
                f"{config.method.upper()} calibrates on data; pass data= (batches of the training split) or use "
                "RTNConfig / HQQConfig, which need none"
            )
        batches = list(calibration_batches(data, config.calibration_batches))
        sample = config.samples if isinstance(config, AWQConfig) else 512
        layer_by_layer(model, layers, batches, quantize_layer, gram=isinstance(config, GPTQConfig),
                       max_sample=sample, sequential=config.sequential)  # fmt: skip
        used = len(batches)
    else:
        for name, layer in layers.items():
            quantize_layer(name, layer, None)
        used = 0
    after = profile(model, x, latency=False).summary()
    fallback = [r["layer"] for r in rows.values() if r["kernel"] == "dequant"]
    if fallback:
        log.warning(
            "%d weight-only layers run by dequantize-and-matmul (no kernel for their shape or grid): %s",
            len(fallback), ", ".join(fallback[:5]),
        )  # fmt: skip
    details = {
        "method": config.method,
        "bits": config.bits,
        "group_size": config.group_size,
        "calibration_batches": used,
        "bits_per_weight": bits_per_weight(model),
        "kernels": dict(sorted(Counter(r["kernel"] for r in rows.values()).items())),
        "layers": [rows[n] for n in layers if n in rows],
        "float_layers": skipped,
    }
    log.info("weight-only %s: %d layers quantized, %d left in float", config.describe(), len(rows), len(skipped))
    return Report(command="quantize", before=before, after=after, config=config.to_dict(), details=details)


def _describe(model: nn.Module, reference: nn.Module | None) -> dict[str, Any] | None:
    layers = weight_only_layers(model)
    if not layers:
        return None
    return {
        "layers": {
            n: {
                "in": m.in_features,
                "out": m.out_features,
                "bits": m.bits,
                "group_size": m.group_size,
                "bias": m.bias is not None,
                "input_scale": m.input_scale is not None,
                "compute_dtype": m.compute_dtype,
            }
            for n, m in layers.items()
        }
    }


def _restore(model: nn.Module, record: dict[str, Any]) -> None:
    for name, spec in record["layers"].items():
        current = model.get_submodule(name)
        # the record may name a narrower layer (pruned, then quantized: the shapes record cannot see inside the
        # packed weights); it never names a wider one, which bounds what an untrusted checkpoint can allocate
        if not isinstance(current, nn.Linear) or spec["in"] > current.in_features or spec["out"] > current.out_features:
            raise CheckpointError(
                f"the checkpoint quantizes {name!r} as a {spec['in']}->{spec['out']} Linear layer, but the model has "
                f"{current} there; check that the model and its options match the checkpoint"
            )
        if spec["bits"] not in SUPPORTED_BITS or spec["group_size"] not in (*GROUP_SIZES, spec["in"]):
            raise CheckpointError(f"the checkpoint's weight-only record for {name!r} is invalid: {spec}")
        swap_module_(model, name, WeightOnlyLinear(
            spec["in"], spec["out"], bits=spec["bits"], group_size=spec["group_size"], bias=spec["bias"],
            input_scale=spec["input_scale"], compute_dtype=spec.get("compute_dtype", "bfloat16"),
        ))  # fmt: skip


# weight-only layers replace Linear layers of the (possibly pruned) model: restored after the tensor shapes
register_structure("weight-only", describe=_describe, restore=_restore, order=25)
