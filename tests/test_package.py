"""Guardrails: a lean import, docstrings on the public API, ruff clean, tests mirroring the source tree."""

import importlib
import inspect
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import effdl

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_lean():
    code = (
        "import sys, effdl; heavy = [m for m in ('matplotlib', 'onnx', 'onnxruntime', 'mnist1d', 'sklearn', "
        "'tensorboard', 'yaml', 'ray', 'flwr') if m in sys.modules]; print(heavy); "
        # Ray stays out even when the packages that can use it are loaded and a unit runs on the local backend
        "import effdl.scale, effdl.compress, effdl.nas, effdl.analysis, effdl.cli.main; "
        "effdl.scale.run_units(pow, {'a': 2}, effdl.scale.ExecutorConfig()); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "[]"]


def _public_modules():
    for info in pkgutil.walk_packages(effdl.__path__, "effdl."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield importlib.import_module(info.name)


def test_every_public_name_has_a_docstring():
    missing = []
    for module in _public_modules():
        if not inspect.getdoc(module):
            missing.append(module.__name__)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
                missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(obj) and obj.__module__.startswith("effdl"):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not (
                        inspect.isfunction(member) or isinstance(member, classmethod | staticmethod | property)
                    ):
                        continue
                    if not inspect.getdoc(getattr(obj, attr)):
                        missing.append(f"{module.__name__}.{name}.{attr}")
    assert not missing, f"public names without a docstring: {missing}"


def test_top_level_all_is_importable():
    for name in effdl.__all__:
        assert hasattr(effdl, name), name


def test_tests_mirror_the_source_tree():
    packages = {p.name for p in (ROOT / "src" / "effdl").iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert packages <= {p.name for p in (ROOT / "tests").iterdir() if p.is_dir()}


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed; install the test extras: pip install -e '.[test]'")
    proc = subprocess.run([ruff, "check", "--quiet", str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_modules_are_not_shadowed_by_functions():
    """``effdl.x.y`` must be the module y, not a function re-exported under the same name."""
    import types

    shadowed = []
    for module in [effdl, *_public_modules()]:
        if not hasattr(module, "__path__"):
            continue
        for info in pkgutil.iter_modules(module.__path__):
            importlib.import_module(f"{module.__name__}.{info.name}")
            if not isinstance(getattr(module, info.name), types.ModuleType):
                shadowed.append(f"{module.__name__}.{info.name}")
    assert not shadowed, f"functions or classes shadow these modules: {shadowed}"
