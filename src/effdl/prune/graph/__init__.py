"""Dependency analysis: which channels of which tensors must be removed together.

The model runs once on example inputs under a capture (:mod:`effdl.measure.capture`) that records every torch call
with its real tensors; no symbolic tracing, so any model that runs can be analysed. Each tensor then carries labels
for its channels (an integer array over its channel axes). Producers (a conv's filters, a linear layer's neurons,
an embedding's features) create fresh labels; elementwise ops unite the labels of their operands where they meet;
reshapes, permutes, splits and concatenations move them; a split of a channel axis into heads makes a grid, and an
attention contraction over the head width unites each head into one removable unit (grouped-query attention unites
each key/value head with the query heads it serves). Every place a label is used in a parameter or buffer is
recorded as a :class:`Site`; a *channel* is one class of united labels, and removing it removes every recorded
index at once, which keeps the model consistent. Module attributes the forward uses as sizes (``num_heads``) are
recorded as bindings and updated by surgery.

Anything the analysis cannot follow exactly *pins* the labels it touches (they are never removed): model outputs,
ops that mix channels (LayerNorm or softmax over channels, reductions, grouped convolutions), grids that would turn
ragged, unknown functions. So the analysis can be conservative, but it never yields a wrong model; structured
pruning also checks the result against the zeroed dense model.
"""

from effdl.prune.graph._builder import build_dependency_graph
from effdl.prune.graph._functions import register_function_rule
from effdl.prune.graph._model import Channel, DependencyGraph, Group, Site, SizeBinding
from effdl.prune.graph._modules import module_fixup, register_module_handler

__all__ = [
    "Channel",
    "DependencyGraph",
    "Group",
    "Site",
    "SizeBinding",
    "build_dependency_graph",
    "module_fixup",
    "register_function_rule",
    "register_module_handler",
]
