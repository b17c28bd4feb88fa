"""Small-batch vs large-batch minima, after Li et al., "Visualizing the Loss Landscape of Neural Nets" (NeurIPS
2018), sections 4-5, on MNIST-1D with the cnn1d reference model.

Four models are trained with the same recipe (SGD, momentum 0.9, lr 0.1, cosine, the same number of epochs) with
batch 64 or 2000 and weight decay 0 or 5e-4. For each one:
- 1D loss curves along 3 filter-normalized random directions (the paper's method) and along 3 *unnormalized*
  Gaussian directions (identical for all four models), with the curvature at the weights (parabola fit);
- the top Hessian eigenvalue (Lanczos), the Hessian trace (Hutchinson) and epsilon-sharpness (Keskar et al.);
- the 1D linear interpolation between the small- and large-batch solutions (the paper's Figure 2 plot);
- 2D filter-normalized contours (21 x 21) of the two weight-decay-0 models, the first one timed;
- the scale argument of the paper's section 4: the large-batch model with every conv weight that feeds a
  BatchNorm multiplied by 10 computes the same function; its filter-normalized curvature stays, while along
  unnormalized directions it now looks flatter than the small-batch model.

Run: .venv/bin/python benchmarks/landscape_batch_size.py   (about 8 minutes on 2 cores)
Writes benchmarks/results/landscape_batch_size.{md,json} and the figures landscape_batch_size_*.png.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import time

import numpy as np
import torch

from common import RESULTS, write_results
from effdl.analysis import (
    LandscapeConfig,
    SharpnessConfig,
    curve_curvature,
    interpolate_models,
    loss_surface,
    sharpness_report,
)
from effdl.core.plot import saved_figure
from effdl.core.table import format_table
from effdl.data import get_dataset
from effdl.models import create_model
from effdl.train import TrainConfig, Trainer, evaluate

EPOCHS = 60
BATCHES = (64, 2000)
DECAYS = (0.0, 5e-4, 5e-3)
SCALE = 10.0  # conv weights before BatchNorm multiplied by this: the same function, other weight scale
DIRECTION_SEEDS = (0, 1, 2)
FILTER_1D = LandscapeConfig(dims=1, resolution=41, xrange=(-1.0, 1.0), progress=False)
# unnormalized N(0, I) directions: one entry-wise scale for all models, so the step is the same vector everywhere
RAW_1D = LandscapeConfig(dims=1, resolution=41, xrange=(-0.05, 0.05), norm="none", progress=False)
SHARPNESS = SharpnessConfig(top_k=1, iterations=20, trace_samples=8, epsilon=1e-3, max_examples=2000)


def train(batch: int, decay: float, data) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("cnn1d")
    cfg = TrainConfig(epochs=EPOCHS, batch_size=batch, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=decay,
                      schedule="cosine", eval_every=EPOCHS, progress=False, seed=0)  # fmt: skip
    Trainer(model, cfg).fit(data.train)
    return model.eval()


def curves(model, data, base: LandscapeConfig) -> tuple[list, float]:
    surfaces, curv = [], []
    for seed in DIRECTION_SEEDS:
        s = loss_surface(model, data, base.replace(seed=seed))
        surfaces.append(s)
        span = base.xrange[1] - base.xrange[0]
        curv.append(curve_curvature(s, "train/loss", radius=span / 8))
    return surfaces, statistics.median(curv)


def rescaled(model: torch.nn.Module, factor: float) -> torch.nn.Module:
    """A copy whose convolutions followed by BatchNorm have weights x factor: BN undoes the scale, so the function
    is unchanged (up to BN's epsilon)."""
    out = copy.deepcopy(model)
    modules = list(out.modules())
    with torch.no_grad():
        for conv, nxt in itertools.pairwise(modules):
            if isinstance(conv, torch.nn.Conv1d) and isinstance(nxt, torch.nn.BatchNorm1d):
                conv.weight.mul_(factor)
                nxt.running_mean.mul_(factor)
                nxt.running_var.mul_(factor**2)
    return out


def endpoint_curvature(s, at: float, radius: float = 0.1) -> float:
    x = s.axes[0]
    mask = np.abs(x - at) <= radius
    return float(2 * np.polyfit(x[mask] - at, s.values["train/loss"][mask], 2)[0])


def main() -> None:
    data = get_dataset("mnist1d")
    models, records, filter_curves, raw_curves = {}, [], {}, {}
    for decay in DECAYS:
        for batch in BATCHES:
            t0 = time.perf_counter()
            model = train(batch, decay, data)
            models[(batch, decay)] = model
            rec = {"batch": batch, "weight_decay": decay, "train_s": time.perf_counter() - t0}
            rec["train_acc"] = evaluate(model, data.train)["accuracy"]
            rec["test_acc"] = evaluate(model, data.test)["accuracy"]
            filter_curves[(batch, decay)], rec["filter_curvature"] = curves(model, data, FILTER_1D)
            raw_curves[(batch, decay)], rec["raw_curvature"] = curves(model, data, RAW_1D)
            d = sharpness_report(model, data, SHARPNESS).details
            rec.update(lambda_max=d["lambda_max"], hessian_trace=d["hessian_trace"],
                       epsilon_sharpness=d["epsilon_sharpness"], weight_norm=d["weight_norm"])  # fmt: skip
            records.append(rec)
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}, flush=True)

    scaled_model = rescaled(models[(BATCHES[1], 0.0)], SCALE)
    scaled = {"batch": f"{BATCHES[1]}, conv x{SCALE:g}", "weight_decay": 0.0, "train_s": 0.0}
    scaled["train_acc"] = evaluate(scaled_model, data.train)["accuracy"]
    scaled["test_acc"] = evaluate(scaled_model, data.test)["accuracy"]
    _, scaled["filter_curvature"] = curves(scaled_model, data, FILTER_1D)
    _, scaled["raw_curvature"] = curves(scaled_model, data, RAW_1D)
    d = sharpness_report(scaled_model, data, SHARPNESS).details
    scaled.update(lambda_max=d["lambda_max"], hessian_trace=d["hessian_trace"], interp_curvature=float("nan"),
                  epsilon_sharpness=d["epsilon_sharpness"], weight_norm=d["weight_norm"])  # fmt: skip
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in scaled.items()}, flush=True)

    interp = {}
    for decay in DECAYS:
        small, large = models[(BATCHES[0], decay)], models[(BATCHES[1], decay)]
        s = interpolate_models(small, large, data, LandscapeConfig(dims=1, resolution=41, xrange=(-0.5, 1.5),
                                                                   progress=False))  # fmt: skip
        interp[decay] = s
        for rec in records:
            if rec["weight_decay"] == decay:
                rec["interp_curvature"] = endpoint_curvature(s, 0.0 if rec["batch"] == BATCHES[0] else 1.0)

    timing = {}
    contours = {}
    for batch in BATCHES:
        t0 = time.perf_counter()
        contours[batch] = loss_surface(models[(batch, 0.0)], data, LandscapeConfig(dims=2, resolution=21,
                                                                                   progress=False))  # fmt: skip
        timing[batch] = time.perf_counter() - t0
    plot(filter_curves, raw_curves, interp, contours)

    def fmt(rec):
        return [rec["batch"], f"{rec['weight_decay']:g}", f"{100 * rec['train_acc']:.2f}%",
                f"{100 * rec['test_acc']:.2f}%", f"{rec['weight_norm']:.1f}", f"{rec['filter_curvature']:.3g}",
                f"{rec['lambda_max']:.3g}", f"{rec['hessian_trace']:.3g}", f"{rec['epsilon_sharpness']:.3g}",
                f"{rec['raw_curvature']:.3g}",
                "-" if np.isnan(rec["interp_curvature"]) else f"{rec['interp_curvature']:.3g}"]  # fmt: skip

    headers = ["batch", "weight decay", "train acc", "test acc", "weight norm", "curvature (filter-norm.)",
               "top eigenvalue", "Hessian trace", "eps-sharpness", "curvature (unnormalized)",
               "curvature (interpolation)"]  # fmt: skip
    records.append(scaled)
    table = format_table([fmt(r) for r in records], headers)
    claims = []
    for decay in DECAYS:
        s, big = (next(r for r in records if r["batch"] == b and r["weight_decay"] == decay) for b in BATCHES)
        claims.append(
            f"- weight decay {decay:g}: large batch sharper with filter normalization: "
            f"{big['filter_curvature'] > s['filter_curvature']} (curvature {big['filter_curvature']:.3g} vs "
            f"{s['filter_curvature']:.3g}); top eigenvalue larger: {big['lambda_max'] > s['lambda_max']}; "
            f"generalizes worse: {big['test_acc'] < s['test_acc']} ({100 * big['test_acc']:.2f}% vs "
            f"{100 * s['test_acc']:.2f}%); sharper along unnormalized directions: "
            f"{big['raw_curvature'] > s['raw_curvature']}; sharper end of the interpolation plot: "
            f"{big['interp_curvature'] > s['interp_curvature']}"
        )
    plain = next(r for r in records if r["batch"] == BATCHES[1] and r["weight_decay"] == 0.0)
    claims.append(
        f"- scale (weight decay 0): the large-batch model with its BN-fed conv weights x{SCALE:g} computes the same "
        f"function (test accuracy {100 * scaled['test_acc']:.2f}% vs {100 * plain['test_acc']:.2f}%); its "
        f"filter-normalized curvature stays ({scaled['filter_curvature']:.3g} vs {plain['filter_curvature']:.3g}), "
        f"while the scale-dependent measures drop: unnormalized curvature {plain['raw_curvature']:.3g} -> "
        f"{scaled['raw_curvature']:.3g}, top eigenvalue {plain['lambda_max']:.3g} -> {scaled['lambda_max']:.3g}, "
        f"epsilon-sharpness {plain['epsilon_sharpness']:.3g} -> {scaled['epsilon_sharpness']:.3g}"
    )
    notes = [
        f"cnn1d on MNIST-1D (4000 train / 1000 test), SGD momentum 0.9, lr 0.1, cosine, {EPOCHS} epochs for every "
        f"model; batch {BATCHES[0]} vs {BATCHES[1]}. Curvature: second derivative at the weights of a parabola "
        "fitted to the train loss within 1/8 of the plotted span, median over 3 directions. Filter-normalized "
        f"directions span [-1, 1]; unnormalized N(0, I) directions span {list(RAW_1D.xrange)} (the same vectors "
        "for all four models). Interpolation curvature: at each model's end of the small-to-large line. Hessian "
        "on 2000 training examples (Lanczos, 20 steps); epsilon-sharpness with epsilon 1e-3.",
        "",
        "What holds here:",
        *claims,
        "",
        f"A 21 x 21 filter-normalized surface (441 points, loss and accuracy on 4000 train + 1000 test examples) "
        f"took {timing[BATCHES[0]]:.1f} s and {timing[BATCHES[1]]:.1f} s (target: under 120 s).",
        "",
        "Figures: landscape_batch_size_filter.png (1D, filter-normalized), landscape_batch_size_unnormalized.png, "
        "landscape_batch_size_interpolation.png, landscape_batch_size_2d.png.",
        "",
    ]
    records.append({"surface_21x21_seconds": {str(k): v for k, v in timing.items()}})
    print(write_results("landscape_batch_size", "Loss landscape: small vs large batch (Li et al. 2018)", notes,
                        table, records))  # fmt: skip


