"""Few-shot learning: the glyph dataset, the episode sampler, the heads against direct computations, exact resume,
and a smoke run of training and evaluation."""

import pytest
import torch

from effdl.core.errors import ConfigError, UnknownNameError
from effdl.data import EpisodeDataset, EpisodeSampler, load_glyphs
from effdl.fewshot import (
    ANILHead,
    AugmentConfig,
    AugmentedEpisodes,
    ClassicalConfig,
    ClusteringRegularizer,
    FewShotConfig,
    MetaLearner,
    R2D2Head,
    clustering_ratio,
    embed,
    evaluate_episodes,
    maxup_loss,
    prototype_logits,
    train_classical,
    train_meta_learner,
)
from tests.helpers import Crash, CrashAt

SMALL = {"instances": 4, "alphabets": ("GREEK", "CYRILLIC", "HEBREW", "ARMENIAN"), "max_per_alphabet": 12}


@pytest.fixture(scope="module")
def glyphs():
    return load_glyphs(**SMALL)


def test_the_glyph_dataset_is_identical_for_a_seed_and_splits_by_alphabet(glyphs):
    again = load_glyphs(**SMALL, cache=False)
    for split in ("train", "val", "test"):
        a, b = glyphs.split(split), again.split(split)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.chars == b.chars
    other = load_glyphs(**SMALL, seed=1, cache=False)
    assert not torch.equal(other.train.images[:4], glyphs.train.images[:4])
    alphabets = [set(glyphs.split(s).alphabets) for s in ("train", "val", "test")]
    assert all(a for a in alphabets) and not (alphabets[0] & alphabets[1] or alphabets[0] & alphabets[2]
                                              or alphabets[1] & alphabets[2])  # fmt: skip
    x = glyphs.train.images
    assert x.shape[1:] == (1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert len(glyphs.train.labels) == glyphs.train.num_classes * 4
    with pytest.raises(ConfigError, match="unknown alphabets"):
        load_glyphs(alphabets=("KLINGON", "GREEK", "HEBREW"), cache=False)


def test_episodes_have_exactly_n_times_k_plus_q_examples_of_the_allowed_classes_only():
    labels = torch.arange(30).repeat_interleave(6)  # 30 classes, 6 examples each
    train_classes = set(range(20))
    sampler = EpisodeSampler(labels, n_way=5, k_shot=2, n_query=3, seed=4, classes=sorted(train_classes))
    for i in range(200):
        e = sampler.episode(i)
        idx = e.support + e.query
        assert len(e.support) == 5 * 2 and len(e.query) == 5 * 3 and len(set(idx)) == 5 * (2 + 3)
        assert {int(labels[j]) for j in idx} <= train_classes  # never a test class
        assert [int(labels[j]) for j in e.support] == [c for c in e.classes for _ in range(2)]  # class by class
        assert [int(labels[j]) for j in e.query] == [c for c in e.classes for _ in range(3)]
    assert sampler.episode(7) == EpisodeSampler(labels, n_way=5, k_shot=2, n_query=3, seed=4,
                                                classes=sorted(train_classes)).episode(7)  # fmt: skip
    with pytest.raises(ConfigError, match="need 5 classes with at least 8 examples, found 0"):
        EpisodeSampler(labels, n_way=5, k_shot=4, n_query=4)
    ds = EpisodeDataset(torch.randn(180, 1, 2, 2), labels, sampler, length=3)
    x, y = ds[1]
    assert x.shape == (25, 1, 2, 2) and y.tolist() == [c for c in range(5) for _ in range(3)]


def test_prototype_logits_match_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(3 * 4, 5, generator=g), torch.randn(7, 5, generator=g)
    logits = prototype_logits(support, query, 3)
    for q in range(7):
        for c in range(3):
            proto = support[4 * c : 4 * c + 4].mean(dim=0)
            assert logits[q, c].item() == pytest.approx(-float(((query[q] - proto) ** 2).sum()), rel=1e-5)


def test_the_r2d2_head_equals_the_primal_ridge_regression():
    g = torch.Generator().manual_seed(1)
    support, query = torch.randn(3 * 2, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g,
                                                                                          dtype=torch.float64)
    head = R2D2Head().double()
    with torch.no_grad():
        head.log_lambda.fill_(0.5)
        head.alpha.fill_(2.0)
        head.beta.fill_(0.1)
    y = torch.nn.functional.one_hot(torch.arange(3).repeat_interleave(2), 3).double()
    w = torch.linalg.solve(support.T @ support + torch.exp(torch.tensor(0.5)) * torch.eye(8, dtype=torch.float64),
                           support.T @ y)  # (D, N): (X^T X + lambda I)^-1 X^T Y  # fmt: skip
    torch.testing.assert_close(head(support, query, 3), 2.0 * query @ w + 0.1)


def test_a_killed_training_resumes_exactly(glyphs, tmp_path):
    x, y = glyphs.train.images, glyphs.train.labels
    cfg = FewShotConfig(n_way=5, k_shot=1, n_query=2, episodes=6, checkpoint_every=2)
    full = train_meta_learner(x, y, cfg)
    with pytest.raises(Crash):
        train_meta_learner(x, y, cfg, callbacks=[CrashAt(3)], out_dir=tmp_path)
    resumed = train_meta_learner(x, y, cfg, out_dir=tmp_path, resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)


def test_training_then_evaluating_on_held_out_alphabets_beats_chance(glyphs):
    test = glyphs.test
    before = evaluate_episodes(MetaLearner(), test.images, test.labels, n_way=5, k_shot=1, n_query=3, episodes=40)
    cfg = FewShotConfig(n_way=10, k_shot=1, n_query=3, episodes=60)
    model = train_meta_learner(glyphs.train.images, glyphs.train.labels, cfg)
    after = evaluate_episodes(model, test.images, test.labels, n_way=5, k_shot=1, n_query=3, episodes=40)
    # the same 40 episodes before and after 60 training episodes (46.7% -> 56.7% when written; chance 20%)
    assert after.accuracy > 0.4 and after.accuracy > before.accuracy + 0.05
    assert 0 < after.ci95 < 0.2 and after.episodes == 40
    with pytest.raises(UnknownNameError, match=r"unknown few-shot head 'maml'; valid few-shot heads: anil, proto"):
        FewShotConfig(head="maml")


@pytest.mark.slow
def test_the_full_glyph_dataset_has_over_a_thousand_classes_split_by_alphabet():
    g = load_glyphs()
    assert g.train.num_classes + g.val.num_classes + g.test.num_classes >= 1000
    alphabets = [set(g.split(s).alphabets) for s in ("train", "val", "test")]
    assert len(set.union(*alphabets)) == sum(len(a) for a in alphabets)  # no alphabet in two splits
    assert g.test.num_classes >= 200 and len(alphabets[2]) >= 3


def test_the_fewshot_commands_train_resume_and_evaluate(tmp_path, capsys, monkeypatch):
    from effdl.cli import fewshot as cli
    from tests.helpers import assert_refused, run_cli

    monkeypatch.setattr(cli, "load_glyphs", lambda: load_glyphs(**SMALL))  # the small set, for speed
    out = tmp_path / "run"
    code, text, err = run_cli(capsys, "fewshot", "train", "--way", 5, "--query", 2, "--episodes", 4, "--out", out,
                              "--no-progress", "-q")  # fmt: skip
    assert code == 0, err
    assert "validation alphabets, 5-way 1-shot" in text and (out / "model.safetensors").exists()
    assert (out / "report.json").exists()
    first = (out / "model.safetensors").read_bytes()
    code, _, err = run_cli(capsys, "fewshot", "train", "--way", 5, "--query", 2, "--episodes", 4, "--out", out,
                           "--no-progress", "-q", "--resume")  # fmt: skip
    assert code == 0, err
    assert (out / "model.safetensors").read_bytes() == first  # a finished run resumed is the same model
    code, text, err = run_cli(capsys, "fewshot", "eval", "--run", out, "--shots", "1,2", "--query", 2, "--episodes",
                              20, "-q")  # fmt: skip
    assert code == 0, err
    assert "5-way 1-shot" in text and "5-way 2-shot" in text and (out / "eval_test.json").exists()
    assert (out / "eval_test.png").stat().st_size > 0
    assert_refused(capsys, "fewshot", "eval", "--run", out, "--shots", "one", message="--shots takes")
    assert_refused(capsys, "fewshot", "eval", "--run", tmp_path / "nothing", message="nothing")


def test_the_clustering_ratio_matches_a_direct_computation_and_is_scale_free():
    g = torch.Generator().manual_seed(2)
    feats, labels = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2] * 4)
    means = torch.stack([feats[labels == c].mean(0) for c in range(3)])
    within = sum(float(((feats[labels == c] - means[c]) ** 2).sum()) for c in range(3)) / 12
    between = float(((means - means.mean(0)) ** 2).sum()) / 3
    assert float(clustering_ratio(feats, labels)) == pytest.approx(within / between, rel=1e-12)
    assert float(clustering_ratio(5 * feats + 1, labels)) == pytest.approx(within / between, rel=1e-9)


