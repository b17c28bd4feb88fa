"""``effdl fewshot train|eval``: meta-learners on the embedded glyph dataset, judged on held-out alphabets."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import add_log_flags, positive_int
from effdl.core.errors import ConfigError
from effdl.core.io import atomic_write_json
from effdl.core.table import format_table
from effdl.data import load_glyphs
from effdl.fewshot import HEADS, FewShotConfig, evaluate_episodes, load_meta_learner, save_meta_learner
from effdl.fewshot import train_meta_learner as train_learner

__all__ = ["add_fewshot"]


def add_fewshot(sub) -> None:
    """Registers ``fewshot`` and its sub-commands."""
    p = sub.add_parser(
        "fewshot",
        help="few-shot learning: meta-learners (ProtoNet, R2-D2) on glyphs of held-out alphabets",
        description=(
            "Meta-learners on the embedded glyph dataset (Omniglot-like characters rendered from matplotlib's "
            "fonts; train, val and test classes from disjoint alphabets). `train` trains on episodes of the "
            "training alphabets (resumable); `eval` scores a trained model on N-way K-shot episodes with 95% "
            "confidence intervals."
        ),
    )
    cmds = p.add_subparsers(dest="fewshot_command", metavar="CMD", required=True)
    t = cmds.add_parser("train", help="train a meta-learner on episodes of the training alphabets")
    t.add_argument("--head", default="proto", help=f"the head: {', '.join(HEADS.names())} (default proto)")
    t.add_argument("--way", type=positive_int, default=20, help="classes per training episode (default 20)")
    t.add_argument("--shot", type=positive_int, default=1, help="support examples per class (default 1)")
    t.add_argument("--query", type=positive_int, default=5, help="query examples per class (default 5)")
    t.add_argument("--episodes", type=positive_int, default=4000, help="training episodes (default 4000)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--seed", type=int, default=0, help="seed of the weights and episodes")
    t.add_argument("--out", required=True, help="output folder (checkpoints, model.safetensors)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_flags(t)
    t.set_defaults(func=_train)
    e = cmds.add_parser("eval", help="accuracy on N-way K-shot episodes of held-out alphabets, with 95%% intervals")
    e.add_argument("--run", required=True, help="a folder written by `effdl fewshot train`")
    e.add_argument("--split", default="test", choices=("train", "val", "test"), help="alphabets (default test)")
    e.add_argument("--way", type=positive_int, default=5, help="classes per episode (default 5)")
    e.add_argument("--shots", default="1,5", help="support examples per class, comma-separated (default 1,5)")
    e.add_argument("--query", type=positive_int, default=15, help="queries per class (default 15)")
    e.add_argument("--episodes", type=positive_int, default=1000, help="episodes per setting (default 1000)")
    e.add_argument("--seed", type=int, default=1, help="seed of the test episodes")
    add_log_flags(e)
    e.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    config = FewShotConfig(head=args.head, n_way=args.way, k_shot=args.shot, n_query=args.query,
                           episodes=args.episodes, lr=args.lr, seed=args.seed)  # fmt: skip
    g = load_glyphs()
    out = Path(args.out)
    model = train_learner(g.train.images, g.train.labels, config, out_dir=out / "checkpoints", resume=args.resume,
                          progress=not args.no_progress)  # fmt: skip
    path = save_meta_learner(model, out / "model.safetensors", config)
    val = evaluate_episodes(model, g.val.images, g.val.labels, n_way=5, k_shot=1, n_query=min(15, g.instances - 1),
                            episodes=200)  # fmt: skip
    print(f"trained {config.head} on {config.episodes} episodes of {g.train.num_classes} training classes")
    print(f"validation alphabets, 5-way 1-shot over 200 episodes: {val}")
    print(f"model: {path}; evaluate: effdl fewshot eval --run {out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    try:
        shots = [int(s) for s in args.shots.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--shots takes comma-separated integers, e.g. 1,5; got {args.shots!r}") from None
    model = load_meta_learner(Path(args.run) / "model.safetensors")
    split = load_glyphs().split(args.split)
    rows, records = [], []
    for k in shots:
        score = evaluate_episodes(model, split.images, split.labels, n_way=args.way, k_shot=k, n_query=args.query,
                                  episodes=args.episodes, seed=args.seed)  # fmt: skip
        rows.append([f"{args.way}-way {k}-shot", str(score), str(score.episodes)])
        records.append({"n_way": args.way, "k_shot": k, **score.to_dict()})
    print(format_table(rows, [f"{args.split} alphabets", "accuracy +- 95% CI", "episodes"], align="lrr"))
    atomic_write_json(Path(args.run) / f"eval_{args.split}.json", {"split": args.split, "results": records})
    return 0
