"""The precision policy of VideoIQ (Sun et al., ICCV 2021): a light recurrent network that sees a cheap view of each
frame and picks, per frame, one width of an any-precision model or to skip the frame; trained with Gumbel-softmax
(temperature annealed) with the recognition network frozen; and the evaluation of a policy against the baselines.

Loss of a batch of clips (the paper's terms; ``distill``, ``balance`` and ``entropy`` are off by default): the clip
cross-entropy of the prediction the sampled choices make (the mean of the chosen frames' class probabilities;
skipped frames left out) + ``distill`` x KL from the highest width's clip prediction + ``cost`` x the expected bit
operations per frame relative to the highest width (the choice probabilities times each choice's BOPs: ``b^2``
scaling, skip free) + ``balance`` x the squared distance of the batch's choice usage from uniform + ``entropy`` x the
mean entropy of the per-frame choices. With a ``budget`` the cost weight is not fixed but a Lagrange multiplier
found by dual ascent, so that the policy spends about the BOPs asked for (an extension: the paper tunes the weight).
Since the recognition network is frozen, its outputs at every width are computed once (:func:`frame_outputs`),
which makes policy training a matter of seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effdl.adaptive.anyprec import at_width, model_widths, width_bops
from effdl.core.config import Config, check_range
from effdl.core.errors import ConfigError, ShapeError
from effdl.core.modules import eval_mode
from effdl.core.seed import seed_everything

__all__ = [
    "ClipEvaluation",
    "PolicyConfig",
    "PrecisionPolicy",
    "adaptive_predict",
    "baselines",
    "choice_costs",
    "clip_predictions",
    "difficulty_bands",
    "evaluate_policy",
    "frame_outputs",
    "policy_choices",
    "random_policy",
    "train_policy",
]

log = logging.getLogger(__name__)

SKIP = 0  # bits of a skipped frame in reports


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyConfig(Config):
    """The policy network and its training.

    Attributes:
        hidden: units of the frame encoder and of the GRU.
        view: the cheap view: each frame average-pooled to this many positions per spatial dimension.
        skip: offer skipping a frame as a choice.
        epochs, batch_size, lr: training (Adam, cosine schedule).
        tau_start, tau_end: Gumbel-softmax temperature, annealed exponentially over the epochs.
        cost: weight of the expected bit operations (relative to the highest width): the accuracy/BOPs trade-off.
        budget: aim at this average BOPs (relative to the highest width) instead of fixing the trade-off: the cost
            weight becomes a Lagrange multiplier, starting at ``cost``, raised after each batch whose expected BOPs
            exceed the budget and lowered (not below 0) after each under it (dual ascent, ``budget_lr`` per unit of
            excess). None: the fixed weight ``cost``.
        budget_lr: step of the multiplier's dual ascent.
        distill: weight of the distillation from the highest width's clip prediction.
        balance: weight of the usage-balance term.
        entropy: weight of the per-frame choice entropy.
            (VideoIQ's three auxiliary terms; off by default: in development runs on the embedded task they pulled
            the policy towards input-independent choices.)
        seed: seeds initialization and the Gumbel noise.

    Example:
        >>> PolicyConfig(cost=0.5).choices((8, 4, 2))
        [8, 4, 2, 0]
    """

    hidden: int = 12
    view: int = 10
    skip: bool = True
    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-2
    tau_start: float = 5.0
    tau_end: float = 0.1
    cost: float = 0.2
    budget: float | None = None
    budget_lr: float = 1.0
    distill: float = 0.0
    balance: float = 0.0
    entropy: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        check_range("hidden", self.hidden, 1, 4096, hint="use hidden=12")
        check_range("view", self.view, 1, 4096, hint="use view=10")
        check_range("epochs", self.epochs, 1, 100_000, hint="use epochs=150")
        check_range("batch_size", self.batch_size, 1, hint="use batch_size=64")
        check_range("lr", self.lr, 0.0, low_open=True, hint="use lr=1e-2")
        check_range("tau_start", self.tau_start, 0.0, low_open=True, hint="use tau_start=5")
        check_range("tau_end", self.tau_end, 0.0, self.tau_start, low_open=True, hint="use tau_end=0.1")
        if self.budget is not None:
            check_range("budget", self.budget, 0.0, 1.0, low_open=True, hint="use budget=0.5 (half the BOPs of the "
                        "highest width)")  # fmt: skip
        check_range("budget_lr", self.budget_lr, 0.0, low_open=True, hint="use budget_lr=1.0")
        for name in ("cost", "distill", "balance", "entropy"):
            check_range(name, getattr(self, name), 0.0, hint=f"use {name}=0 to switch the term off")

    def choices(self, widths: tuple[int, ...]) -> list[int]:
        """The choices over ``widths`` (highest first), skip (0 bits) last when offered."""
        return [*sorted(widths, reverse=True), *([SKIP] if self.skip else [])]


class PrecisionPolicy(nn.Module):
    """Frame encoder (the frame and its square average-pooled to ``view`` positions per spatial dimension -> Linear ->
    ReLU) -> GRU over the clip -> logits over the choices. The pooled square (local energy) lets a small encoder see
    contrast and noise, what decides how many bits a frame needs.

    Args:
        frame_shape: shape of one frame, e.g. ``(1, 40)`` or ``(3, 32, 32)``.
        choices: number of choices.
        hidden: units of the encoder and the GRU.
        view: positions per spatial dimension of the cheap view.

    Example:
        >>> p = PrecisionPolicy((1, 40), 4, hidden=8, view=10)
        >>> p(torch.randn(2, 5, 1, 40)).shape, p.macs_per_frame()
        (torch.Size([2, 5, 4]), 576)
    """

    def __init__(self, frame_shape: tuple[int, ...], choices: int, *, hidden: int = 12, view: int = 10) -> None:
        super().__init__()
        if len(frame_shape) not in (2, 3):
            raise ShapeError(f"frames must be (channels, length) or (channels, height, width), got {frame_shape}")
        self.frame_shape = tuple(frame_shape)
        self.view = view
        self.spatial = len(frame_shape) - 1
        features = 2 * frame_shape[0] * view**self.spatial  # the pooled frame and its pooled energy
        self.encoder = nn.Linear(features, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, choices)

    def macs_per_frame(self) -> int:
        """Multiply-accumulates per frame: encoder, the GRU's six matrix products (input and hidden, for its
        reset, update and new gates) and the head (pooling and gate nonlinearities not counted)."""
        h = self.gru.hidden_size
        return self.encoder.in_features * h + 3 * (self.gru.input_size * h + h * h) + h * self.head.out_features

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, t = clips.shape[:2]
        if tuple(clips.shape[2:]) != self.frame_shape:
            raise ShapeError(f"the policy takes clips of frames {self.frame_shape}, got clips of {tuple(clips.shape)}")
        frames = clips.reshape(n * t, *self.frame_shape)
        pool = F.adaptive_avg_pool1d if self.spatial == 1 else F.adaptive_avg_pool2d
        view = torch.cat([pool(frames, self.view), pool(frames * frames, self.view)], dim=1)  # the cheap view
        view = view.reshape(n, t, -1)
        hidden, _ = self.gru(F.relu(self.encoder(view)))
        return self.head(hidden)  # (clips, frames, choices)


def choice_costs(model: nn.Module, frame_shape: tuple[int, ...], choices: list[int]) -> torch.Tensor:
    """Bit operations of one frame per choice, relative to the highest width (skip: 0)."""
    bops = width_bops(model, torch.zeros(1, *frame_shape))
    top = bops[max(bops)]
    return torch.tensor([bops[c] / top if c != SKIP else 0.0 for c in choices])


@torch.no_grad()
def frame_outputs(model: nn.Module, clips: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Class probabilities of every frame at every width of ``model``: ``(widths, clips, frames, classes)``, widths
    highest first.

    Example:
        >>> from effdl.adaptive import AnyPrecisionConfig, any_precision_
        >>> m = nn.Sequential(nn.Flatten(), nn.Linear(40, 3))
        >>> cfg = AnyPrecisionConfig(widths=(8, 4), end_bits=None)
        >>> _ = any_precision_(m, cfg, example_inputs=torch.randn(4, 1, 40))
        >>> frame_outputs(m, torch.randn(2, 5, 1, 40)).shape
        torch.Size([2, 2, 5, 3])
    """
    widths = model_widths(model)
    if not widths:
        raise ConfigError("frame_outputs needs an any-precision model (see any_precision_)")
    n, t = clips.shape[:2]
    frames = clips.reshape(n * t, *clips.shape[2:])
    out = []
    with eval_mode(model):
        for bits in widths:
            with at_width(model, bits):
                probs = torch.cat([F.softmax(model(frames[i : i + batch_size]), dim=1)
                                   for i in range(0, len(frames), batch_size)])  # fmt: skip
            out.append(probs.reshape(n, t, -1))
    return torch.stack(out)


