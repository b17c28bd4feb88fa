"""The study behind ``effdl unlearn``: train the inpainting model and the judge, make the model forget some digit
classes with the paper's method (real and proxy retain set) and with the baselines, sweep the trade-off, compare
with retraining from scratch, and report."""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from effdl.core.config import Config, check_range
from effdl.core.errors import ConfigError
from effdl.core.report import Report
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.unlearn.method import UnlearnConfig, unlearn_
from effdl.unlearn.metrics import reconstruct, score_set
from effdl.unlearn.task import check_mask_ratio, check_width, digit_splits, train_autoencoder, train_classifier

__all__ = ["UnlearnStudyConfig", "rows_table", "run_study"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnlearnStudyConfig(Config):
    """One run of the study.

    Attributes:
        forget: digit classes to forget (the rest are retained).
        alpha: forget weight of the paper's method for the headline rows.
        alphas: the trade-off sweep of the paper's method.
        ascent_steps: the trade-off sweep of gradient ascent (its steps; more steps forget more and damage more).
        unlearn: steps, learning rate and batch size of every unlearning run (method and alpha are set per run).
        epochs: training epochs of the inpainting model (and of retraining from scratch).
        width: channels of the inpainting model's encoder output (its first conv has half as many).
        mask_ratio: share of 2x2 patches hidden from the model (the task; 0.5 leaves much of each digit visible, so
            even a model that never saw a class may draw it recognisably; 0.75 hides most of it).
        judge_epochs: training epochs of the judging classifier.
        seed: seeds the split, the training runs and unlearning.

    Example:
        >>> UnlearnStudyConfig(forget=(3,)).forget
        (3,)
    """

    forget: tuple[int, ...] = (0, 1)
    alpha: float = 0.3
    alphas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    ascent_steps: tuple[int, ...] = (10, 30, 100, 300)
    unlearn: UnlearnConfig = dataclasses.field(default_factory=UnlearnConfig)
    epochs: int = 40
    width: int = 64
    mask_ratio: float = 0.5
    judge_epochs: int = 30
    seed: int = 0

    def validate(self) -> None:
        if not self.forget:
            raise ConfigError("forget is empty; name at least one digit class to forget, e.g. forget=(0,)")
        bad = [c for c in self.forget if not 0 <= c <= 9]
        if bad:
            raise ConfigError(f"forget classes must be digits 0-9, got {bad}")
        if len(set(self.forget)) == 10:
            raise ConfigError("forgetting all 10 classes leaves nothing to retain; keep at least one class")
        check_range("alpha", self.alpha, 0.0, hint="use alpha=0.3")
        check_range("epochs", self.epochs, 1, hint="use epochs=40")
        check_width(self.width)
        check_mask_ratio(self.mask_ratio)
        if self.unlearn.mask_ratio not in (self.mask_ratio, UnlearnConfig.mask_ratio):
            raise ConfigError(f"unlearn.mask_ratio={self.unlearn.mask_ratio} differs from the study's mask_ratio="
                              f"{self.mask_ratio}; set mask_ratio on the study only (it sets the unlearning's)")
        check_range("judge_epochs", self.judge_epochs, 1, hint="use judge_epochs=30")


def _row(name: str, model, classifier, sets, *, seconds: float | None, steps: int | None,
         mask_ratio: float) -> dict[str, Any]:  # fmt: skip
    row: dict[str, Any] = {"method": name, "seconds": seconds, "steps": steps}
    for part, (x, y) in sets.items():
        for k, v in score_set(model, classifier, x, y, mask_ratio=mask_ratio).to_dict().items():
            row[f"{part}_{k}"] = v
    return row


def run_study(config: UnlearnStudyConfig, *, out_dir: str | os.PathLike | None = None) -> Report:
    """Runs the study for one seed and returns its report (rows per method, the trade-off sweeps, the cost
    against retraining); with ``out_dir`` also writes ``report.json``, ``grids.png`` and ``tradeoff.png``."""
    if out_dir is None:
        return _study(config, None)
    with claim_run_dir(out_dir, command="unlearn", identity=run_identity(config=config.to_dict())):
        return _study(config, out_dir)


def _study(config: UnlearnStudyConfig, out_dir: str | os.PathLike | None) -> Report:
    seed = config.seed
    ratio = config.mask_ratio
    score = functools.partial(_row, mask_ratio=ratio)
    splits = digit_splits(seed)
    forget = config.forget
    retain_classes = tuple(c for c in range(10) if c not in forget)
    test_x, test_y = splits.test
    hit = torch.isin(test_y, torch.tensor(forget))
    sets = {"forget": (test_x[hit], test_y[hit]), "retain": (test_x[~hit], test_y[~hit])}
    classifier = train_classifier(*splits.train, epochs=config.judge_epochs, seed=seed)
    with torch.no_grad():
        judge = {k: float((classifier(x).argmax(1) == y).float().mean()) for k, (x, y) in sets.items()}
    t0 = time.perf_counter()
    original, steps = train_autoencoder(splits.train[0], epochs=config.epochs, width=config.width,
                                        mask_ratio=ratio, seed=seed)  # fmt: skip
    train_s = time.perf_counter() - t0
    rows = [score("original", original, classifier, sets, seconds=train_s, steps=steps)]
    t0 = time.perf_counter()
    scratch, scratch_steps = train_autoencoder(splits.part("train", retain_classes), epochs=config.epochs,
                                               width=config.width, mask_ratio=ratio, seed=seed)  # fmt: skip
    rows.append(score("retrain from scratch without the forget set", scratch, classifier, sets,
                       seconds=time.perf_counter() - t0, steps=scratch_steps))  # fmt: skip
    forget_x = splits.part("train", forget)
    retain_real = splits.part("train", retain_classes)
    retain_proxy = splits.part("proxy", retain_classes)
    base = config.unlearn.replace(seed=seed, mask_ratio=ratio)
    runs = {
        "noise-target (real retain)": (base.replace(method="noise-target", alpha=config.alpha), retain_real),
        "noise-target (proxy retain)": (base.replace(method="noise-target", alpha=config.alpha), retain_proxy),
        "retain-finetune": (base.replace(method="retain-finetune"), retain_real),
        "gradient-ascent": (base.replace(method="gradient-ascent"), retain_real),
        "random-target": (base.replace(method="random-target"), retain_real),
    }
    models = {"original": original}
    for name, (cfg, retain) in runs.items():
        m = copy.deepcopy(original)
        report = unlearn_(m, cfg, forget=forget_x, retain=retain)
        rows.append(score(name, m, classifier, sets, seconds=report.details["seconds"], steps=cfg.steps))
        models[name] = m
    sweep = []
    for alpha in config.alphas:
        m = copy.deepcopy(original)
        unlearn_(m, base.replace(method="noise-target", alpha=alpha), forget=forget_x, retain=retain_real)
        row = score("noise-target", m, classifier, sets, seconds=None, steps=base.steps)
        sweep.append({**row, "alpha": alpha})
    for n in config.ascent_steps:
        m = copy.deepcopy(original)
        unlearn_(m, base.replace(method="gradient-ascent", steps=n), forget=forget_x, retain=retain_real)
        sweep.append({**score("gradient-ascent", m, classifier, sets, seconds=None, steps=n), "ascent_steps": n})
    details = {
        "forget_classes": list(forget),
        "judge_accuracy_on_real_images": judge,
        "rows": rows,
        "tradeoff": sweep,
        "cost_vs_retraining": rows[2]["seconds"] / rows[1]["seconds"] if rows[1]["seconds"] else None,
        "steps_vs_retraining": base.steps / max(scratch_steps, 1),
    }
    report = Report(command="unlearn", model="inpainting autoencoder", dataset="digits", config=config.to_dict(),
                    details=details)  # fmt: skip
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        from effdl.unlearn.plots import plot_grids, plot_tradeoff

        plot_grids({k: models[k] for k in ("original", "noise-target (real retain)", "gradient-ascent")},
                   sets, out / "grids.png", functools.partial(reconstruct, mask_ratio=ratio))  # fmt: skip
        plot_tradeoff(rows[0], sweep, out / "tradeoff.png")
        report.artifacts = {"grids": "grids.png", "tradeoff": "tradeoff.png"}
        report.write(out)
    return report


def rows_table(rows: list[dict[str, Any]]) -> str:
    """The per-method table of a study: classifier accuracy, reconstruction error and Fréchet distance on the
    forget and retain classes, and the time taken."""
    from effdl.core.table import format_table

    def pct(v):
        return f"{100 * v:.1f}%"

    body = [[r["method"], pct(r["forget_accuracy"]), pct(r["retain_accuracy"]), f"{r['forget_mse']:.4f}",
             f"{r['retain_mse']:.4f}", f"{r['forget_fid']:.1f}", f"{r['retain_fid']:.1f}",
             "-" if r["seconds"] is None else f"{r['seconds']:.1f} s"] for r in rows]  # fmt: skip
    return format_table(body, ["method", "forget acc", "retain acc", "forget MSE", "retain MSE", "forget FD",
                               "retain FD", "time"], align="lrrrrrrr")  # fmt: skip
