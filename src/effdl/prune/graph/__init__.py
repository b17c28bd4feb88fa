"""Dependency analysis: which channels of which tensors must be removed together.

The model is traced with ``torch.fx`` and run once on example inputs to learn every tensor's shape. Each tensor
then carries, for one *channel dimension*, a label per channel. Producers (a conv's filters, a Linear's neurons,
an attention block's heads) create fresh labels; shape-preserving ops pass them on; a residual addition unites
the labels of its operands channel by channel; a concatenation along channels concatenates them; flatten expands a
channel into its features. Every place a label is used in a parameter or buffer is recorded as a :class:`Site`.
A *channel* is one class of united labels: removing it removes every recorded index at once, which keeps the
model consistent.

Anything the analysis cannot follow exactly *pins* the labels it touches (they are never removed): model inputs
and outputs, ops that mix channels (LayerNorm over channels, softmax over channels, reshapes that split the
channel dimension, grouped convolutions), unknown functions. A leaf module with parameters that no handler
knows is an error naming it, unless it is excluded with ``ignore``; so the analysis can be conservative, but it
never yields a wrong model.
"""

from effdl.prune.graph._builder import build_dependency_graph
from effdl.prune.graph._model import Channel, DependencyGraph, Group, Site
from effdl.prune.graph._modules import module_fixup, register_module_handler

__all__ = [
    "Channel",
    "DependencyGraph",
    "Group",
    "Site",
    "build_dependency_graph",
    "module_fixup",
    "register_module_handler",
]
