"""Unlearning for image-to-image models: only the encoder moves, alpha = 0 keeps the model, clear errors, the model
restored on a failure, and the study runs end to end."""

import copy
import math

import pytest
import torch

from effdl.core.errors import ConfigError, ShapeError
from effdl.unlearn import (
    METHODS,
    InpaintingAutoencoder,
    UnlearnConfig,
    UnlearnStudyConfig,
    digit_splits,
    frechet_distance,
    patch_masks,
    run_study,
    unlearn_,
)


def _sets(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(16, 1, 8, 8, generator=g), torch.rand(24, 1, 8, 8, generator=g)


@pytest.mark.parametrize("method", METHODS)
def test_only_the_encoder_changes(method):
    model = InpaintingAutoencoder()
    before = copy.deepcopy(model)
    forget, retain = _sets()
    unlearn_(model, UnlearnConfig(method=method, steps=5), forget=forget, retain=retain)
    for (name, p), q in zip(model.decoder.named_parameters(), before.decoder.parameters(), strict=True):
        assert torch.equal(p, q), name
        assert p.requires_grad  # the decoder is unfrozen again afterwards
    assert any(not torch.equal(p, q) for p, q in zip(model.encoder.parameters(), before.encoder.parameters(),
                                                     strict=True))  # fmt: skip


def test_alpha_zero_with_the_real_retain_set_keeps_the_model():
    model = InpaintingAutoencoder()
    before = copy.deepcopy(model.state_dict())
    forget, retain = _sets()
    unlearn_(model, UnlearnConfig(alpha=0.0, steps=20), forget=forget, retain=retain)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=1e-7)