def plot(filter_curves, raw_curves, interp, contours) -> None:
    for name, group, xlabel in (("filter", filter_curves, "filter-normalized direction"),
                                ("unnormalized", raw_curves, "unnormalized Gaussian direction")):  # fmt: skip
        with saved_figure(
            RESULTS / f"landscape_batch_size_{name}.png", size=(5 * len(DECAYS), 4), ncols=len(DECAYS)
        ) as (_, axes):
            for ax, decay in zip(axes, DECAYS, strict=True):
                for i, batch in enumerate(BATCHES):
                    s = group[(batch, decay)][0]
                    ax.plot(s.axes[0], s.values["train/loss"], f"C{i}-", label=f"batch {batch} train")
                    ax.plot(s.axes[0], s.values["test/loss"], f"C{i}--", label=f"batch {batch} test")
                ax.set_ylim(0, 5)  # linear, as in the paper's figures
                ax.set_title(f"weight decay {decay:g}")
                ax.set_xlabel(xlabel)
                ax.set_ylabel("loss")
                ax.legend(fontsize=8)
    with saved_figure(
        RESULTS / "landscape_batch_size_interpolation.png", size=(5 * len(DECAYS), 4), ncols=len(DECAYS)
    ) as (_, axes):
        for ax, decay in zip(axes, DECAYS, strict=True):
            s = interp[decay]
            ax.plot(s.axes[0], s.values["train/loss"], "C0-", label="train loss")
            ax.plot(s.axes[0], s.values["test/loss"], "C0--", label="test loss")
            ax.set_yscale("log")
            acc = ax.twinx()
            acc.plot(s.axes[0], 100 * s.values["train/accuracy"], "C1-", label="train accuracy")
            acc.plot(s.axes[0], 100 * s.values["test/accuracy"], "C1--", label="test accuracy")
            acc.set_ylim(0, 100)
            ax.set_title(f"batch {BATCHES[0]} (0) to batch {BATCHES[1]} (1), weight decay {decay:g}")
            ax.set_xlabel("alpha")
            ax.set_ylabel("loss")
            acc.set_ylabel("accuracy (%)")
    with saved_figure(RESULTS / "landscape_batch_size_2d.png", size=(10, 4.5), ncols=2) as (_fig, axes):
        for ax, batch in zip(axes, BATCHES, strict=True):
            s = contours[batch]
            xx, yy = np.meshgrid(s.axes[0], s.axes[1], indexing="ij")
            z = s.values["train/loss"]
            cs = ax.contour(xx, yy, z, levels=np.linspace(z.min(), z.min() + 5, 26), cmap="viridis")
            ax.clabel(cs, cs.levels[::5], inline=True, fontsize=7, fmt="%.1f")
            ax.set_title(f"batch {batch}, weight decay 0: train loss")
            ax.set_xlabel("direction 1")
            ax.set_ylabel("direction 2")


if __name__ == "__main__":
    main()
