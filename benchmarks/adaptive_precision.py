"""Input-adaptive precision (VideoIQ, Sun et al., ICCV 2021) on the embedded MNIST-1D video dataset: clips of 4
frames of one class whose frames differ in contrast (some clean, some nearly lost in a fixed noise floor).

For each of 3 seeds: the cnn1d any-precision network at 8/4/2 bits (one set of weights, every layer switching)
trained on the train clips' frames; the same network trained alone at each width (the LSQ reference of each width);
the policy (pooled frame and energy -> GRU -> {8, 4, 2 bits, skip}) trained on the validation clips with the network
frozen; on the test clips the policy against every width fixed, a random policy with the policy's own histogram, a
uniform mix of two widths at the policy's bit operations, the oracle (each frame at the cheapest width that gets
it right, skipped when none does), and difficulty bands (bits by each frame's true difficulty, band edges chosen on
the validation clips within the policy's bit operations: what spending bits by difficulty can reach). Medians over
the seeds; BOPs relative to every frame at 8 bits, the policy's own (float, 32 x 32 bits per MAC) included.

Run: .venv/bin/python benchmarks/adaptive_precision.py   (about 20 minutes)
Writes benchmarks/results/adaptive_precision.{md,json} and the trade-off plot of seed 0.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from common import RESULTS, write_results
from effdl.adaptive.policy import choice_costs, difficulty_bands, frame_outputs
from effdl.adaptive.study import AdaptiveStudyConfig, markdown, run_study
from effdl.models import load_model

SEEDS = (0, 1, 2)


def _median(values) -> float:
    return statistics.median(float(v) for v in values)


def bands_at_half(config: AdaptiveStudyConfig, run: Path, choices: list[int]) -> dict:
    """Difficulty bands (bits by each frame's true difficulty) at the accuracy bar's budget: half of all-8-bit's
    BOPs. Tells whether any policy that spends bits by difficulty could meet that bar on this task."""
    data = config.data()
    model = load_model(run / "model.safetensors")
    costs = choice_costs(model, data.input_shape, choices)
    val = (frame_outputs(model, data.val.x), data.val.y, data.val.difficulty)
    test = (frame_outputs(model, data.test.x), data.test.y, data.test.difficulty)
    row = difficulty_bands(val, test, costs=costs, choices=choices, budget=0.5).to_dict()
    row["name"] = "difficulty bands at 50% BOPs (sees true difficulty)"
    return row


def main() -> None:
    work = Path(tempfile.mkdtemp())
    details = []
    for seed in SEEDS:
        config = AdaptiveStudyConfig(seed=seed)
        report = run_study(config, out_dir=work / f"seed{seed}")
        report.details["baselines"].append(bands_at_half(config, work / f"seed{seed}", report.details["choices"]))
        details.append(report.details)
        print(f"seed {seed}:\n{markdown(report.details)}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(work / "seed0" / "tradeoff.png", RESULTS / "adaptive_precision_tradeoff.png")

    def row(d, name):
        return next(r for r in [d["policy"], *d["baselines"]] if r["name"].startswith(name))

    names = [r["name"].split(" (")[0] for r in [details[0]["policy"], *details[0]["baselines"]]]
    table_rows = []
    for name in names:
        rows = [row(d, name) for d in details]
        sp = [r["spearman"].get("frames_not_skipped") for r in rows if r.get("spearman")]
        sp_all = [r["spearman"].get("all_frames") for r in rows if r.get("spearman")]
        table_rows.append((name, _median(r["accuracy"] for r in rows), _median(r["relative_bops"] for r in rows),
                           [r["accuracy"] for r in rows], sp, sp_all))  # fmt: skip
    widths = list(details[0]["frame_accuracy"]["any_precision"])
    gaps = {b: [d["frame_accuracy"]["alone"][b] - d["frame_accuracy"]["any_precision"][b] for d in details]
            for b in widths}  # fmt: skip
    by = {r[0]: r for r in table_rows}
    pol, top, rnd = by["adaptive policy"], by[f"all {widths[0]}-bit"], by["random policy"]
    sp_nonskip = [v for v in pol[4] if v is not None]
    sp_all = [v for v in pol[5] if v is not None]
    checks = [
        ("each width within 1 point of the network trained alone at it (frames, median)",
         ", ".join(f"{b}-bit {100 * _median(-g for g in gaps[b]):+.3f}" for b in widths),
         all(_median(gaps[b]) <= 0.01 for b in widths)),
        ("policy >= all-8-bit - 0.5 point at <= 50% of its BOPs",
         f"{100 * pol[1]:.2f}% vs {100 * top[1]:.2f}% at {100 * pol[2]:.1f}% BOPs",
         pol[1] >= top[1] - 0.005 and pol[2] <= 0.5),
        ("policy >= random policy + 1 point at the same BOPs", f"{100 * pol[1]:.2f}% vs {100 * rnd[1]:.2f}%",
         pol[1] >= rnd[1] + 0.01),
        ("Spearman(difficulty, chosen bits) > 0.3",
         f"all frames {_median(sp_all) if sp_all else float('nan'):+.2f}, frames not skipped "
         f"{_median(sp_nonskip) if sp_nonskip else float('nan'):+.2f}",
         bool(sp_all) and _median(sp_all) > 0.3),
    ]  # fmt: skip
    def spear(values):
        values = [v for v in values if v is not None]
        return f"{_median(values):+.2f}" if values else "-"

    lines = ["| policy | clip accuracy (median) | per seed | BOPs (median) | Spearman all / not skipped (median) |",
             "|:--|--:|:--|--:|--:|"]  # fmt: skip
    lines += [f"| {n} | {100 * a:.2f}% | {', '.join(f'{100 * v:.1f}' for v in per)} | {100 * b:.1f}% | "
              f"{spear(sa)} / {spear(sp)} |" for n, a, b, per, sp, sa in table_rows]  # fmt: skip
    width_lines = ["| width | any-precision (median) | trained alone (median) |", "|:--|--:|--:|"]
    for b in widths:
        anyp = _median(d["frame_accuracy"]["any_precision"][b] for d in details)
        alone = _median(d["frame_accuracy"]["alone"][b] for d in details)
        width_lines.append(f"| {b}-bit | {100 * anyp:.2f}% | {100 * alone:.2f}% |")
    check_lines = ["| bar | measured | met |", "|:--|:--|:--|"]
    check_lines += [f"| {a} | {b} | {'yes' if c else 'no'} |" for a, b, c in checks]
    half = by["difficulty bands at 50% BOPs"]
    check_lines += ["", "Reference for the accuracy bar: difficulty bands within 50% of the BOPs reach "
                    f"{100 * half[1]:.2f}% at {100 * half[2]:.1f}% (all 8-bit {100 * top[1]:.2f}%)."]  # fmt: skip
    hist = details[0]["policy"]["histogram"]
    notes = [
        f"Median of seeds {', '.join(map(str, SEEDS))}; clips of 4 frames, 4000 train / 1000 validation / 1000 "
        "test. Frame accuracy: every frame of the test clips classified alone.",
        "Policy histogram (seed 0, share of frames at 8 / 4 / 2 bits / skipped): "
        + " / ".join(f"{100 * v:.0f}%" for v in hist.values()) + f"; the policy's own cost "
        f"{100 * details[0]['policy_relative_bops']:.1f}% of a frame at 8 bits. Plot: adaptive_precision_tradeoff.png.",
        "'difficulty bands' sees each frame's true difficulty, which the policy does not: the easiest frames at 2",
        "bits, harder bands one width up, the hardest skipped, band edges chosen on the validation clips as the most",
        "accurate within the policy's recognition BOPs (first row) or within half of all-8-bit's (the accuracy bar's",
        "budget, second row). It shows what spending bits by difficulty can reach here.",
        "Spearman: frame difficulty against chosen bits (skip = 0), over all frames and over the frames that run.",
        "",
    ]  # fmt: skip
    table = "\n".join(["## Frame accuracy per width", "", *width_lines, "", "## Clips (test)", "", *lines, "",
                       "## Acceptance bars", "", *check_lines])  # fmt: skip
    text = write_results("adaptive_precision", "Input-adaptive precision on MNIST-1D clips (VideoIQ)", notes, table,
                         [{"seed": s, **d} for s, d in zip(SEEDS, details, strict=True)])  # fmt: skip
    print(text)


if __name__ == "__main__":
    main()
