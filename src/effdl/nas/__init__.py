"""Zero-cost neural architecture search: proxies that score untrained networks (ZiCo and the usual baselines),
search spaces that train here, rank correlations against a committed ground truth, and proxy-guided search under a
MAC or latency budget.

Example:
    >>> import torch
    >>> from effdl.nas import get_space, score_model
    >>> space = get_space("mnist1d_cnn")
    >>> model = space.build("c16-32_k5-3_s1-2_r1")
    >>> batches = [(torch.randn(8, 1, 40), torch.randint(0, 10, (8,))) for _ in range(2)]
    >>> isinstance(score_model(model, batches, "zico"), float)
    True
"""

from effdl.nas.ground_truth import (
    GROUND_TRUTH_RECIPE,
    GroundTruthConfig,
    TrainedArchitectures,
    sample_codes,
    train_architectures,
)
from effdl.nas.proxies import PROXIES, score_model, zico_score
from effdl.nas.ranking import (
    GroundTruth,
    ProxyEvaluation,
    evaluate_proxies,
    kendall_tau,
    load_ground_truth,
    spearman_rho,
)
from effdl.nas.search import Candidate, SearchConfig, SearchResult, search_architectures
from effdl.nas.space import SPACES, Architecture, SearchSpace, get_space

__all__ = [
    "GROUND_TRUTH_RECIPE",
    "PROXIES",
    "SPACES",
    "Architecture",
    "Candidate",
    "GroundTruth",
    "GroundTruthConfig",
    "ProxyEvaluation",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "TrainedArchitectures",
    "evaluate_proxies",
    "get_space",
    "kendall_tau",
    "load_ground_truth",
    "sample_codes",
    "score_model",
    "search_architectures",
    "spearman_rho",
    "train_architectures",
    "zico_score",
]
