"""Deployment of a compressed model: ONNX export run by onnxruntime with the same predictions, the faster runtime
at the serving batch size, and every stage timed side by side."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from effdl.core.errors import EffdlError
from effdl.data.base import DatasetSplits
from effdl.data.loaders import make_loader
from effdl.export.onnx import OnnxModel, export_onnx
from effdl.measure.latency import compare_latency
from effdl.models.checkpoint import load_model
from effdl.quant.config import Int8Config
from effdl.quant.int8 import Int8Model, available_runtimes, convert_int8, load_int8

if TYPE_CHECKING:
    from effdl.compress.pipeline import Stage

__all__ = ["Deployment", "deploy"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Deployment:
    """How the final model is served.

    Attributes:
        batch_size: the serving batch size everything was timed at.
        onnx_path: the ONNX file (None if export failed; then ``onnx_error`` says why).
        runtimes_ms: median latency of the final model in each runtime tried.
        best: the fastest of them.
        agreement: share of test examples where the onnxruntime model predicts the class that the PyTorch model
            (float: the same model; int8: the torch-ao int8 model) predicts.
        stage_latency_ms: by stage name, every stage (the final one in ``best``) timed side by side: median and
            IQR.
    """

    batch_size: int
    onnx_path: str | None
    onnx_error: str | None
    runtimes_ms: dict[str, float]
    best: str
    agreement: float | None
    stage_latency_ms: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return dataclasses.asdict(self)


def deploy(
    final: nn.Module,
    stages: list[Stage],
    data: DatasetSplits,
    out: Path,
    *,
    batch_size: int,
    threads: int | None,
    rounds: int = 11,
) -> Deployment:
    """Writes the final model and its ONNX form to ``out``, checks that onnxruntime predicts the same classes, picks
    the faster runtime at ``batch_size`` and times every stage side by side."""
    out.mkdir(parents=True, exist_ok=True)
    x = data.example_inputs(batch_size)
    if isinstance(final, Int8Model):
        candidates, onnx_path, error = _int8_runtimes(final, stages, data, out, threads)
        src = Path(stages[-1].path)
        for f in src.parent.glob(src.name + "*"):
            shutil.copy2(f, out / f.name)
    else:
        candidates, onnx_path, error = _float_runtimes(final, data, out, threads)
        shutil.copy2(stages[-1].path, out / "model.safetensors")
    ort_key = next((k for k in candidates if k.startswith("onnxruntime")), None)
    agreement = None
    if ort_key is not None and len(candidates) > 1:
        other = next(k for k in candidates if k != ort_key)
        agreement = _agreement(candidates[other], candidates[ort_key], data)
    times = {k: v.median_ms for k, v in compare_latency(candidates, x, rounds=rounds, threads=threads).items()}
    best = min(times, key=times.get)
    fns = {s.name: _load(s) for s in stages[:-1]}
    fns[stages[-1].name] = candidates[best]  # the final stage as deployed, in the fastest runtime
    stats = compare_latency(fns, x, rounds=rounds, threads=threads)
    log.info("deployment at batch %d: %s", batch_size, ", ".join(f"{k} {v:.3f} ms" for k, v in times.items()))
    return Deployment(
        batch_size=batch_size,
        onnx_path=onnx_path,
        onnx_error=error,
        runtimes_ms=times,
        best=best,
        agreement=agreement,
        stage_latency_ms={k: {"median": v.median_ms, "iqr": v.iqr_ms} for k, v in stats.items()},
    )


def _float_runtimes(final, data, out: Path, threads) -> tuple[dict[str, nn.Module], str | None, str | None]:
    """PyTorch and, when the export works, the ONNX export run by onnxruntime."""
    path = out / "model.onnx"
    runtimes: dict[str, nn.Module] = {"pytorch": final}
    try:
        export_onnx(final, data.example_inputs(2), path)  # checks onnxruntime's outputs against PyTorch's
        runtimes["onnxruntime"] = OnnxModel(path, threads=threads)
        return runtimes, str(path), None
    except (EffdlError, ImportError, RuntimeError) as exc:
        log.warning("no ONNX form of the final model: %s", exc)
        return runtimes, None, str(exc)


def _int8_runtimes(final, stages, data, out: Path, threads) -> tuple[dict[str, nn.Module], str | None, str | None]:
    """The int8 model in its runtime and, where available, the same float model converted for the other one (the
    onnxruntime form is the ONNX file)."""
    runtimes: dict[str, nn.Module] = {f"{final.runtime} int8": final}
    other = "torch-ao" if final.runtime == "onnxruntime" else "onnxruntime"
    error = None
    if other in available_runtimes():
        previous = load_model(stages[-2].path)
        config = Int8Config.from_dict(final.meta["config"]).replace(runtime=other)
        try:
            runtimes[f"{other} int8"] = convert_int8(previous, config, example_inputs=data.example_inputs(8),
                                                     data=_calibration(data), threads=threads)  # fmt: skip
        except (EffdlError, RuntimeError) as exc:
            log.warning("could not also build the %s int8 model: %s", other, exc)
            error = str(exc)
    onnx = runtimes.get("onnxruntime int8")
    if onnx is None:
        return runtimes, None, error or "onnxruntime is not installed (pip install 'effdl[onnx]')"
    return runtimes, str(onnx.save(out / "model")), None


def _calibration(data: DatasetSplits):
    return make_loader(data.train, 64, shuffle=True, seed=0)


def _agreement(a: nn.Module, b: nn.Module, data: DatasetSplits) -> float:
    same = total = 0
    with torch.inference_mode():
        for x, _ in make_loader(data.test, 256, shuffle=False):
            same += int((a(x).argmax(1) == b(x).argmax(1)).sum())
            total += len(x)
    return same / max(total, 1)


def _load(stage: Stage) -> nn.Module:
    return load_int8(stage.path) if stage.runtime.endswith("int8") else load_model(stage.path)