def test_bad_input_gets_clear_errors_and_a_failure_restores_the_model(monkeypatch):
    model = InpaintingAutoencoder()
    forget, retain = _sets()
    with pytest.raises(ConfigError, match="the forget set is empty"):
        unlearn_(model, UnlearnConfig(), forget=forget[:0], retain=retain)
    with pytest.raises(ConfigError, match="2 forget image"):
        unlearn_(model, UnlearnConfig(), forget=forget, retain=torch.cat([retain, forget[:2]]))
    with pytest.raises(ShapeError, match=r"\(N, 1, 8, 8\)"):
        unlearn_(model, UnlearnConfig(), forget=forget[:, :, :4], retain=retain)
    with pytest.raises(ConfigError, match="method must be one of"):
        UnlearnConfig(method="amnesia")
    with pytest.raises(ConfigError, match="forget is empty"):
        UnlearnStudyConfig(forget=())
    before = copy.deepcopy(model.state_dict())
    import effdl.unlearn.method as method

    calls = []
    real = method._loss

    def failing(*args):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("injected fault")
        return real(*args)

    monkeypatch.setattr(method, "_loss", failing)
    with pytest.raises(RuntimeError, match="injected fault"):
        unlearn_(model, UnlearnConfig(steps=10), forget=forget, retain=retain)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_retain_batch_and_schedule_options(monkeypatch):
    import effdl.unlearn.method as method

    sizes = []
    real = method._batch

    def counting(x, n, g):
        sizes.append(n)
        return real(x, n, g)

    monkeypatch.setattr(method, "_batch", counting)
    forget, retain = _sets()
    unlearn_(InpaintingAutoencoder(), UnlearnConfig(steps=2, batch_size=8, retain_batch_size=32), forget=forget,
             retain=retain)  # fmt: skip
    assert sizes == [32, 8] * 2  # each step: a retain batch of 32, a forget batch of 8
    # the rate each optimizer step used: constant, or cosine decay from lr towards zero over the steps
    monkeypatch.setattr(method, "_batch", real)
    rates = []
    step = torch.optim.Adam.step

    def recording(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    for schedule in ("constant", "cosine"):
        rates.clear()
        unlearn_(InpaintingAutoencoder(), UnlearnConfig(steps=4, lr=1e-3, schedule=schedule), forget=forget,
                 retain=retain)  # fmt: skip
        expected = [1e-3] * 4 if schedule == "constant" else [5e-4 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
        assert rates == pytest.approx(expected), schedule
    with pytest.raises(ConfigError, match="schedule must be one of"):
        UnlearnConfig(schedule="linear")
    with pytest.raises(ConfigError, match="retain_batch_size"):
        UnlearnConfig(retain_batch_size=0)
    with pytest.raises(ConfigError, match="width must be an even number"):
        InpaintingAutoencoder(width=5)
    with pytest.raises(ConfigError, match="width must be an even number"):
        UnlearnStudyConfig(width=3)


def _record_mask_ratios(monkeypatch) -> list[float]:
    import effdl.unlearn.method as method
    import effdl.unlearn.metrics as metrics
    import effdl.unlearn.task as task

    ratios = []
    real = task.patch_masks

    def recording(n, **kwargs):
        masks = real(n, **kwargs)
        ratios.append(float(masks.mean()))  # what the masks really hide
        return masks

    for module in (task, method, metrics):
        monkeypatch.setattr(module, "patch_masks", recording)
    return ratios


def test_the_mask_ratio_reaches_training_unlearning_and_scoring(monkeypatch):
    from effdl.unlearn import score_set, train_autoencoder

    assert float(patch_masks(50, ratio=0.75, seed=2).mean()) == 0.75
    ratios = _record_mask_ratios(monkeypatch)
    forget, retain = _sets()
    model, _ = train_autoencoder(retain, epochs=1, mask_ratio=0.75)
    unlearn_(model, UnlearnConfig(steps=2, mask_ratio=0.75), forget=forget, retain=retain)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    score_set(model, clf, retain, torch.zeros(len(retain), dtype=torch.long), mask_ratio=0.75)
    assert len(ratios) == 4 and ratios == [0.75] * 4  # training, two unlearning steps, scoring
    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError, match="mask_ratio is the share of 2x2 patches hidden"):
            UnlearnStudyConfig(mask_ratio=bad)
    with pytest.raises(ConfigError, match="mask_ratio is the share of 2x2 patches hidden"):
        patch_masks(2, ratio=1.5)
    with pytest.raises(ConfigError, match="set mask_ratio on the study only"):
        UnlearnStudyConfig(mask_ratio=0.75, unlearn=UnlearnConfig(mask_ratio=0.25))


def test_splits_and_masks_are_deterministic_and_disjoint():
    a, b = digit_splits(3), digit_splits(3)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[1], b.test[1])
    assert torch.equal(patch_masks(5, seed=1), patch_masks(5, seed=1))
    rows = {tuple(r.tolist()) for r in a.train[0].flatten(1)}
    assert sum(tuple(r.tolist()) in rows for r in a.test[0].flatten(1)) <= 5  # digits has a few duplicate images
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) < 1e-6 < frechet_distance(x, x * 2)


@pytest.mark.slow  # ~16 s: the whole study (training, unlearning, baselines, plots); run with -m slow
def test_the_study_runs_end_to_end(tmp_path, monkeypatch):
    config = UnlearnStudyConfig(epochs=1, judge_epochs=2, alphas=(1.0,), ascent_steps=(3,), mask_ratio=0.75,
                                unlearn=UnlearnConfig(steps=5))  # fmt: skip
    ratios = _record_mask_ratios(monkeypatch)
    report = run_study(config, out_dir=tmp_path)
    assert len(ratios) > 50 and set(ratios) == {0.75}  # every mask of the study hides what it was told
    rows = {r["method"]: r for r in report.details["rows"]}
    assert {"original", "noise-target (real retain)", "noise-target (proxy retain)", "gradient-ascent"} <= set(rows)
    assert (tmp_path / "grids.png").stat().st_size > 0 and (tmp_path / "tradeoff.png").is_file()
    assert (tmp_path / "report.json").is_file()
    assert 0 < report.details["steps_vs_retraining"] < 1
    sweep = report.details["tradeoff"]
    assert [(r["method"], r.get("alpha"), r.get("ascent_steps")) for r in sweep] == [
        ("noise-target", 1.0, None), ("gradient-ascent", None, 3)]  # fmt: skip