def test_the_clustering_regularizer_adds_its_term_and_tightens_the_training_classes(glyphs):
    x, y = glyphs.train.images, glyphs.train.labels
    cfg = ClassicalConfig(steps=30, classes=8, per_class=3)
    plain = train_classical(x, y, cfg)
    tight = train_classical(x, y, cfg.replace(cluster_weight=5.0))
    ratio = {name: float(clustering_ratio(embed(m.backbone, x), y)) for name, m in (("plain", plain), ("tight", tight))}
    assert ratio["tight"] < ratio["plain"]
    reg = ClusteringRegularizer(weight=2.0)
    reg._features = torch.tensor([[0.0], [0.2], [4.0], [4.2]])
    batch = (None, torch.tensor([[0, 0, 1, 1]]))
    assert float(reg.on_loss(None, batch, None, torch.tensor(1.0))) == pytest.approx(1.0 + 2.0 * 0.0025)


def _episodes(n_way=3, k_shot=2, n_query=2):
    g = torch.Generator().manual_seed(3)
    images, labels = torch.rand(40, 1, 8, 8, generator=g), torch.arange(8).repeat_interleave(5)
    sampler = EpisodeSampler(labels, n_way=n_way, k_shot=k_shot, n_query=n_query, seed=1)
    return EpisodeDataset(images, labels, sampler, length=4)


