"""The layering of ``src/effdl``: imports point downward only (also inside functions and under TYPE_CHECKING), no
package imports another of its own layer's training loop or methods sideways into a cycle, and no cycle runs
between packages."""

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "effdl"

#: lower number = lower layer; a package may import only packages of a lower layer (or of its own, without cycles)
LAYERS = {
    "core": 0,
    "_version": 0,
    "measure": 1,
    "data": 1,
    "models": 1,
    "export": 1,
    "scale": 1,
    "prune": 2,
    "quant": 2,
    "factorize": 2,
    "distill": 2,
    "train": 2,
    "compress": 3,
    "analysis": 3,
    "nas": 3,
    "unroll": 3,
    "unlearn": 3,
    "adaptive": 3,
    "federated": 3,
    "fewshot": 3,
    "multitask": 3,
    "cli": 4,
    "__main__": 4,
}
METHODS = {"prune", "quant", "factorize", "distill"}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""  # "" is effdl's own __init__ (the curated API, above everything)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every effdl module ``path`` imports, anywhere in the file: ``(line, module)``."""
    module = _module_name(path)
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "effdl"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "effdl":
                continue
            for alias in node.names:  # `from effdl.x import y`: y may be a module of package x
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if _is_module(sub) else target))
    return found


def _is_module(name: str) -> bool:
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph():
    edges = defaultdict(set)
    where = {}
    for path in sorted(SRC.rglob("*.py")):
        src = _package(_module_name(path))
        for line, target in _imports(path):
            dst = _package(target)
            if dst and dst != src:
                edges[src].add(dst)
                where.setdefault((src, dst), f"{path.relative_to(SRC.parent)}:{line} imports {target}")
    return edges, where


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages - set(LAYERS) == set(), "give the new package a layer in LAYERS (and in STYLE's diagram)"


def test_imports_point_downward_only():
    edges, where = _graph()
    upward = [where[s, d] for s, ds in edges.items() for d in ds if s and LAYERS[d] > LAYERS[s]]
    assert upward == [], "imports from a lower layer to a higher one:\n" + "\n".join(upward)
    top = [where[s, d] for s, ds in edges.items() for d in ds if d == ""]
    assert top == []


def test_training_and_methods_stand_side_by_side():
    edges, where = _graph()
    crossing = [where[m, "train"] for m in METHODS if "train" in edges.get(m, ())]
    crossing += [where["train", m] for m in METHODS if m in edges.get("train", ())]
    assert crossing == [], "methods see the trainer only through core.callback.TrainerView:\n" + "\n".join(crossing)


def test_no_import_cycle_between_packages():
    edges, where = _graph()
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycle = [*stack[stack.index(node) :], node]
            cycles.append(" -> ".join(cycle) + "\n  " + "\n  ".join(where[a, b] for a, b in itertools.pairwise(cycle)))
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt:
                visit(nxt)
        stack.pop()

    for package in sorted(edges):
        if package:
            visit(package)
    assert cycles == [], "import cycles between packages:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from effdl.prune.api import prune_", ["effdl.prune.api"]),
        ("def f():\n    from effdl.quant import x", ["effdl.quant"]),
        ("if TYPE_CHECKING:\n    from effdl.train.loop import T", ["effdl.train.loop"]),
        ("from . import graph", ["effdl.models.graph"]),
        ("from ..core import errors", ["effdl.core"]),
        ("from effdl import __version__", ["effdl"]),
        ("import effdl.nas.space", ["effdl.nas.space"]),
        ("from effdl import compress", ["effdl.compress"]),
        ("import torch", []),
    ],
)
def test_the_walker_sees_every_kind_of_import(tmp_path, source, expected, monkeypatch):
    pkg = tmp_path / "effdl" / "models"
    pkg.mkdir(parents=True)
    (pkg / "graph.py").write_text("")
    for name in ("core", "compress", "nas"):
        (tmp_path / "effdl" / name).mkdir()
        (tmp_path / "effdl" / name / "__init__.py").write_text("")
    f = pkg / "x.py"
    f.write_text(source + "\n")
    monkeypatch.setattr(f"{__name__}.SRC", tmp_path / "effdl")
    assert [m for _, m in _imports(f)] == expected
