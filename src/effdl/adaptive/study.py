"""The pipeline behind ``effdl adaptive``: train the any-precision network on the frames of the MNIST-1D video
dataset (and, as references, the same network trained alone at each width), train the policy, evaluate it against
the baselines, and report (``report.json``, ``report.md``, ``tradeoff.png``).

Stages, each usable alone: :func:`train_any_precision` -> :func:`train_policy_stage` -> :func:`evaluate_stage`;
:func:`run_study` runs all three into one folder and resumes after an interruption (the training runs continue from
their checkpoints; finished stages are read back).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effdl.adaptive.anyprec import (
    AnyPrecisionConfig,
    AnyPrecisionTraining,
    any_precision_,
    at_width,
    model_widths,
    width_bops,
)
from effdl.adaptive.policy import (
    SKIP,
    PolicyConfig,
    PrecisionPolicy,
    baselines,
    choice_costs,
    difficulty_bands,
    evaluate_policy,
    frame_outputs,
    train_policy,
)
from effdl.core.checkpoint import read_metadata
from effdl.core.config import Config, check_range
from effdl.core.errors import CheckpointError, ConfigError
from effdl.core.io import atomic_write_text
from effdl.core.report import Report
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.core.table import format_table
from effdl.data.video import VideoSplits, load_mnist1d_video
from effdl.measure.evaluation import evaluate
from effdl.models import create_model, load_model, save_model
from effdl.train import TrainConfig, Trainer

__all__ = [
    "AdaptiveStudyConfig",
    "cost_sweep",
    "evaluate_stage",
    "load_policy",
    "markdown",
    "plot_tradeoff",
    "run_study",
    "save_policy",
    "train_any_precision",
    "train_policy_stage",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdaptiveStudyConfig(Config):
    """One run of the pipeline.

    Attributes:
        anyprec: widths of the any-precision network (every layer switches by default).
        policy: the policy network and its training.
        model: registered model trained on the frames.
        frames: frames per clip.
        clips: train, validation and test clips (the network trains on the train frames; the policy on the
            validation clips, which the network has not seen; everything is judged on the test clips).
        epochs, lr, batch_size: training of the any-precision network (and of the references).
        lower_weight: weight of the lower widths' losses against the highest width's (``AnyPrecisionTraining``;
            chosen in development runs, not compared in the benchmark).
        alone: also train the network alone at each width (the LSQ reference of each width).
        sweep_costs: further policies trained at these cost weights, each with a random policy of its histogram:
            the trade-off curves of the report's plot.
        seed: seeds the data, every training run and the policy.

    Example:
        >>> AdaptiveStudyConfig(frames=4).anyprec.widths
        (8, 4, 2)
    """

    anyprec: AnyPrecisionConfig = dataclasses.field(default_factory=lambda: AnyPrecisionConfig(end_bits=None))
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    model: str = "cnn1d"
    frames: int = 4
    clips: tuple[int, int, int] = (4000, 1000, 1000)
    epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 128
    lower_weight: float = 0.5
    alone: bool = True
    sweep_costs: tuple[float, ...] = (0.05, 0.1, 0.5, 1.0)
    seed: int = 0

    def validate(self) -> None:
        check_range("frames", self.frames, 1, 100, hint="use frames=4")
        check_range("epochs", self.epochs, 1, 100_000, hint="use epochs=40")
        check_range("lr", self.lr, 0.0, low_open=True, hint="use lr=3e-3")
        check_range("batch_size", self.batch_size, 1, hint="use batch_size=128")
        if len(self.clips) != 3 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.clips):
            raise ConfigError(f"clips takes three positive counts (train, val, test), got {self.clips!r}")
        if len(self.anyprec.widths) < 2:
            raise ConfigError(f"an adaptive policy needs two or more widths, got widths={self.anyprec.widths}")

    def data(self) -> VideoSplits:
        """The clips of this run."""
        return load_mnist1d_video(clips=self.clips, frames=self.frames, seed=self.seed)

    def train_config(self, *, progress: bool = False) -> TrainConfig:
        """The training of the any-precision network and of the references."""
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
                           progress=progress)  # fmt: skip


def _fit(widths: tuple[int, ...], config: AdaptiveStudyConfig, data: VideoSplits, out: Path | None, *, resume: bool,
         progress: bool) -> nn.Module:  # fmt: skip
    torch.manual_seed(config.seed)
    model = create_model(config.model, input_shape=data.input_shape, num_classes=data.num_classes)
    frames = data.train.frames()
    any_precision_(model, config.anyprec.replace(widths=widths), example_inputs=frames.tensors[0][:256])
    callbacks = [AnyPrecisionTraining(lower=config.lower_weight)] if len(widths) > 1 else []
    trainer = Trainer(model, config.train_config(progress=progress), callbacks=callbacks, out_dir=out)
    trainer.fit(frames, resume=resume and out is not None)
    return model.eval()


def _width_accuracy(model: nn.Module, data: VideoSplits) -> dict[int, float]:
    out = {}
    for bits in model_widths(model):
        with at_width(model, bits):
            out[bits] = float(evaluate(model, data.test.frames())["accuracy"])
    return out


def train_any_precision(
    config: AdaptiveStudyConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Trains the any-precision network (``OUT/anyprec``, resumable) and, with ``config.alone``, the network alone
    at each width (``OUT/alone-<b>``); saves ``OUT/model.safetensors``. Returns the model and the frame accuracies
    per width on the test clips (``{"any_precision": {bits: acc}, "alone": {bits: acc}}``)."""
    out = Path(out_dir)
    data = config.data()
    path = out / "model.safetensors"
    if resume and path.is_file():
        model = load_model(path)
    else:
        model = _fit(config.anyprec.widths, config, data, out / "anyprec", resume=resume, progress=progress)
        save_model(model, path, meta={"adaptive": config.to_dict()})
    accuracy: dict[str, Any] = {"any_precision": _width_accuracy(model, data), "alone": {}}
    if config.alone:
        for bits in config.anyprec.ordered:
            alone = _fit((bits,), config, data, out / f"alone-{bits}", resume=resume, progress=progress)
            with torch.no_grad():
                accuracy["alone"][bits] = float(evaluate(alone, data.test.frames())["accuracy"])
    log.info("frame accuracy per width: %s", accuracy)
    return model, accuracy


