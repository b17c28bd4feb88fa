"""``effdl adaptive``: input-adaptive precision (VideoIQ): train the any-precision network, train the policy that
picks each frame's bit width, evaluate it against the baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.adaptive import AnyPrecisionConfig
from effdl.adaptive.policy import PolicyConfig
from effdl.adaptive.study import (
    AdaptiveStudyConfig,
    evaluate_stage,
    load_policy,
    markdown,
    plot_tradeoff,
    run_study,
    train_any_precision,
    train_policy_stage,
)
from effdl.core.errors import ConfigError
from effdl.core.io import atomic_write_json, atomic_write_text
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.models import load_model

__all__ = ["add_adaptive"]


def add_adaptive(sub) -> None:
    """Registers the ``adaptive`` sub-command and its stages."""
    p = sub.add_parser(
        "adaptive",
        help="input-adaptive precision: one network at several bit widths and a policy that picks the width per frame",
        description=(
            "VideoIQ (Sun et al., ICCV 2021) on the embedded MNIST-1D video dataset (clips whose frames differ in "
            "contrast): `run` does everything into one folder (resumable); `train`, `policy` and `eval` are its "
            "stages. The report compares the policy with every width fixed, a random policy and a uniform mix at "
            "the same bit operations, and the oracle."
        ),
    )
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    run = stages.add_parser("run", help="train the network and the policy, evaluate, report")
    train = stages.add_parser("train", help="train the any-precision network (and each width alone)")
    policy = stages.add_parser("policy", help="train the policy for a trained any-precision network")
    ev = stages.add_parser("eval", help="evaluate a policy against the baselines")
    for s in (run, train, policy, ev):
        s.add_argument("--out", required=True, help="output folder")
        s.add_argument("--frames", type=int, default=4, help="frames per clip (default 4)")
        s.add_argument("--seed", type=int, default=0, help="seed (data, training, policy)")
    for s in (run, train):
        s.add_argument("--widths", default="8,4,2", help="bit widths, comma-separated (default 8,4,2)")
        s.add_argument("--end-bits", type=int, default=None, help="keep the first and last layers at this width")
        s.add_argument("--epochs", type=int, default=40, help="training epochs of the network (default 40)")
        s.add_argument("--no-alone", action="store_true", help="do not train each width alone as a reference")
        s.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
        s.add_argument("--no-progress", action="store_true", help="no progress bars")
    for s in (run, policy):
        s.add_argument("--cost", type=float, default=0.2, help="weight of the bit operations in the policy's loss")
        s.add_argument("--budget", type=float, default=None,
                       help="aim at this share of the highest width's bit operations (e.g. 0.5) instead of a fixed "
                            "--cost weight")  # fmt: skip
        s.add_argument("--policy-epochs", type=int, default=150, help="training epochs of the policy (default 150)")
    for s in (policy, ev):
        s.add_argument("--model", required=True, help="the any-precision model (model.safetensors of `train`)")
    ev.add_argument("--policy", required=True, help="the policy (policy.safetensors of `policy`)")
    for s in (run, train, policy, ev):
        s.set_defaults(func=_adaptive)


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"--widths takes bit widths like 8,4,2, got {text!r}") from None


def _config(args: argparse.Namespace) -> AdaptiveStudyConfig:
    anyprec = AnyPrecisionConfig(widths=_widths(getattr(args, "widths", "8,4,2")),
                                 end_bits=getattr(args, "end_bits", None))  # fmt: skip
    policy = PolicyConfig(cost=getattr(args, "cost", 0.2), budget=getattr(args, "budget", None),
                          epochs=getattr(args, "policy_epochs", 150), seed=args.seed)  # fmt: skip
    alone = not getattr(args, "no_alone", False)
    return AdaptiveStudyConfig(anyprec=anyprec, policy=policy, frames=args.frames, seed=args.seed,
                               epochs=getattr(args, "epochs", 40), alone=alone)  # fmt: skip


def _adaptive(args: argparse.Namespace) -> int:
    config = _config(args)
    out = Path(args.out)
    progress = not getattr(args, "no_progress", False)
    if args.stage == "run":
        report = run_study(config, out_dir=out, resume=args.resume, progress=progress)
        print(markdown(report.details))
        print(f"report: {out / 'report.json'}\nplot: {out / 'tradeoff.png'}")
        return 0
    identity = run_identity(config=config.to_dict(), model=getattr(args, "model", None))
    with claim_run_dir(out, command=f"adaptive {args.stage}", identity=identity,
                       resume=getattr(args, "resume", False)):  # fmt: skip
        if args.stage == "train":
            _, accuracy = train_any_precision(config, out, resume=args.resume, progress=progress)
            saved = {k: {str(b): v for b, v in d.items()} for k, d in accuracy.items()}
            atomic_write_json(out / "accuracy.json", saved)
            for bits, acc in accuracy["any_precision"].items():
                alone = accuracy["alone"].get(bits)
                print(f"{bits}-bit: frame accuracy {100 * acc:.2f}%" +
                      ("" if alone is None else f" (trained alone: {100 * alone:.2f}%)"))  # fmt: skip
            print(f"model: {out / 'model.safetensors'}")
            return 0
        model = load_model(args.model)
        if args.stage == "policy":
            _, choices, history = train_policy_stage(model, config, out)
            atomic_write_json(out / "policy_history.json", history)
            last = history[-1]
            print(f"policy over {choices} (0 = skip): validation clip accuracy {100 * last['accuracy']:.2f}% at "
                  f"{100 * last['cost']:.1f}% of the highest width's bit operations (in training, sampled "
                  "choices)")  # fmt: skip
            print(f"policy: {out / 'policy.safetensors'}")
            return 0
        policy, choices = load_policy(args.policy)
        details = evaluate_stage(model, policy, choices, config)
        atomic_write_json(out / "evaluation.json", details)
        plot_tradeoff(details, out / "tradeoff.png")
        text = markdown(details)
        atomic_write_text(out / "report.md", text)
        print(text)
        print(f"results: {out / 'evaluation.json'}\nplot: {out / 'tradeoff.png'}")
        return 0
