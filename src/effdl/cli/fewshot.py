"""``effdl fewshot train|eval|pretrain``: meta-learners and self-supervised (contrastive or meta-learning) pre-training
on the embedded glyph dataset, judged on held-out alphabets."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import add_log_flags, add_run_args, claim_out, positive_int
from effdl.core.errors import ConfigError
from effdl.core.io import atomic_write_json
from effdl.core.plot import saved_figure
from effdl.core.report import Report
from effdl.core.table import format_table
from effdl.data import load_glyphs
from effdl.fewshot import (
    CONTRASTIVE_HEADS,
    HEADS,
    ContrastiveConfig,
    FewShotConfig,
    MetaLearner,
    evaluate_episodes,
    linear_probe,
    load_meta_learner,
    pretrain_contrastive,
    save_meta_learner,
)
from effdl.fewshot import train_meta_learner as train_learner

__all__ = ["add_fewshot"]


def add_fewshot(sub) -> None:
    """Registers ``fewshot`` and its sub-commands."""
    p = sub.add_parser(
        "fewshot",
        help="few-shot learning: meta-learners (ProtoNet, R2-D2, ANIL) and self-supervised pre-training on glyphs",
        description=(
            "Meta-learners on the embedded glyph dataset (Omniglot-like characters rendered from matplotlib's "
            "fonts; train, val and test classes from disjoint alphabets). `train` trains on episodes of the "
            "training alphabets (resumable); `pretrain` trains an encoder without labels, each image a class and its "
            "augmented views the support and query (a few-shot head as the loss) or SimCLR's NT-Xent, and reports a "
            "linear probe and few-shot accuracy; `eval` scores a trained model on N-way K-shot episodes with 95% "
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
    _run_flags(t)
    t.set_defaults(func=_train)
    pre = cmds.add_parser("pretrain", help="self-supervised pre-training: each image a class, its views support/query")
    pre.add_argument("--head", default="proto", help=f"the loss: {', '.join(CONTRASTIVE_HEADS)} (default proto)")
    pre.add_argument("--ways", type=positive_int, default=64, help="images per step (default 64)")
    pre.add_argument("--support-views", type=positive_int, default=1, help="support views per image (default 1)")
    pre.add_argument("--query-views", type=positive_int, default=1, help="query views per image (default 1)")
    pre.add_argument("--steps", type=positive_int, default=2000, help="optimizer steps (default 2000)")
    pre.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    pre.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature (default 0.2)")
    pre.add_argument("--projection", type=int, default=64, help="projection MLP width, 0 for none (default 64)")
    pre.add_argument("--seed", type=int, default=0, help="seed of the weights, images and views")
    pre.add_argument("--episodes", type=positive_int, default=1000, help="5-way test episodes per shot (default 1000)")
    _run_flags(pre)
    pre.set_defaults(func=_pretrain)
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


def _run_flags(p: argparse.ArgumentParser) -> None:
    add_run_args(p, out_help="output folder (checkpoints, model.safetensors, report.json)")
    add_log_flags(p)


def _train(args: argparse.Namespace) -> int:
    config = FewShotConfig(head=args.head, n_way=args.way, k_shot=args.shot, n_query=args.query,
                           episodes=args.episodes, lr=args.lr, seed=args.seed)  # fmt: skip
    g = load_glyphs()
    out = Path(args.out)
    with claim_out(args, out, command="fewshot train"):
        model = train_learner(g.train.images, g.train.labels, config, out_dir=out / "checkpoints",
                              resume=args.resume, progress=not args.no_progress)  # fmt: skip
        path = save_meta_learner(model, out / "model.safetensors", config)
        val = evaluate_episodes(model, g.val.images, g.val.labels, n_way=5, k_shot=1,
                                n_query=min(15, g.instances - 1), episodes=200)  # fmt: skip
        Report(command="fewshot train", model=f"conv4 + {config.head}", dataset=g.describe(), config=config.to_dict(),
               details={"val 5-way 1-shot": val.to_dict()}, artifacts={"model": path.name}).write(out)  # fmt: skip
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
    plot = Path(args.run) / f"eval_{args.split}.png"
    with saved_figure(plot, size=(5, 3.5)) as (_, ax):
        ax.errorbar([r["k_shot"] for r in records], [100 * r["accuracy"] for r in records],
                    yerr=[100 * r["ci95"] for r in records], marker="o", capsize=4)  # fmt: skip
        ax.axhline(100 / args.way, color="grey", linestyle=":", label="chance")
        ax.set_xlabel("shots per class")
        ax.set_ylabel("accuracy (%) +- 95% interval")
        ax.set_title(f"{args.way}-way episodes, {args.split} alphabets")
        ax.legend()
    print(f"plot: {plot}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    config = ContrastiveConfig(head=args.head, ways=args.ways, support_views=args.support_views,
                               query_views=args.query_views, steps=args.steps, lr=args.lr, temperature=args.temperature,
                               projection=args.projection, seed=args.seed)  # fmt: skip
    g = load_glyphs()
    out = Path(args.out)
    with claim_out(args, out, command="fewshot pretrain"):
        backbone = pretrain_contrastive(g.train.images, config, out_dir=out / "checkpoints", resume=args.resume,
                                        progress=not args.no_progress)  # fmt: skip
        model = MetaLearner(backbone, "proto")
        path = save_meta_learner(model, out / "model.safetensors", config)
        test = g.test
        probe = linear_probe(backbone, test.images, test.labels, seed=args.seed)
        scores = {k: evaluate_episodes(model, test.images, test.labels, n_way=5, k_shot=k,
                                       n_query=min(15, g.instances - k), episodes=args.episodes)
                  for k in (1, 5) if k < g.instances}  # fmt: skip
        rows = [["linear probe (half the instances of each class fit, half scored)", f"{100 * probe:.2f}%"]]
        rows += [[f"5-way {k}-shot, ProtoNet on the features ({s.episodes} episodes)", str(s)]
                 for k, s in scores.items()]  # fmt: skip
        fewshot = {f"5-way {k}-shot": s.to_dict() for k, s in scores.items()}
        report = {"config": config.to_dict(), "linear_probe": probe, "fewshot": fewshot}
        atomic_write_json(out / "pretrain.json", report)
        Report(command="fewshot pretrain", model="conv4", dataset=g.describe(), config=config.to_dict(),
               details=report, artifacts={"model": path.name}).write(out)  # fmt: skip
    print(f"pre-trained with the {config.head} loss for {config.steps} steps on {len(g.train.images)} unlabeled images")
    print(format_table(rows, [f"test alphabets ({test.num_classes} classes)", "accuracy"], align="lr"))
    print(f"encoder: {path}; few-shot evaluation: effdl fewshot eval --run {out}")
    return 0
