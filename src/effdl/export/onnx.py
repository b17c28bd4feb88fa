"""ONNX export with a dynamic batch axis, checked by running the file in onnxruntime."""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effdl.core.errors import EffdlError, UnsupportedError
from effdl.core.io import publish
from effdl.core.modules import eval_mode
from effdl.measure.capture import flatten_tensors

__all__ = ["OnnxModel", "export_onnx", "onnx_session", "run_onnx"]

log = logging.getLogger(__name__)


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise EffdlError(f"ONNX export needs {module}; install it with: pip install 'effdl[onnx]'") from exc


def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    *,
    opset: int = 17,
    check: bool = True,
) -> Path:
    """Exports ``model`` (eval mode) to ``path`` atomically, with a dynamic batch axis on every input and output (and
    a dynamic sequence axis on integer inputs: token ids).

    With ``check``, the file is run once in onnxruntime and its outputs compared to PyTorch's (``atol=1e-4``).

    Args:
        model: the module to export.
        example_inputs: a tensor or tuple of tensors with a batch dimension.
        path: the ``.onnx`` file to write.
        opset: ONNX opset version.
        check: verify with onnxruntime.

    Returns:
        The path written.

    Raises:
        UnsupportedError: the exporter failed, or onnxruntime disagrees with PyTorch.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.onnx"
        >>> _ = export_onnx(nn.Linear(4, 2), torch.zeros(3, 4), p)
        >>> run_onnx(p, torch.zeros(5, 4))[0].shape
        (5, 2)
    """
    _require("onnx")
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"input{i}" for i in range(len(args))]
    label = type(model).__name__
    model = _Flat(model)
    with torch.no_grad(), eval_mode(model):
        n_out = len(model(*args))
    outputs = ["output", *[f"output{i}" for i in range(1, n_out)]]
    with eval_mode(model):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with torch.no_grad():
                expected = model(*args)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter warns that it is deprecated
                torch.onnx.export(
                    model,
                    args,
                    tmp,
                    input_names=names,
                    output_names=outputs,
                    dynamic_axes=_dynamic_axes(names, args, outputs),
                    opset_version=opset,
                    dynamo=False,
                )
            if check:
                got = run_onnx(tmp, *args)[0]
                ref = expected[0].numpy()
                if got.shape != ref.shape or not np.allclose(got, ref, atol=1e-4, rtol=1e-4):
                    raise UnsupportedError(
                        f"onnxruntime's output differs from PyTorch's (max |diff| "
                        f"{float(np.abs(got - ref).max()) if got.shape == ref.shape else 'shape ' + str(got.shape)}); "
                        "the export is not faithful for this model"
                    )
            publish(tmp, path)
        except UnsupportedError:
            raise
        except Exception as exc:
            message = f"ONNX export of {label} failed: {type(exc).__name__}: {exc}"
            raise UnsupportedError(message) from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    log.info("exported %s to %s", label, path)
    return path


def _dynamic_axes(names: list[str], args: tuple, outputs: list[str]) -> dict[str, dict[int, str]]:
    """A dynamic batch axis everywhere, and a dynamic sequence axis on integer inputs (token ids)."""
    axes: dict[str, dict[int, str]] = {o: {0: "batch"} for o in outputs}
    for n, a in zip(names, args, strict=True):
        tokens = not a.is_floating_point() and a.dim() >= 2
        axes[n] = {0: "batch", 1: "sequence"} if tokens else {0: "batch"}
    return axes


class _Flat(nn.Module):
    """Exports see a tuple of tensors: a model's structured outputs (Hugging Face's ``ModelOutput`` dicts, nested
    tuples) are flattened in order, non-tensors (a key/value cache object) dropped; a model that takes
    ``use_cache`` runs without its cache, and one that takes an ``attention_mask`` beside its token ids gets an
    all-ones mask (the same result; it keeps the exporter off the mask inference code for packed sequences)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        params = inspect.signature(model.forward).parameters
        self._cache = "use_cache" in params
        self._mask = "attention_mask" in params

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs: dict[str, Any] = {"use_cache": False} if self._cache else {}
        if self._mask and len(args) == 1 and not args[0].is_floating_point():
            kwargs["attention_mask"] = torch.ones_like(args[0])
        return tuple(flatten_tensors(self.model(*args, **kwargs)))


def run_onnx(path: str | os.PathLike, *inputs: torch.Tensor | np.ndarray) -> list[np.ndarray]:
    """Runs an ONNX file in onnxruntime (CPU) and returns its outputs as numpy arrays."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {
        i.name: (x.detach().numpy() if isinstance(x, torch.Tensor) else x)
        for i, x in zip(session.get_inputs(), inputs, strict=True)
    }
    return session.run(None, feeds)


def onnx_session(model: str | os.PathLike | bytes, threads: int | None = None, *, optimization: str = "all"):
    """An onnxruntime CPU session for an ONNX file (path or bytes) with ``threads`` intra-op threads (default:
    torch's) and thread spinning off: onnxruntime's pool threads busy-wait after each run by default, which on a
    small CPU steals the cores from whatever runs next (PyTorch ops in the same process ran 2x slower here).
    ``optimization="basic"`` stops onnxruntime's graph optimizer before its fusions (int8 QDQ fusions included)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    if optimization == "basic":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxModel(nn.Module):
    """An ONNX file run by onnxruntime, callable like the PyTorch model it was exported from (one tensor in, one
    out), so that it can be evaluated and timed with the same tools.

    Example:
        >>> import tempfile
        >>> m = nn.Linear(4, 2).eval()
        >>> with tempfile.TemporaryDirectory() as d:
        ...     om = OnnxModel(export_onnx(m, torch.zeros(1, 4), f"{d}/m.onnx"))
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(om(x), m(x), atol=1e-5)
        True
    """

    def __init__(self, path: str | os.PathLike | bytes, *, threads: int | None = None) -> None:
        super().__init__()
        self.session = onnx_session(path, threads)
        self._input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self._input: x.detach().cpu().numpy()})[0])