def clip_predictions(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Clip class probabilities from per-frame choices: ``probs`` ``(widths, clips, frames, classes)``, ``onehot``
    ``(clips, frames, choices)`` (widths first, skip last if present; soft values allowed). The mean over the frames
    not skipped of their chosen width's probabilities; a clip with every frame skipped gets zeros.

    Example:
        >>> probs = torch.tensor([[[[0.9, 0.1], [0.2, 0.8]]], [[[0.6, 0.4], [0.5, 0.5]]]])  # 2 widths, 1 clip, 2 frames
        >>> clip_predictions(probs, torch.tensor([[[1.0, 0, 0], [0, 0, 1.0]]]))  # frame 1 at width 0, frame 2 skipped
        tensor([[0.9000, 0.1000]])
    """
    w = probs.shape[0]
    use = onehot[..., :w]  # (clips, frames, widths)
    chosen = torch.einsum("ntw,wntc->ntc", use, probs)
    seen = use.sum(dim=(1, 2)).clamp(min=1e-8)
    return chosen.sum(dim=1) / seen[:, None]


def train_policy(
    policy: PrecisionPolicy,
    probs: torch.Tensor,
    clips: torch.Tensor,
    labels: torch.Tensor,
    *,
    costs: torch.Tensor,
    config: PolicyConfig,
) -> list[dict[str, float]]:
    """Trains ``policy`` in place on ``clips`` with the recognition network's frozen outputs ``probs`` (from
    :func:`frame_outputs`); ``costs`` from :func:`choice_costs`. Returns the per-epoch history."""
    if tuple(probs.shape[1:3]) != tuple(clips.shape[:2]) or len(labels) != len(clips):
        raise ShapeError(f"probs {tuple(probs.shape)} (widths, clips, frames, classes), clips {tuple(clips.shape)} "
                         f"and labels {tuple(labels.shape)} must describe the same clips and frames")  # fmt: skip
    if costs.numel() != policy.head.out_features or costs.numel() < probs.shape[0]:
        raise ShapeError(f"the policy has {policy.head.out_features} choices, costs has {costs.numel()} and the "
                         f"model {probs.shape[0]} widths; build the policy with one choice per width (and "
                         "skip)")  # fmt: skip
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr)
    steps = math.ceil(len(labels) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs * steps)
    teacher = probs[0].mean(dim=1)  # the highest width on every frame: (clips, classes)
    k = costs.numel()
    weight = config.cost  # the cost term's weight; a Lagrange multiplier with a budget
    history = []
    policy.train()
    for epoch in range(config.epochs):
        tau = config.tau_start * (config.tau_end / config.tau_start) ** (epoch / max(config.epochs - 1, 1))
        order = torch.randperm(len(labels), generator=generator)
        sums = {"loss": 0.0, "accuracy": 0.0, "cost": 0.0}
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            logits = policy(clips[idx])
            gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator).clamp(1e-10, 1 - 1e-7)))
            soft = F.softmax((logits + gumbel) / tau, dim=-1)
            hard = F.one_hot(soft.argmax(-1), k).float()
            sample = hard + soft - soft.detach()  # straight-through Gumbel-softmax
            pred = clip_predictions(probs[:, idx], sample)
            log_pred = torch.log(pred.clamp(min=1e-8))
            p = F.softmax(logits, dim=-1)
            usage = p.mean(dim=(0, 1))
            terms = {
                "ce": F.nll_loss(log_pred, labels[idx]),
                "distill": (teacher[idx] * (torch.log(teacher[idx].clamp(min=1e-8)) - log_pred)).sum(1).mean(),
                "cost": (p * costs).sum(-1).mean(),
                "balance": ((usage - 1 / k) ** 2).sum(),
                "entropy": -(p * torch.log(p.clamp(min=1e-8))).sum(-1).mean(),
            }
            loss = (terms["ce"] + config.distill * terms["distill"]
                    + weight * terms["cost"] + config.balance * terms["balance"]
                    + config.entropy * terms["entropy"])  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if config.budget is not None:  # dual ascent on the constraint E[BOPs] <= budget
                weight = max(0.0, weight + config.budget_lr * (float(terms["cost"].detach()) - config.budget))
            sums["loss"] += float(loss.detach()) * len(idx)
            sums["accuracy"] += float((pred.argmax(1) == labels[idx]).sum())
            sums["cost"] += float((hard * costs).sum(-1).mean()) * len(idx)
        history.append({"epoch": epoch + 1, "tau": tau, "cost_weight": weight,
                        **{k_: v / len(labels) for k_, v in sums.items()}})  # fmt: skip
        if (epoch + 1) % 10 == 0 or epoch + 1 == config.epochs:
            h = history[-1]
            log.info("policy epoch %d/%d: loss %.4f, train clip accuracy %.4f, relative BOPs %.3f (tau %.3f)",
                     epoch + 1, config.epochs, h["loss"], h["accuracy"], h["cost"], tau)  # fmt: skip
    policy.eval()
    return history


@torch.no_grad()
def policy_choices(policy: PrecisionPolicy, clips: torch.Tensor, widths: int) -> torch.Tensor:
    """The policy's choice per frame (argmax), ``(clips, frames)`` indices into the choices. A clip whose frames
    would all be skipped runs its least-skippable frame at the width the policy ranks highest for it."""
    with eval_mode(policy):
        logits = policy(clips)
    choice = logits.argmax(-1)
    if logits.shape[-1] > widths:  # skip offered
        empty = (choice == widths).all(dim=1)
        if bool(empty.any()):
            p_skip = F.softmax(logits[empty], -1)[..., widths]  # (empty clips, frames)
            frame = p_skip.argmin(dim=1)
            rows = torch.nonzero(empty).flatten()
            choice[rows, frame] = logits[rows, frame, :widths].argmax(-1)
    return choice


@dataclasses.dataclass
class ClipEvaluation:
    """What a policy (or a baseline) did on a set of clips.

    Attributes:
        name: the policy or baseline.
        accuracy: clip accuracy.
        relative_bops: bit operations per clip relative to running every frame at the highest width (the policy's
            own included).
        histogram: share of frames per choice (bits; 0 = skipped).
        spearman: rank correlation between frame difficulty and chosen bits (skip = 0), over all frames and over
            the frames not skipped (None without difficulties or when constant).
    """

    name: str
    accuracy: float
    relative_bops: float
    histogram: dict[int, float]
    spearman: dict[str, float | None] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"name": self.name, "accuracy": self.accuracy, "relative_bops": self.relative_bops,
                "histogram": {str(k): v for k, v in self.histogram.items()}, "spearman": self.spearman}  # fmt: skip


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _evaluate(name, probs, choice, labels, choices, costs, *, policy_cost=0.0, difficulty=None) -> ClipEvaluation:
    onehot = F.one_hot(choice, len(choices)).float()
    pred = clip_predictions(probs, onehot)
    bits = torch.tensor(choices)[choice]  # (clips, frames)
    hist = {c: float((bits == c).float().mean()) for c in choices}
    rel = float(costs[choice].mean()) + policy_cost
    spear: dict[str, float | None] = {}
    if difficulty is not None:
        d, b = difficulty.flatten().numpy(), bits.flatten().numpy()
        spear = {"all_frames": _spearman(d, b), "frames_not_skipped": _spearman(d[b > 0], b[b > 0])}
    return ClipEvaluation(name, float((pred.argmax(1) == labels).float().mean()), rel, hist, spear)


def evaluate_policy(
    policy: PrecisionPolicy,
    probs: torch.Tensor,
    clips: torch.Tensor,
    labels: torch.Tensor,
    *,
    costs: torch.Tensor,
    choices: list[int],
    policy_bops: float,
    difficulty: torch.Tensor | None = None,
) -> ClipEvaluation:
    """The policy's clip accuracy, relative BOPs (``policy_bops``: its own per frame, relative to a frame at the
    highest width), width histogram and difficulty correlation on ``clips``."""
    widths = sum(1 for c in choices if c != SKIP)
    choice = policy_choices(policy, clips, widths)
    return _evaluate("adaptive policy", probs, choice, labels, choices, costs, policy_cost=policy_bops,
                     difficulty=difficulty)  # fmt: skip


def random_policy(
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    costs: torch.Tensor,
    choices: list[int],
    histogram: dict[int, float],
    seed: int = 0,
    draws: int = 10,
) -> ClipEvaluation:
    """A policy that ignores its input: each frame's choice drawn from ``histogram`` (mean of ``draws`` draws)."""
    g = torch.Generator().manual_seed(seed)
    n, t = labels.numel(), probs.shape[2]
    p = torch.tensor([histogram[c] for c in choices])
    runs = [_evaluate("random policy", probs, torch.multinomial(p, n * t, replacement=True, generator=g).reshape(n, t),
                      labels, choices, costs) for _ in range(draws)]  # fmt: skip
    return ClipEvaluation("random policy (same histogram)", float(np.mean([r.accuracy for r in runs])),
                          float(np.mean([r.relative_bops for r in runs])), dict(histogram))  # fmt: skip


