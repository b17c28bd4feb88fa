"""The compression report: a stage table (every stage against the baseline), the deployment section, report.md,
report.json and the Pareto plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from effdl.core.io import atomic_write_text
from effdl.core.plot import saved_figure
from effdl.core.report import Report
from effdl.core.table import format_table, human_bytes, human_count

if TYPE_CHECKING:
    from effdl.compress.deploy import Deployment
    from effdl.compress.pipeline import Stage

__all__ = ["pareto_front", "plot_pareto", "stage_table", "write_reports"]


def _latency(deployment: Deployment | None, stages: list[Stage]) -> dict[str, float]:
    """Per stage name, the latency measured side by side at the end (or during the run, if not deployed)."""
    if deployment is None:
        return {s.name: s.summary.latency_ms for s in stages}
    return {name: v["median"] for name, v in deployment.stage_latency_ms.items()}


def stage_table(stages: list[Stage], deployment: Deployment | None = None) -> str:
    """Accuracy, parameters, MACs, size and latency of every stage, with size and latency ratios to the baseline.

    Example:
        >>> from effdl.compress.pipeline import Stage
        >>> from effdl.core.report import ModelSummary
        >>> s = ModelSummary(params=10, macs=20, size_bytes=400, accuracy=0.9, latency_ms=2.0, batch_size=32)
        >>> print(stage_table([Stage("baseline", s, "m")]).splitlines()[0])
        | stage    | runtime | accuracy |   params |     MACs |    size |  latency | smaller | faster |
    """
    lat = _latency(deployment, stages)
    base = stages[0].summary
    base_lat = lat.get(stages[0].name)
    rows = []
    for i, s in enumerate(stages):
        m = s.summary
        runtime = deployment.best if deployment is not None and i == len(stages) - 1 else s.runtime
        ms = lat.get(s.name)
        rows.append([
            s.name,
            runtime,
            f"{100 * m.accuracy:.2f}%" if m.accuracy is not None else "-",
            human_count(m.params),
            human_count(m.macs) if m.macs else "-",
            human_bytes(m.size_bytes),
            f"{ms:.3f} ms" if ms is not None else "-",
            f"{base.size_bytes / m.size_bytes:.2f}x",
            f"{base_lat / ms:.2f}x" if ms and base_lat else "-",
        ])  # fmt: skip
    headers = ["stage", "runtime", "accuracy", "params", "MACs", "size", "latency", "smaller", "faster"]
    return format_table(rows, headers, align="llrrrrrrr")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated by another (lower cost and at least the accuracy), by cost.

    Example:
        >>> pareto_front([(1.0, 0.9), (2.0, 0.95), (3.0, 0.93), (0.5, 0.5)])
        [3, 0, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(
    names: list[str], accuracy: list[float], latency: list[float], size: list[float], path: str | Path, *, title: str
) -> Path:
    """Accuracy against latency and against size, every point labelled and the Pareto front drawn."""
    with saved_figure(path, size=(12, 4.8), ncols=2) as (_, axes):
        for ax, cost, label in ((axes[0], latency, "latency (ms)"), (axes[1], [b / 1024 for b in size], "size (KiB)")):
            ys = [100 * a for a in accuracy]
            ax.scatter(cost, ys, c=["tab:red"] + ["tab:blue"] * (len(cost) - 1), zorder=3)
            for x, y, name in zip(cost, ys, names, strict=True):
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            front = pareto_front(list(zip(cost, ys, strict=True)))
            ax.plot(
                [cost[i] for i in front], [ys[i] for i in front], "--", color="gray", zorder=2, label="Pareto front"
            )
            ax.set_xscale("log")
            ax.set_xlabel(label + ", log scale")
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        axes[0].set_title(title, fontsize=9, loc="left")
    return Path(path)


def write_reports(report: Report, stages: list[Stage], deployment: Deployment | None, out: Path) -> None:
    """Writes ``report.json``, ``report.md`` and ``pareto.png`` into ``out``."""
    lat = _latency(deployment, stages)
    names = [s.name for s in stages]
    batch = deployment.batch_size if deployment else stages[0].summary.batch_size
    plot = plot_pareto(
        names,
        [s.summary.accuracy or 0.0 for s in stages],
        [lat.get(s.name) or s.summary.latency_ms or 0.0 for s in stages],
        [float(s.summary.size_bytes) for s in stages],
        out / "pareto.png",
        title=f"{report.model} on {report.dataset}: every stage (baseline red), batch {batch}",
    )
    report.artifacts.update({"report_md": str(out / "report.md"), "pareto_plot": str(plot),
                             "model": str(out / "final")})  # fmt: skip
    if deployment is not None and deployment.onnx_path:
        report.artifacts["onnx"] = deployment.onnx_path
    report.write(out)
    lines = [
        f"# Compression report: {report.model} on {report.dataset}",
        "",
        f"Recipe: {report.config['recipe'].get('name') or '(unnamed)'}; latency at batch {batch}, every stage timed "
        "side by side at the end (median); size is the saved file.",
        "",
        stage_table(stages, deployment),
        "",
    ]
    if deployment is not None:
        lines += ["## Deployment", ""]
        rows = [
            [k, f"{v:.3f} ms", "<- fastest" if k == deployment.best else ""] for k, v in deployment.runtimes_ms.items()
        ]
        lines += [format_table(rows, ["runtime", f"latency (batch {batch})", ""], align="lrl"), ""]
        if deployment.onnx_path and deployment.agreement is None:
            lines.append(f"ONNX: `{deployment.onnx_path}` (no second runtime could run this model to cross-check "
                         "onnxruntime's predictions; see the log).")  # fmt: skip
        elif deployment.onnx_path:
            lines.append(f"ONNX: `{deployment.onnx_path}`; onnxruntime predicts the same class as the PyTorch model on "
                         f"{100 * deployment.agreement:.2f}% of the test set.")  # fmt: skip
        else:
            lines.append(f"No ONNX form: {deployment.onnx_error}")
        lines.append("")
    lines += ["![Pareto plot](pareto.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
