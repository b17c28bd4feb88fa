"""``factorize_``: the verb of the factorization family, and the restore step that rebuilds a factorized model's
structure when it is loaded."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from effdl.core.config import last_match, name_matches
from effdl.core.errors import ConfigError, UnsupportedError
from effdl.core.modules import eval_mode, shared_parameters, swap_module_, use_unfused_transformer_layers_
from effdl.core.report import Report
from effdl.core.transform import TransformContext, apply_, register_transform
from effdl.factorize.config import LowRankConfig
from effdl.factorize.layers import LowRank, check_factorizable, factorize_layer, full_rank, layer_matrix
from effdl.factorize.math import energy_kept, singular_values
from effdl.factorize.ranks import RANK_SELECTORS, LayerSpectrum, global_energy
from effdl.measure.profiler import profile
from effdl.models.base import check_example_inputs
from effdl.models.structure import register_structure

__all__ = ["factorize_", "factorized_layers", "restore_factorized_"]

log = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def factorize_(model: nn.Module, config: LowRankConfig, *, example_inputs: Any) -> Report:
    """Replaces Linear and Conv layers of ``model`` in place by low-rank products (:class:`LowRank` sequences of
    standard layers) as ``config`` says, and reports what changed (the family verb of :func:`effdl.core.apply_`).

    Args:
        model: the model (changed in place; restored as it was if factorization fails half-way).
        config: which layers, which decomposition, which ranks.
        example_inputs: a batch the model accepts (to count MACs and each layer's positions).

    Returns:
        A :class:`~effdl.core.Report` with the summaries before and after and, per layer, the rank chosen, the
        share of squared singular values kept, and the parameters before and after.

    Example:
        >>> from effdl.models import create_model
        >>> m = create_model("test_mlp")
        >>> r = factorize_(m, LowRankConfig(selector="fixed", rank=2), example_inputs=torch.zeros(2, 1, 40))
        >>> r.after.params < r.before.params
        True
    """
    if not isinstance(config, LowRankConfig):
        raise ConfigError(f"factorize_ takes a LowRankConfig, got {type(config).__name__}")
    return apply_(model, config, example_inputs=example_inputs)


@register_transform(LowRankConfig)
def _factorize(model: nn.Module, config: LowRankConfig, context: TransformContext) -> Report:
    args = check_example_inputs(model, context.example_inputs, caller="factorize_")
    x = args if len(args) > 1 else args[0]
    before = profile(model, x, latency=False).summary()
    candidates, left_out = _candidates(model, config)
    if not candidates:
        why = "; ".join(f"{e['layer']}: {e['reason']}" for e in left_out[:5])
        raise ConfigError(
            "no layer to factorize: the model has no nn.Linear or ungrouped nn.Conv1d/2d/3d left after "
            f"layers={list(config.layers)} and ignore={list(config.ignore)}" + (f" ({why})" if why else "")
        )
    positions = _positions(model, candidates, args)
    spectra = [_spectrum(name, mod, config, positions[name]) for name, mod in candidates.items()]
    shared = global_energy(spectra, config) if config.scope == "global" else None
    selector = RANK_SELECTORS.get(config.selector)
    rows = []
    for layer in spectra:
        override = last_match(layer.name, config.per_layer)
        if override is not None:
            ranks = tuple(override for _ in layer.full)
        elif shared is not None:
            ranks = layer.ranks_for_energy(shared)
        else:
            ranks = tuple(int(r) for r in selector(layer, config))
        ranks = tuple(max(1, min(r, f)) for r, f in zip(ranks, layer.full, strict=True))
        after = layer.cost(ranks, "params")
        keep = config.only_if_smaller and after >= layer.params
        rows.append({
            "layer": layer.name,
            "kind": layer.kind,
            "shape": list(layer.module.weight.shape),
            "ranks": list(ranks),
            "full_ranks": list(layer.full),
            "energy": [energy_kept(v, r) for v, r in zip(layer.values, ranks, strict=True)],
            "params_before": layer.params,
            "params_after": layer.params if keep else after,
            "factorized": not keep,
        })  # fmt: skip
        if keep:
            log.debug("%s stays dense: ranks %s would not save parameters", layer.name, ranks)
            continue
        replacement = factorize_layer(layer.module, layer.kind, ranks)
        if ranks == tuple(layer.full):  # full rank promises the same map: check it before it goes in
            _check_full_rank(layer.name, layer.module, replacement)
        swap_module_(model, layer.name, replacement)
    use_unfused_transformer_layers_(model)  # torch's fused kernel would read the dense weight it no longer has
    after = profile(model, x, latency=False).summary()
    done = sum(r["factorized"] for r in rows)
    log.info("factorized %d of %d layers; params %d -> %d", done, len(rows), before.params, after.params)
    details: dict[str, Any] = {"layers": rows, "factorized": done, "left_out": left_out}
    if shared is not None:
        details["global_energy"] = shared
    return Report(command="factorize", before=before, after=after, config=config.to_dict(), details=details)


def _check_full_rank(name: str, dense: nn.Module, factorized: nn.Module, tol: float = 1e-4) -> None:
    """A full-rank factorization must multiply out to the dense weight (the model is restored by ``apply_`` when
    this raises)."""
    with torch.no_grad():
        want, got = dense.weight.float(), factorized.weight.float()
        err = float((got - want).abs().max()) / max(float(want.abs().max()), 1e-12)
    if not err <= tol:
        raise UnsupportedError(
            f"the full-rank factorization of {name!r} does not reproduce its weight (relative error {err:.2g}); "
            f"the model was restored. Keep it dense with ignore=[{name!r}]"
        )


def restore_factorized_(model: nn.Module, layers: dict[str, dict[str, Any]]) -> None:
    """Gives a freshly built model the factorized structure ``layers`` describes (``{name: {"kind", "ranks"}}``, as
    a checkpoint records it), ready for ``load_state_dict``. :func:`~effdl.models.load_model` calls it.

    Example:
        >>> from effdl.models import create_model
        >>> m = create_model("test_mlp")
        >>> _ = factorize_(m, LowRankConfig(selector="fixed", rank=2), example_inputs=torch.zeros(2, 1, 40))
        >>> fresh = create_model("test_mlp")
        >>> restore_factorized_(fresh, factorized_layers(m))
        >>> _ = fresh.load_state_dict(m.state_dict())
    """
    for name, entry in layers.items():
        try:
            module = model.get_submodule(name)
        except AttributeError as exc:
            raise ConfigError(f"the saved factorization names layer {name!r}, which this model does not have") from exc
        swap_module_(model, name, factorize_layer(module, entry["kind"], tuple(entry["ranks"]), init=False))


def factorized_layers(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The :class:`LowRank` layers of ``model``: ``{name: {"kind": ..., "ranks": [...]}}``.

    Example:
        >>> factorized_layers(nn.Sequential(nn.Linear(2, 2)))
        {}
    """
    return {n: {"kind": m.kind, "ranks": list(m.ranks)} for n, m in model.named_modules() if isinstance(m, LowRank)}


def _describe(model: nn.Module, reference: nn.Module | None) -> dict[str, Any] | None:
    layers = factorized_layers(model)
    return {"layers": layers} if layers else None


# low-rank layers replace dense ones: a fresh model gets the same LowRank stacks before its weights are loaded
register_structure(
    "factorized", describe=_describe, restore=lambda model, record: restore_factorized_(model, record["layers"]),
    order=10,
)  # fmt: skip


def _candidates(model: nn.Module, config: LowRankConfig) -> tuple[dict[str, nn.Module], list[dict[str, str]]]:
    """The layers to factorize, and the weight-matrix layers left dense with the reason."""
    found = {}
    left_out: list[dict[str, str]] = []
    tied = shared_parameters(model)
    for name, module in model.named_modules():
        if config.layers and not any(name_matches(name, p) for p in config.layers):
            continue
        if any(name_matches(name, p) for p in config.ignore):
            continue
        if type(module) not in (nn.Linear, *_CONVS):
            if any(p.dim() >= 2 and "weight" in k for k, p in module.named_parameters(recurse=False)) and not (
                isinstance(module, nn.Embedding | nn.EmbeddingBag)
            ):
                left_out.append({"layer": name, "reason": f"no low-rank form for {type(module).__name__}"})
            continue
        if name in tied:  # a low-rank copy would untie it (and grow the model: the other holder keeps the matrix)
            left_out.append({"layer": name, "reason": f"its weight is tied to {', '.join(tied[name])}"})
            continue
        if getattr(module, "groups", 1) != 1:
            if config.layers:  # asked for by name: say why it cannot be done
                check_factorizable(module, name)
            left_out.append({"layer": name, "reason": f"grouped convolution (groups={module.groups})"})
            continue
        found[name] = module
    for pattern in config.layers:
        if not any(name_matches(n, pattern) for n in found):
            names = [n for n, m in model.named_modules() if type(m) in (nn.Linear, *_CONVS)]
            raise ConfigError(f"layers pattern {pattern!r} matches no Linear/Conv layer; the model has {names}")
    return found, left_out


def _positions(model: nn.Module, layers: dict[str, nn.Module], args: tuple) -> dict[str, tuple[int, int]]:
    """Per layer, (input positions, output positions) per example: how many times its kernel is applied."""
    seen: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in layers.items():

        def hook(mod, inputs, output, name=name):
            n = output.shape[0] if output.dim() > 1 else 1
            if isinstance(mod, nn.Linear):
                pos = output.numel() // (n * mod.out_features)
                seen[name] = (pos, pos)
            else:
                seen[name] = (inputs[0][0].numel() // mod.in_channels, output[0].numel() // mod.out_channels)

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad(), eval_mode(model):
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    unused = [n for n in layers if n not in seen]
    if unused:
        raise UnsupportedError(f"layers {unused} are not used in the forward pass; leave them out with ignore=")
    return seen


def _spectrum(name: str, module: nn.Module, config: LowRankConfig, pos: tuple[int, int]) -> LayerSpectrum:
    kind = "svd" if isinstance(module, nn.Linear) else config.conv
    w = module.weight.detach()
    if kind == "tucker2":
        modes = (w.reshape(w.shape[0], -1), w.transpose(0, 1).reshape(w.shape[1], -1))  # (out, in*k), (in, out*k)
        values = tuple(singular_values(m) for m in modes)
    else:
        values = (singular_values(layer_matrix(module)),)
    params = sum(p.numel() for p in module.parameters(recurse=False))
    macs = pos[1] * w.numel()
    layer = LayerSpectrum(name=name, module=module, kind=kind, values=values, positions=pos, params=params, macs=macs)
    assert len(layer.values) == len(full_rank(module, kind))
    return layer