def baselines(
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    costs: torch.Tensor,
    choices: list[int],
    match: ClipEvaluation,
    seed: int = 0,
    draws: int = 10,
) -> list[ClipEvaluation]:
    """The baselines of a policy evaluation, on the same frames: every width fixed; a random policy drawing each
    frame's choice from ``match``'s histogram (the same average BOPs, not input-aware; mean of ``draws`` draws); a
    uniform mix at ``match``'s recognition BOPs (in each clip a fixed share of randomly placed frames at the width
    above that budget, the rest at the width below it, or skipped below the lowest width); and the oracle (each
    frame at the cheapest width that classifies it correctly, skipped when none does; an upper bound)."""
    n, t = labels.numel(), probs.shape[2]
    widths = [c for c in choices if c != SKIP]
    out = []
    for i, b in enumerate(widths):
        out.append(_evaluate(f"all {b}-bit", probs, torch.full((n, t), i), labels, choices, costs))
    g = torch.Generator().manual_seed(seed)
    out.append(random_policy(probs, labels, costs=costs, choices=choices, histogram=match.histogram, seed=seed,
                             draws=draws))  # fmt: skip
    budget = sum(match.histogram[c] * float(costs[i]) for i, c in enumerate(choices))
    ladder = [*range(len(widths)), *([len(widths)] if SKIP in choices else [])]  # choice indices, costs falling
    hi = next((j for j in reversed(ladder) if float(costs[j]) >= budget), ladder[0])
    lo = next((j for j in ladder if float(costs[j]) <= budget), ladder[-1])
    share = 1.0 if hi == lo else (budget - float(costs[lo])) / (float(costs[hi]) - float(costs[lo]))
    k = round(share * t)
    choice = torch.full((n, t), lo)
    for row in range(n):
        choice[row, torch.randperm(t, generator=g)[:k]] = hi
    out.append(_evaluate(f"uniform mix ({choices[hi]}/{choices[lo]}-bit)", probs, choice, labels, choices, costs))
    correct = probs.argmax(-1) == labels[None, :, None]  # (widths, clips, frames)
    cheapest = torch.full((n, t), len(widths) if SKIP in choices else len(widths) - 1)
    for i in range(len(widths)):  # widths highest first: a cheaper correct width overwrites a dearer one
        cheapest = torch.where(correct[i], torch.tensor(i), cheapest)
    out.append(_evaluate("oracle (cheapest correct width)", probs, cheapest, labels, choices, costs))
    return out