def test_support_and_query_augmentations_touch_only_their_part_and_are_seeded():
    base = _episodes()
    x, _ = base[0]
    sup, _ = AugmentedEpisodes(base, AugmentConfig(support=("cutout",)))[0]
    qry, _ = AugmentedEpisodes(base, AugmentConfig(query=("cutout",)))[0]
    assert torch.equal(sup[6:], x[6:]) and not torch.equal(sup[:6], x[:6])  # 3-way 2-shot: 6 support images
    assert torch.equal(qry[:6], x[:6]) and not torch.equal(qry[6:], x[6:])
    assert torch.equal(qry, AugmentedEpisodes(base, AugmentConfig(query=("cutout",)))[0][0])  # same seed, same
    versions, y = AugmentedEpisodes(base, AugmentConfig(query=("cutout", "shift"), maxup=4))[0]
    assert versions.shape == (4, 12, 1, 8, 8) and y.shape == (4, 6)
    assert len({versions[j].sum().item() for j in range(4)}) == 4  # four different versions


def test_task_rotation_turns_all_images_of_a_class_by_the_same_multiple_of_90_degrees():
    base = _episodes()
    x, _ = base[1]
    out, _ = AugmentedEpisodes(base, AugmentConfig(task_rotation=1.0))[1]
    support, query = x[:6].reshape(3, 2, 1, 8, 8), x[6:].reshape(3, 2, 1, 8, 8)
    r_support, r_query = out[:6].reshape(3, 2, 1, 8, 8), out[6:].reshape(3, 2, 1, 8, 8)
    for c in range(3):
        ks = [k for k in (1, 2, 3) if torch.equal(torch.rot90(support[c], k, dims=(-2, -1)), r_support[c])]
        assert len(ks) == 1 and torch.equal(torch.rot90(query[c], ks[0], dims=(-2, -1)), r_query[c])


def test_query_cutmix_mixes_labels_by_the_pasted_share_and_shot_augmentation_adds_copies_of_each_class():
    labels = torch.arange(4).repeat_interleave(4)
    images = (labels + 1).float()[:, None, None, None].expand(16, 1, 8, 8).clone()  # class c is the constant c + 1
    base = EpisodeDataset(images, labels, EpisodeSampler(labels, n_way=3, k_shot=1, n_query=1, seed=0), length=4)
    x, y = base[0]
    out, soft = AugmentedEpisodes(base, AugmentConfig(query_cutmix=1.0))[0]
    assert soft.shape == (3, 3) and torch.allclose(soft.sum(dim=0), torch.ones(3))  # (N, NQ) probabilities
    value_of = {int(c): float(v) for c, v in zip(y, x[3:, 0, 0, 0], strict=True)}  # episode class -> pixel value
    for q in range(3):  # the share of each class's pixels in the mixed query is its target probability
        for c, v in value_of.items():
            assert float(soft[c, q]) == pytest.approx(float((out[3 + q] == v).float().mean()), abs=1e-6)
    assert torch.equal(out[:3], x[:3])  # the support is untouched
    aug = AugmentedEpisodes(base, AugmentConfig(shots=("shift",), shot_copies=2))
    out, _ = aug[0]
    assert aug.k_shot == 3 and out.shape == (3 * 3 + 3, 1, 8, 8)
    support = out[:9].reshape(3, 3, 1, 8, 8)
    for c in range(3):  # each class's shots (the image and its two shifted copies) carry that class's value only
        assert set(support[c].unique().tolist()) - {0.0} == {float(x[c, 0, 0, 0])}
    versions, soft = AugmentedEpisodes(base, AugmentConfig(query_cutmix=1.0, maxup=2))[0]
    assert versions.shape == (2, 6, 1, 8, 8) and soft.shape == (3, 2, 3)
    with pytest.raises(ConfigError, match="shots=\\('shift',\\)"):
        AugmentConfig(shot_copies=1)
    aug = AugmentConfig(query_cutmix=0.5, shots=("shift",), shot_copies=1, maxup=2)
    trained = train_meta_learner(torch.rand(40, 1, 28, 28), torch.arange(8).repeat_interleave(5),
                                 FewShotConfig(n_way=3, n_query=2, episodes=2), augment=aug)  # fmt: skip
    assert (trained.n_way, trained.k_shot) == (3, 1)  # the layout it was configured with, for use after training