def save_policy(policy: PrecisionPolicy, path: str | os.PathLike, *, choices: list[int]) -> Path:
    """Saves the policy with what rebuilds it (frame shape, choices, sizes)."""
    meta = {"policy": {"frame_shape": list(policy.frame_shape), "choices": choices, "hidden": policy.gru.hidden_size,
                       "view": policy.view}}  # fmt: skip
    return save_model(policy, path, meta=meta)


def load_policy(path: str | os.PathLike) -> tuple[PrecisionPolicy, list[int]]:
    """Loads a policy saved by :func:`save_policy`; returns it and its choices (bits, 0 = skip)."""
    meta = read_metadata(path).get("policy")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a saved precision policy (no 'policy' metadata); train one with "
                              "effdl adaptive policy")  # fmt: skip
    try:
        policy = PrecisionPolicy(tuple(int(s) for s in meta["frame_shape"]), len(meta["choices"]),
                                 hidden=int(meta["hidden"]), view=int(meta["view"]))  # fmt: skip
        choices = [int(c) for c in meta["choices"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable policy metadata ({exc})") from exc
    return load_model(path, model=policy).eval(), choices


def train_policy_stage(
    model: nn.Module, config: AdaptiveStudyConfig, out_dir: str | os.PathLike | None = None
) -> tuple[PrecisionPolicy, list[int], list[dict[str, float]]]:
    """Trains the policy on the validation clips with ``model`` frozen; saves ``OUT/policy.safetensors``."""
    widths = model_widths(model)
    if len(widths) < 2:
        raise ConfigError("the policy needs an any-precision model with two or more widths; train one with "
                          "effdl adaptive train")  # fmt: skip
    data = config.data()
    choices = config.policy.choices(widths)
    costs = choice_costs(model, data.input_shape, choices)
    torch.manual_seed(config.policy.seed)
    policy = PrecisionPolicy(data.input_shape, len(choices), hidden=config.policy.hidden, view=config.policy.view)
    probs = frame_outputs(model, data.val.x)
    history = train_policy(policy, probs, data.val.x, data.val.y, costs=costs, config=config.policy)
    if out_dir is not None:
        save_policy(policy, Path(out_dir) / "policy.safetensors", choices=choices)
    return policy, choices, history


def evaluate_stage(
    model: nn.Module, policy: PrecisionPolicy, choices: list[int], config: AdaptiveStudyConfig
) -> dict[str, Any]:
    """The policy and the baselines on the test clips: ``{"policy": ..., "baselines": [...], "bops": ...}``."""
    data = config.data()
    widths = model_widths(model)
    if [c for c in choices if c != SKIP] != list(widths):
        raise ConfigError(f"the policy chooses among {choices} but the model runs at widths {list(widths)}; train "
                          "the policy for this model")  # fmt: skip
    costs = choice_costs(model, data.input_shape, choices)
    bops = width_bops(model, torch.zeros(1, *data.input_shape))
    policy_bops = policy.macs_per_frame() * 32 * 32 / bops[widths[0]]  # the policy runs in float
    probs = frame_outputs(model, data.test.x)
    result = evaluate_policy(policy, probs, data.test.x, data.test.y, costs=costs, choices=choices,
                             policy_bops=policy_bops, difficulty=data.test.difficulty)  # fmt: skip
    rows = baselines(probs, data.test.y, costs=costs, choices=choices, match=result, seed=config.seed)
    budget = sum(result.histogram[c] * float(costs[i]) for i, c in enumerate(choices))  # the policy's recognition
    rows.append(difficulty_bands((frame_outputs(model, data.val.x), data.val.y, data.val.difficulty),
                                 (probs, data.test.y, data.test.difficulty), costs=costs, choices=choices,
                                 budget=budget))  # fmt: skip
    return {"policy": result.to_dict(), "baselines": [r.to_dict() for r in rows],
            "bops_per_frame": {str(k): v for k, v in bops.items()}, "policy_macs_per_frame": policy.macs_per_frame(),
            "policy_relative_bops": policy_bops, "choices": choices}  # fmt: skip


def cost_sweep(model: nn.Module, config: AdaptiveStudyConfig) -> list[dict[str, Any]]:
    """Policies trained at each of ``config.sweep_costs``, evaluated on the test clips with a random policy of the
    same histogram: ``[{"cost": c, "policy": ..., "random": ...}]``."""
    out = []
    for c in config.sweep_costs:
        cfg = config.replace(policy=config.policy.replace(cost=c))
        policy, choices, _ = train_policy_stage(model, cfg)
        details = evaluate_stage(model, policy, choices, cfg)  # its baselines hold the random policy of its histogram
        rnd = next(r for r in details["baselines"] if r["name"].startswith("random policy"))
        out.append({"cost": c, "policy": details["policy"], "random": rnd})
        log.info("policy at cost %g: clip accuracy %.4f at %.3f BOPs (random policy %.4f)", c,
                 details["policy"]["accuracy"], details["policy"]["relative_bops"], rnd["accuracy"])  # fmt: skip
    return out


def run_study(
    config: AdaptiveStudyConfig, *, out_dir: str | os.PathLike, resume: bool = False, progress: bool = False
) -> Report:
    """Runs the three stages into ``out_dir`` and writes ``report.json``, ``report.md`` and ``tradeoff.png``."""
    with claim_run_dir(out_dir, command="adaptive", identity=run_identity(config=config.to_dict()), resume=resume):
        out = Path(out_dir)
        model, accuracy = train_any_precision(config, out, resume=resume, progress=progress)
        path = out / "policy.safetensors"
        if resume and path.is_file():
            policy, choices = load_policy(path)
        else:
            policy, choices, _ = train_policy_stage(model, config, out)
        details = {"frame_accuracy": {k: {str(b): v for b, v in d.items()} for k, d in accuracy.items()},
                   **evaluate_stage(model, policy, choices, config), "sweep": cost_sweep(model, config)}  # fmt: skip
        report = Report(command="adaptive", model=config.model, dataset="mnist1d-video", config=config.to_dict(),
                        details=details, artifacts={"tradeoff": "tradeoff.png", "table": "report.md"})  # fmt: skip
        plot_tradeoff(details, out / "tradeoff.png")
        atomic_write_text(out / "report.md", markdown(details))
        report.write(out)
    return report


def _rows(details: dict[str, Any]) -> list[dict[str, Any]]:
    return [details["policy"], *details["baselines"]]


def markdown(details: dict[str, Any]) -> str:
    """The report as markdown: frame accuracy per width, then the policy against the baselines on the test clips."""
    top = max(int(k) for k in details["bops_per_frame"])
    acc = details.get("frame_accuracy", {})
    w_rows = [[f"{b}-bit", f"{100 * a:.2f}%", f"{100 * acc['alone'][b]:.2f}%" if b in acc.get("alone", {}) else "-"]
              for b, a in acc.get("any_precision", {}).items()]  # fmt: skip
    choices = [str(c) for c in details["choices"]]
    rows = []
    for r in _rows(details):
        hist = " / ".join(f"{100 * r['histogram'].get(c, 0.0):.0f}%" for c in choices)
        sp = r.get("spearman") or {}
        rows.append([r["name"], f"{100 * r['accuracy']:.2f}%", f"{100 * r['relative_bops']:.1f}%", hist,
                     "-" if sp.get("all_frames") is None else f"{sp['all_frames']:+.2f}",
                     "-" if sp.get("frames_not_skipped") is None else f"{sp['frames_not_skipped']:+.2f}"])  # fmt: skip
    labels = " / ".join("skip" if c == "0" else f"{c}b" for c in choices)
    head = ["# Input-adaptive precision", ""]
    if w_rows:
        head += ["Frame accuracy on the test clips' frames, per width: the any-precision network (one set of weights) "
                 "and the same network trained alone at that width.", "",
                 format_table(w_rows, ["width", "any-precision", "trained alone"], align="lrr"), ""]  # fmt: skip
    return "\n".join([
        *head,
        f"Clips on the test split; BOPs per clip relative to every frame at {top} bits (the policy's own "
        f"{100 * details['policy_relative_bops']:.1f}% included); Spearman: frame difficulty against chosen bits "
        "(skip = 0).", "",
        format_table(rows, ["policy", "clip accuracy", "BOPs", f"frames {labels}", "Spearman (all)",
                            "Spearman (not skipped)"], align="lrrrrr"), "",
        *_sweep_lines(details.get("sweep", [])),
    ])  # fmt: skip


def _sweep_lines(sweep: list[dict[str, Any]]) -> list[str]:
    if not sweep:
        return []
    rows = [[f"{s['cost']:g}", f"{100 * s['policy']['accuracy']:.2f}%", f"{100 * s['policy']['relative_bops']:.1f}%",
             f"{100 * s['random']['accuracy']:.2f}%"] for s in sweep]  # fmt: skip
    return ["Policies trained at other cost weights (test clips), each against a random policy of its histogram:", "",
            format_table(rows, ["cost weight", "clip accuracy", "BOPs", "random policy"], align="rrrr"), ""]


def plot_tradeoff(details: dict[str, Any], path: str | os.PathLike) -> Path:
    """Clip accuracy against relative BOPs: fixed widths (a line), the random policy, the uniform mix, the oracle
    and the adaptive policy."""
    from effdl.core.plot import saved_figure

    rows = _rows(details)
    fixed = sorted((r for r in rows if r["name"].startswith("all ")), key=lambda r: r["relative_bops"])
    with saved_figure(path) as (fig, ax):
        ax.plot([100 * r["relative_bops"] for r in fixed], [100 * r["accuracy"] for r in fixed], "o-", color="gray",
                label="every frame at one width")  # fmt: skip
        sweep = sorted([*details.get("sweep", []), {"policy": details["policy"], "random": None}],
                       key=lambda s: s["policy"]["relative_bops"])  # fmt: skip
        if len(sweep) > 1:
            ax.plot([100 * s["policy"]["relative_bops"] for s in sweep], [100 * s["policy"]["accuracy"] for s in sweep],
                    "-", color="tab:blue", alpha=0.6, label="adaptive policy, cost weights swept")  # fmt: skip
            rnd = [s["random"] for s in sweep if s["random"] is not None]
            ax.plot([100 * r["relative_bops"] for r in rnd], [100 * r["accuracy"] for r in rnd], "x--",
                    color="tab:red", alpha=0.6, label="random policy of each one's histogram")  # fmt: skip
        for r in fixed:
            ax.annotate(r["name"].removeprefix("all "), (100 * r["relative_bops"], 100 * r["accuracy"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=8)  # fmt: skip
        marks = {"random": ("x", "tab:red"), "uniform": ("s", "tab:orange"), "oracle": ("^", "tab:green"),
                 "difficulty": ("D", "tab:purple"), "adaptive": ("*", "tab:blue")}  # fmt: skip
        for r in rows:
            key = next((k for k in marks if r["name"].startswith(k)), None)
            if key is not None:
                m, c = marks[key]
                ax.scatter(100 * r["relative_bops"], 100 * r["accuracy"], marker=m, color=c, s=120 if key ==
                           "adaptive" else 60, label=r["name"], zorder=3)  # fmt: skip
        ax.set_xlabel("BOPs per clip (% of all frames at the highest width)")
        ax.set_ylabel("clip accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
    return Path(path)
