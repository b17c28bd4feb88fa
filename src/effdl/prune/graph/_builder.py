"""The builder: captures one forward pass, runs the function and module rules over it, checks the grids, and
collects the groups."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from effdl.core.errors import EffdlError, UnsupportedError
from effdl.measure.capture import Call, Capture, batchnorm_pairs, capture, flatten_tensors
from effdl.prune.graph._functions import Ctx, apply_rule
from effdl.prune.graph._model import Channel, DependencyGraph, Group, SizeBinding
from effdl.prune.graph._modules import leaf_trace
from effdl.prune.graph._state import Info, ParamView, State

log = logging.getLogger(__name__)


def build_dependency_graph(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple | dict,
    *,
    ignore: Sequence[str] = (),
) -> DependencyGraph:
    """Captures one forward pass of ``model`` and groups its coupled channels.

    Args:
        model: the model to analyse (not changed).
        example_inputs: a tensor, a tuple of tensors, or a dict of keyword inputs the model accepts.
        ignore: module names or regular expressions of modules to keep whole (their inputs' and outputs' channels
            are pinned).

    Returns:
        The :class:`DependencyGraph`.

    Raises:
        UnsupportedError: the model does not run on the example inputs.

    Example:
        >>> from effdl.models import create_model
        >>> g = build_dependency_graph(create_model("test_cnn1d"), torch.zeros(1, 1, 40))
        >>> [(grp.name, len(grp)) for grp in g.groups]
        [('features.0', 4), ('features.3', 4)]
    """
    patterns = [re.compile(p) for p in ignore]

    def ignored(name: str) -> bool:
        return name in ignore or any(p.fullmatch(name) for p in patterns)

    def leaf(name: str, module: nn.Module) -> bool:
        return ignored(name) or leaf_trace(module) is not None

    try:
        cap = capture(model, example_inputs, leaf=leaf)
    except EffdlError:
        raise
    except Exception as exc:
        raise UnsupportedError(
            f"running {type(model).__name__} on the example inputs failed: {type(exc).__name__}: {exc}; check "
            "example_inputs (shape, dtype) against what the model expects"
        ) from exc
    st = State()
    ctx = Ctx(st, cap)
    for call in cap.calls:
        if call.name == "module":
            out = _module_rule(ctx, call, ignored(call.scope))
        else:
            out = apply_rule(ctx, call)
        _assign(ctx, call.output, out)
    for t in flatten_tensors(cap.output):
        v = ctx.info(t)
        if v is not None:
            st.pin(v.arr, "they reach the model output")
    _check_grids(st)
    graph = _collect(st, cap)
    folds = dict(batchnorm_pairs(model, None, cap))
    for g in graph.groups:
        g.folds = {p: folds[p] for p in g.producers if p in folds}
    return graph


def _module_rule(ctx: Ctx, call: Call, ignored: bool) -> Any:
    inputs = [ctx.info(t) for t in flatten_tensors([call.args, call.kwargs])]
    if ignored:
        for v in inputs:
            if v is not None:
                ctx.st.pin(v.arr, f"ignored module {call.scope}")
        return None
    trace = leaf_trace(call.func)
    return trace(ctx.st, call.scope, call.func, inputs, call.output)


def _assign(ctx: Ctx, output: Any, value: Any) -> None:
    if isinstance(output, torch.Tensor):
        if isinstance(value, Info | ParamView):
            ctx.values[id(output)] = value
        elif id(output) in ctx.values:
            ctx.values[id(output)] = None
    elif isinstance(output, tuple | list):
        values = value if isinstance(value, tuple | list) else [None] * len(output)
        for o, v in zip(output, values, strict=False):
            _assign(ctx, o, v)


def _check_grids(st: State) -> None:
    """A channel axis split into a grid (heads x head_dim, q|k|v x width) can only lose whole slices along one of
    its axes: anything else would leave a ragged tensor. Grids whose units are not slices are pinned."""
    for arr, n, where in st.grids:
        roots = np.vectorize(st.find, otypes=[np.int64])(arr) if arr.size else arr
        split_shape = roots.shape[:n]
        ok = False
        for a in range(n):
            r = np.moveaxis(roots, a, 0).reshape(split_shape[a], -1, int(np.prod(roots.shape[n:], dtype=np.int64)))
            if (r == r[:, :1, :]).all():
                ok = True
                break
        if not ok:
            st.pin(arr, f"{where} splits channels into a {'x'.join(map(str, split_shape))} grid whose units are not "
                   "whole slices")  # fmt: skip


def _common_prefix(names: Sequence[str]) -> str:
    parts = [n.split(".") for n in names]
    out: list[str] = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        out.append(items[0])
    if len(names) == 1 and out:
        out = out[:-1]  # a single producer: its parent owns the heads
    return ".".join(out)


def _collect(st: State, cap: Capture) -> DependencyGraph:
    # One tensor index can only leave with every label that uses it: unite labels sharing an index (a module
    # called twice, or a tied weight, records its sites once per use). Vectorized: models have 1e5 labels.
    per_site: dict[Any, list[tuple[np.ndarray, np.ndarray]]] = {}
    for site, labs, idx in st.uses:
        per_site.setdefault(site, []).append((labs, idx))
    merged: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
    for site, parts in per_site.items():
        labs = np.concatenate([p[0] for p in parts])
        idx = np.concatenate([p[1] for p in parts])
        order = np.lexsort((labs, idx))
        labs, idx = labs[order], idx[order]
        shared = (idx[1:] == idx[:-1]) & (labs[1:] != labs[:-1])
        for a, b in zip(labs[:-1][shared].tolist(), labs[1:][shared].tolist(), strict=True):
            st.union(a, b)
        merged[site] = (labs, idx)
    n = len(st.parent)
    root = np.fromiter((st.find(i) for i in range(n)), dtype=np.int64, count=n)
    pinned_root: dict[int, str] = {}
    for lab in sorted(st.pin_reason):  # the reason of a class's first pinned label
        pinned_root.setdefault(int(root[lab]), st.pin_reason[lab])
    # the first label and the producers (in label order) of each class, from unique (class, producer) pairs
    uniq_roots, first = np.unique(root, return_index=True)
    first_label = dict(zip(uniq_roots.tolist(), first.tolist(), strict=True))
    names = sorted(set(st.producer))
    index = {name: i for i, name in enumerate(names)}
    pid = np.array([index[p] for p in st.producer], dtype=np.int64)
    key = root * len(names) + pid
    pairs, at = np.unique(key, return_index=True)
    producers_of: dict[int, list[str]] = {}
    for k, _ in sorted(zip(pairs.tolist(), at.tolist(), strict=True), key=lambda kv: kv[1]):
        producers_of.setdefault(k // len(names), []).append(names[k % len(names)])
    pinned: dict[str, str] = {}
    for r, reason in sorted(pinned_root.items(), key=lambda kv: first_label[kv[0]]):
        for p in producers_of[r]:
            pinned.setdefault(p, reason)
    occ: dict[int, dict[Any, list[int]]] = {}
    pinned_array = np.fromiter(pinned_root, dtype=np.int64, count=len(pinned_root))
    for site, (labs, idx) in merged.items():
        roots = root[labs]
        keep = ~np.isin(roots, pinned_array)
        roots, idx = roots[keep], idx[keep]
        order = np.lexsort((idx, roots))
        roots, idx = roots[order], idx[order]
        fresh = np.ones(len(roots), dtype=bool)
        fresh[1:] = (roots[1:] != roots[:-1]) | (idx[1:] != idx[:-1])  # each (class, index) once
        roots, idx = roots[fresh], idx[fresh]
        if not len(roots):
            continue
        starts = np.flatnonzero(np.r_[True, roots[1:] != roots[:-1]]).tolist()
        root_list, idx_list = roots.tolist(), idx.tolist()
        for a, b in zip(starts, [*starts[1:], len(root_list)], strict=True):  # one segment per class
            entry = occ.get(root_list[a])
            if entry is None:
                entry = occ[root_list[a]] = {}
            entry[site] = idx_list[a:b]
    by_key: dict[tuple[str, ...], list[Channel]] = {}
    kinds: dict[tuple[str, ...], str] = {}
    first_seen: dict[tuple[str, ...], int] = {}
    heads_roots = {int(root[lab]) for lab in st.heads}
    for r in sorted(occ, key=lambda r: first_label[r]):
        sites = occ[r]
        if not any(site.role == "out" for site in sites):
            continue
        producers = tuple(producers_of[r])
        by_key.setdefault(producers, []).append(Channel(r, sites))
        kind = "heads" if r in heads_roots else "channels"
        kinds[producers] = "heads" if kinds.get(producers) == "heads" else kind
        first_seen.setdefault(producers, first_label[r])
    groups = []
    for prods, chs in sorted(by_key.items(), key=lambda kv: first_seen[kv[0]]):
        name = f"{_common_prefix(prods)}.heads".lstrip(".") if kinds[prods] == "heads" else prods[0]
        groups.append(Group(name=name, producers=prods, kind=kinds[prods], channels=chs))
    for g in groups:
        for p in g.producers:
            pinned.pop(p, None)
    bindings = [
        SizeBinding(b.module, b.attr, b.old, [sorted({st.find(lab) for lab in r}) for r in b.labels])
        for b in st.bindings
    ]
    modules = list(dict.fromkeys([c.scope for c in cap.calls if c.scope] + [k.rpartition(".")[0]
                                                                              for k in cap.keys.values()]))  # fmt: skip
    return DependencyGraph(groups=groups, pinned=pinned, modules=modules, bindings=bindings, aliases=cap.aliases)