def test_maxup_takes_the_worst_version_and_trains():
    g = torch.Generator().manual_seed(4)
    logits, targets = torch.randn(2, 3, 4, 5, generator=g), torch.randint(0, 3, (2, 4, 5), generator=g)
    per_version = torch.stack([torch.stack([torch.nn.functional.cross_entropy(logits[b, :, j].T, targets[b, j])
                                            for j in range(4)]) for b in range(2)])  # fmt: skip
    assert float(maxup_loss(logits, targets)) == pytest.approx(float(per_version.max(dim=1).values.mean()), rel=1e-6)
    model = MetaLearner(n_way=3, k_shot=2)
    assert model(torch.rand(2, 4, 12, 1, 28, 28)).shape == (2, 3, 4, 6)
    x, y = torch.rand(40, 1, 28, 28, generator=g), torch.arange(8).repeat_interleave(5)
    trained = train_meta_learner(x, y, FewShotConfig(n_way=3, n_query=2, episodes=2),
                                 augment=AugmentConfig(query=("self-mix",), maxup=2))  # fmt: skip
    assert trained.n_way == 3
    with pytest.raises(UnknownNameError, match="unknown episode augmentation 'mixup'"):
        AugmentConfig(query=("mixup",))


def test_anil_one_inner_step_from_zero_matches_the_closed_form_and_first_order_cuts_the_support_path():
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(6, 4, generator=g, requires_grad=True), torch.randn(5, 4, generator=g)
    head = ANILHead(steps=1, lr=0.3)
    # from w = 0, b = 0 the softmax is uniform: dL/dw = (1/N - onehot)^T support / n, dL/db = mean(1/N - onehot)
    onehot = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1, 2, 2]), 3).double()
    grad_w = (1 / 3 - onehot).T @ support.double() / 6
    grad_b = (1 / 3 - onehot).mean(dim=0)
    expected = query.double() @ (-0.3 * grad_w).T - 0.3 * grad_b
    torch.testing.assert_close(head(support, query, 3).double(), expected, atol=1e-5, rtol=1e-5)
    head(support, query, 3).sum().backward()  # second order: the adapted head depends on the support
    assert support.grad is not None and float(support.grad.abs().sum()) > 0
    support.grad = None
    ANILHead(steps=1, lr=0.3, first_order=True)(support, query, 3).sum().backward()
    assert support.grad is None or float(support.grad.abs().sum()) == 0
    with torch.no_grad():  # evaluation: the inner loop still runs, the result carries no graph
        out = head(support, query, 3)
    assert not out.requires_grad and torch.allclose(out.double(), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="steps"):
        ANILHead(steps=0)


def test_an_anil_learner_trains_saves_and_reloads_with_its_inner_loop(glyphs, tmp_path):
    from effdl.fewshot import load_meta_learner, save_meta_learner

    cfg = FewShotConfig(head="anil", n_way=5, k_shot=1, n_query=2, episodes=30, lr=3e-3)
    model = train_meta_learner(glyphs.train.images, glyphs.train.labels, cfg)
    assert float(model.head.log_lr) != pytest.approx(float(ANILHead().log_lr))  # the inner step size is learned
    model.head.steps.fill_(7)
    loaded = load_meta_learner(save_meta_learner(model, tmp_path / "m.safetensors", cfg))
    assert int(loaded.head.steps) == 7
    test = glyphs.test
    a = evaluate_episodes(model, test.images, test.labels, n_way=5, k_shot=1, n_query=3, episodes=20)
    b = evaluate_episodes(loaded, test.images, test.labels, n_way=5, k_shot=1, n_query=3, episodes=20)
    assert a.accuracy == b.accuracy and a.accuracy > 0.3  # chance 20%
