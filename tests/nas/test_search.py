import pytest
import torch

from effdl.core.errors import ConfigError
from effdl.measure import count_macs
from effdl.nas import SearchConfig, get_space, score_model, search_architectures


def _batches():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 1, 40, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(2)]


@pytest.mark.parametrize("method", ["random", "evolution"])
def test_search_respects_the_budget_and_ranks_by_score(method):
    cfg = SearchConfig(proxy="params", method=method, budget_macs=60_000, samples=30, population=6, tournament=3)
    r = search_architectures("mnist1d_cnn", _batches(), cfg)
    space = get_space("mnist1d_cnn")
    assert r.scored == 30 and len(r.best) == 5
    assert [c.score for c in r.best] == sorted((c.score for c in r.best), reverse=True)
    for c in r.best:
        assert c.macs <= 60_000 and c.macs == count_macs(space.build(c.arch), torch.zeros(1, 1, 40))
    assert r.history == sorted(r.history)  # best-so-far never drops


def test_evolution_beats_random_on_a_smooth_objective():
    # maximizing #params under a MAC budget: evolution should climb at least as high as random sampling
    cfg = SearchConfig(proxy="params", budget_macs=100_000, samples=60, population=10, tournament=4, seed=1)
    evo = search_architectures("mnist1d_cnn", _batches(), cfg)
    rnd = search_architectures("mnist1d_cnn", _batches(), cfg.replace(method="random"))
    assert evo.best[0].score >= rnd.best[0].score


def test_search_is_deterministic_and_trains_the_winner():
    cfg = SearchConfig(proxy="zico", samples=6, population=3, tournament=2, budget_macs=40_000)
    seen = []

    def train(model):
        seen.append(model)
        return 0.5

    a = search_architectures("mnist1d_cnn", _batches(), cfg, train_fn=train)
    b = search_architectures("mnist1d_cnn", _batches(), cfg)
    assert [c.arch for c in a.best] == [c.arch for c in b.best]
    assert a.best[0].accuracy == 0.5 and b.best[0].accuracy is None
    torch.manual_seed(0)
    assert score_model(seen[0], _batches(), "zico") == pytest.approx(a.best[0].score)


def test_bad_config_and_impossible_budget():
    with pytest.raises(ConfigError, match="proxy"):
        SearchConfig(proxy="magic")
    with pytest.raises(ConfigError, match="tournament"):
        SearchConfig(population=3, tournament=5)
    with pytest.raises(ConfigError, match="fits the budget"):
        search_architectures("mnist1d_cnn", _batches(), SearchConfig(budget_macs=10, samples=2, proxy="params"))