def difficulty_bands(
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    costs: torch.Tensor,
    choices: list[int],
    budget: float,
    levels: int = 21,
) -> ClipEvaluation:
    """A reference that sees each frame's true difficulty, which no deployed policy does: frames in bands of
    difficulty, the easiest band at the lowest width, each harder band one width up, and (when skipping is a choice)
    the frames past the last edge skipped; a clip with every frame skipped runs its easiest frame at the highest
    width. The band edges (on a grid of ``levels`` quantiles of the frames' difficulty) are chosen on ``val`` (probs
    ``(widths, clips, frames, classes)``, labels, difficulty ``(clips, frames)``): the most accurate whose
    recognition BOPs stay within ``budget``, relative to every frame at the highest width (then the cheapest; the
    cheapest overall when none stays within). Evaluated on ``test``. It tells how far any policy that spends bits by
    difficulty could go.

    Example:
        >>> probs = torch.tensor([[[[0.9, 0.1], [0.2, 0.8]]], [[[0.6, 0.4], [0.5, 0.5]]]])  # 8 and 4 bits
        >>> data = (probs, torch.tensor([0]), torch.tensor([[0.1, 0.9]]))
        >>> r = difficulty_bands(data, data, costs=torch.tensor([1.0, 0.25, 0.0]), choices=[8, 4, 0], budget=0.5)
        >>> r.accuracy, r.histogram  # the hard frame misleads at 8 bits: skipping it is best
        (1.0, {8: 0.0, 4: 0.5, 0: 0.5})
    """
    widths = [c for c in choices if c != SKIP]
    ladder = list(range(len(widths)))[::-1] + ([len(widths)] if SKIP in choices else [])  # easy -> hard
    grid = torch.quantile(val[2].flatten().float(), torch.linspace(0, 1, levels)).tolist()
    grid = [*sorted(set(grid)), float("inf")]

    def choose(difficulty: torch.Tensor, edges: tuple[float, ...]) -> torch.Tensor:
        choice = torch.tensor(ladder)[torch.bucketize(difficulty.contiguous(), torch.tensor(edges))]
        if SKIP in choices:
            lost = (choice == len(widths)).all(dim=1)
            if lost.any():
                rows = torch.nonzero(lost).flatten()
                choice[rows, difficulty[rows].argmin(dim=1)] = 0
        return choice

    best = None
    for edges in itertools.combinations_with_replacement(grid, len(ladder) - 1):
        choice = choose(val[2], edges)
        bops = float(costs[choice].mean())
        pred = clip_predictions(val[0], F.one_hot(choice, len(choices)).float())
        acc = float((pred.argmax(1) == val[1]).float().mean())
        within = bops <= budget + 1e-9
        key = (within, acc if within else -bops, -bops)  # the most accurate within the budget, then the cheapest
        if best is None or key > best[0]:
            best = (key, edges)
    probs, labels, difficulty = test
    return _evaluate("difficulty bands (sees true difficulty)", probs, choose(difficulty, best[1]), labels, choices,
                     costs, difficulty=difficulty)  # fmt: skip


@torch.no_grad()
def adaptive_predict(
    model: nn.Module, policy: PrecisionPolicy, clips: torch.Tensor, *, choices: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``clips`` as deployed: the policy picks each frame's choice, the frames of each width run together at
    that width, skipped frames do not run. Returns the clip class probabilities and the choices (bits per frame)."""
    widths = [c for c in choices if c != SKIP]
    choice = policy_choices(policy, clips, len(widths))
    n, t = choice.shape
    frames = clips.reshape(n * t, *clips.shape[2:])
    flat = choice.flatten()
    summed = None
    with eval_mode(model):
        for i, b in enumerate(widths):
            rows = torch.nonzero(flat == i).flatten()
            if rows.numel() == 0:
                continue
            with at_width(model, b):
                probs = F.softmax(model(frames[rows]), dim=1)
            if summed is None:
                summed = torch.zeros(n * t, probs.shape[1])
            summed[rows] = probs
    if summed is None:  # no clips
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    seen = (choice < len(widths)).sum(1).clamp(min=1)
    return summed.reshape(n, t, -1).sum(1) / seen[:, None], torch.tensor(choices)[choice]
