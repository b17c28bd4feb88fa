"""``effdl unlearn``: make the inpainting model forget digit classes (Li et al. 2024) and compare with baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.core.errors import ConfigError
from effdl.unlearn import UnlearnConfig, UnlearnStudyConfig, rows_table, run_study

__all__ = ["add_unlearn"]


def add_unlearn(sub) -> None:
    """Registers the ``unlearn`` sub-command."""
    p = sub.add_parser(
        "unlearn",
        help="machine unlearning for an image-to-image model (forget digit classes), with baselines",
        description=(
            "Trains an inpainting model on scikit-learn's digits (half of each image hidden) and a classifier that "
            "judges its drawings, then fine-tunes only the encoder so the forget classes map to what the original "
            "encoder makes of noise while the others keep their codes (Li et al., ICLR 2024), with the real and a "
            "proxy retain set; baselines: retain-only fine-tuning, gradient ascent, random targets, and retraining "
            "from scratch. Prints accuracy of the judge, reconstruction error and Fréchet distance per set; writes "
            "report.json, grids.png and tradeoff.png."
        ),
    )
    p.add_argument("--forget", default="0,1", help="digit classes to forget, comma-separated (default 0,1)")
    p.add_argument("--alpha", type=float, default=0.3, help="weight of the forget term (default 0.3)")
    p.add_argument("--steps", type=int, default=300, help="unlearning steps (default 300)")
    p.add_argument("--lr", type=float, default=1e-3, help="unlearning learning rate (default 1e-3)")
    p.add_argument("--retain-batch-size", type=int, default=None,
                   help="retain images per unlearning step (default: as many as forget images, 64)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="unlearning learning-rate schedule (default constant)")
    p.add_argument("--epochs", type=int, default=40, help="training epochs of the inpainting model (default 40)")
    p.add_argument("--width", type=int, default=64, help="channels of the inpainting encoder's output (default 64)")
    p.add_argument("--mask-ratio", type=float, default=0.5,
                   help="share of 2x2 patches hidden from the inpainting model (default 0.5; 0.75 hides most of a "
                        "digit, so a model that never saw a class cannot draw it from what is left)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed (split, training, unlearning)")
    p.add_argument("--out", default="runs/unlearn", help="output folder (default runs/unlearn)")
    p.set_defaults(func=_unlearn)


def _classes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"--forget takes digit classes like 0,1, got {text!r}") from None


def _unlearn(args: argparse.Namespace) -> int:
    config = UnlearnStudyConfig(
        forget=_classes(args.forget), alpha=args.alpha, epochs=args.epochs, width=args.width, seed=args.seed,
        mask_ratio=args.mask_ratio,
        unlearn=UnlearnConfig(steps=args.steps, lr=args.lr, retain_batch_size=args.retain_batch_size,
                              schedule=args.schedule),
    )  # fmt: skip
    report = run_study(config, out_dir=args.out)
    d = report.details
    judge = d["judge_accuracy_on_real_images"]
    print(f"forget classes {d['forget_classes']}; the judge on real test images: forget {100 * judge['forget']:.1f}%, "
          f"retain {100 * judge['retain']:.1f}%\n")  # fmt: skip
    print(rows_table(d["rows"]))
    print(f"\nunlearning took {d['cost_vs_retraining']:.1%} of the time of retraining from scratch "
          f"({d['steps_vs_retraining']:.1%} of its steps)")  # fmt: skip
    out = Path(args.out)
    print(f"report: {out / 'report.json'}\npictures: {out / 'grids.png'}, {out / 'tradeoff.png'}")
    return 0
