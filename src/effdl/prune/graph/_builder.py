"""The builder: traces the model with torch.fx, propagates shapes, runs the module and function rules, and
collects the groups."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from effdl.core.errors import UnsupportedError
from effdl.core.modules import eval_mode
from effdl.prune.graph._functions import _flatten_values, _function_rule, _reshape, _shape
from effdl.prune.graph._model import Channel, DependencyGraph, Group, Site
from effdl.prune.graph._modules import _handler_for, _opaque_trace
from effdl.prune.graph._state import _Info, _State

log = logging.getLogger(__name__)


class _Tracer(torch.fx.Tracer):
    def __init__(self, ignore: Callable[[str], bool]) -> None:
        super().__init__()
        self._ignore = ignore

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if self._ignore(qualname) or _handler_for(m) is not None:
            return True
        return super().is_leaf_module(m, qualname)


def _trace(model: nn.Module, example_inputs: tuple, ignore: Callable[[str], bool]) -> torch.fx.GraphModule:
    tracer = _Tracer(ignore)
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        raise UnsupportedError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}. Data-dependent control "
            "flow cannot be traced; move it into a submodule and pass its name in ignore=[...] (it is then kept "
            "whole), or make the branch static"
        ) from exc
    gm = torch.fx.GraphModule(tracer.root, graph)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as exc:
        raise UnsupportedError(
            f"running the traced {type(model).__name__} on the example inputs failed: {type(exc).__name__}: {exc}; "
            "check example_inputs (shape, dtype) against what the model expects"
        ) from exc
    return gm


def build_dependency_graph(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple,
    *,
    ignore: Sequence[str] = (),
) -> DependencyGraph:
    """Traces ``model`` and groups its coupled channels.

    Args:
        model: the model to analyse (not changed).
        example_inputs: a tensor or tuple of tensors the model accepts.
        ignore: module names or regular expressions of modules to keep whole (their inputs' and outputs' channels
            are pinned); use for layers the analysis cannot handle.

    Returns:
        The :class:`DependencyGraph`.

    Raises:
        UnsupportedError: the model cannot be traced, or contains a layer with parameters that no handler knows.

    Example:
        >>> from effdl.models import create_model
        >>> g = build_dependency_graph(create_model("test_cnn1d"), torch.zeros(1, 1, 40))
        >>> [(grp.name, len(grp)) for grp in g.groups]
        [('features.0', 4), ('features.3', 4)]
    """
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    patterns = [re.compile(p) for p in ignore]

    def ignored(name: str) -> bool:
        return any(p.fullmatch(name) for p in patterns) or name in ignore

    with eval_mode(model):
        gm = _trace(model, args, ignored)
    st = _State(model)
    values: dict[torch.fx.Node, Any] = {}
    used_modules: list[str] = []
    folds: dict[str, str] = {}
    for node in gm.graph.nodes:
        src = node.args[0] if node.op == "call_module" and node.args else None
        if isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1:
            mod, prev = st.modules[str(node.target)], st.modules[str(src.target)]
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and isinstance(
                prev, nn.modules.conv._ConvNd | nn.Linear
            ):
                folds[str(src.target)] = str(node.target)

        shape = _shape(node)
        if node.op in ("placeholder", "get_attr"):
            values[node] = None
        elif node.op == "call_module":
            name = str(node.target)
            module = st.modules[name]
            used_modules.append(name)
            inputs = [values.get(a) if isinstance(a, torch.fx.Node) else None for a in node.args]
            inputs = [v if isinstance(v, _Info) else None for v in inputs]
            if ignored(name):
                values[node] = _opaque_trace("ignored module")(st, name, module, inputs, shape)
                continue
            if isinstance(module, nn.Flatten):
                values[node] = _flatten(st, node, inputs[0], shape)
                continue
            extra = [v for v in inputs[1:] if v is not None] + _flatten_values(values, dict(node.kwargs))
            for v in extra:  # handlers follow the first input; any other tracked operand is kept whole
                st.pin(v.labels, f"extra input of {name}")
            handler = _handler_for(module)
            if handler is None:
                if any(True for _ in module.parameters()):
                    raise UnsupportedError(
                        f"layer {name!r} ({type(module).__name__}) has parameters but effdl does not know how its "
                        f"channels depend on its inputs; exclude it with ignore=[{name!r}] to keep it whole, or "
                        "teach effdl with effdl.prune.register_module_handler"
                    )
                values[node] = _opaque_trace("unknown module")(st, name, module, inputs, shape)
                continue
            values[node] = handler.trace(st, name, module, inputs, shape)
        elif node.op in ("call_function", "call_method"):
            values[node] = _function_rule(st, node, values)
        elif node.op == "output":
            for v in _flatten_values(values, node.args[0]):
                st.pin(v.labels, "they reach the model output")
    graph = _collect(st, used_modules)
    for g in graph.groups:
        g.folds = {p: folds[p] for p in g.producers if p in folds}
    return graph


def _flatten(st: _State, node: torch.fx.Node, x: _Info | None, shape) -> _Info | None:
    first = node.args[0]
    in_shape = _shape(first) if isinstance(first, torch.fx.Node) else None
    if x is None or in_shape is None or shape is None:
        return None
    out = _reshape(x, in_shape, shape)
    if out is None:
        st.pin(x.labels, f"{node.name} splits or mixes the channel axis")
    return out


def _collect(st: _State, used_modules: list[str]) -> DependencyGraph:
    # One tensor index can only leave with every label that uses it: unite labels sharing an index (a module
    # called twice, e.g. shared weights, records its sites once per call).
    owner: dict[tuple[str, str, int, int], int] = {}
    for lab in st.order:
        for site, idx in st.uses.get(lab, []):
            key = (site.module, site.tensor, site.dim, idx)
            if key in owner:
                st.union(owner[key], lab)
            else:
                owner[key] = lab
    classes: dict[int, list[int]] = {}
    for lab in st.order:
        classes.setdefault(st.find(lab), []).append(lab)
    pinned: dict[str, str] = {}
    by_key: dict[tuple[str, ...], list[Channel]] = {}
    kinds: dict[tuple[str, ...], str] = {}
    first_seen: dict[tuple[str, ...], int] = {}
    for root, members in classes.items():
        reasons = [st.pin_reason[m] for m in members if m in st.pin_reason]
        producers = tuple(dict.fromkeys(st.producer[m] for m in members))
        if reasons:
            for p in producers:
                pinned.setdefault(p, reasons[0])
            continue
        occ: dict[Site, list[int]] = {}
        for m in members:
            for site, idx in st.uses.get(m, []):
                occ.setdefault(site, []).append(idx)
        if not any(site.role == "out" for site in occ):
            continue
        by_key.setdefault(producers, []).append(Channel(root, occ))
        kinds[producers] = st.kind[members[0]]
        first_seen.setdefault(producers, min(members))
    groups = [
        Group(name=prods[0], producers=prods, kind=kinds[prods], channels=chs)
        for prods, chs in sorted(by_key.items(), key=lambda kv: first_seen[kv[0]])
    ]
    for g in groups:
        for p in g.producers:
            pinned.pop(p, None)
    return DependencyGraph(groups=groups, pinned=pinned, modules=list(dict.fromkeys(used_modules)))
