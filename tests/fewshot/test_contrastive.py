"""Self-supervised pre-training as meta-learning: the episodes (views, layout, seeding), NT-Xent against a direct
computation of SimCLR's loss, the few-shot heads on contrastive episodes, the linear probe, exact resume, and the
``effdl fewshot pretrain`` command."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effdl.core.errors import ConfigError
from effdl.data import load_glyphs
from effdl.fewshot import (
    ContrastiveConfig,
    ContrastiveEpisodes,
    ContrastiveLearner,
    MetaLearner,
    conv4,
    linear_probe,
    pretrain_contrastive,
    random_views,
)
from tests.fewshot.test_fewshot import SMALL
from tests.helpers import Crash, CrashAt, assert_refused, run_cli


def _images(n=12, side=16, seed=0):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def test_contrastive_episodes_lay_out_views_of_distinct_images_and_are_seeded():
    images = torch.arange(12.0)[:, None, None, None].expand(12, 1, 16, 16).clone()  # image i is constant i
    cfg = ContrastiveConfig(head="proto", ways=4, support_views=2, query_views=3)
    data = ContrastiveEpisodes(images, cfg, length=3)
    x, y = data[1]
    assert x.shape == (4 * (2 + 3), 1, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    # every view of an image keeps (some of) its constant value: read which image each view came from
    source = [int(v.max().round()) for v in x]
    support, query = source[:8], source[8:]
    assert len(set(support)) == 4 and support[0::2] == support[1::2]  # two views of each image, image by image
    assert query == [s for s in support[0::2] for _ in range(3)]  # the same images, in the same order
    again = ContrastiveEpisodes(images, cfg, length=3)[1]
    assert torch.equal(again[0], x) and not torch.equal(data[2][0], x)
    x, y = ContrastiveEpisodes(images, ContrastiveConfig(ways=4), length=1)[0]  # NT-Xent: each view's partner
    assert y.tolist() == [4, 5, 6, 7, 0, 1, 2, 3]
    with pytest.raises(ConfigError, match="support_views=1 and query_views=1"):
        ContrastiveConfig(head="ntxent", support_views=2)
    with pytest.raises(ConfigError, match="at least 20 images"):
        ContrastiveEpisodes(images, ContrastiveConfig(ways=20), length=1)
    with pytest.raises(ConfigError, match="head must be one of ntxent"):
        ContrastiveConfig(head="byol")


def test_random_views_change_the_images_but_keep_their_ink_and_shape():
    images = torch.zeros(8, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 1.0
    views = random_views(images, torch.Generator().manual_seed(0))
    assert views.shape == images.shape and not torch.equal(views, images)
    assert float(views.min()) >= 0.0 and float(views.max()) <= 1.0 + 1e-6
    assert (views.sum(dim=(1, 2, 3)) > 0).all()  # no view is blank
    again = random_views(images, torch.Generator().manual_seed(0))
    assert torch.equal(again, views)


def test_the_ntxent_logits_give_simclrs_loss():
    cfg = ContrastiveConfig(ways=3, temperature=0.5, projection=0)
    model = ContrastiveLearner(nn.Flatten(), cfg, dim=4)
    x = torch.randn(1, 6, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    _, y = ContrastiveEpisodes(torch.rand(3, 1, 2, 2), cfg, length=1)[0]
    loss = F.cross_entropy(model(x), y[None])
    # SimCLR (Chen et al. 2020, eq. 1): l(i, j) = -log exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t),
    # averaged over all 2N ordered positive pairs
    z = x[0].reshape(6, 4).double()
    sim = [[float(F.cosine_similarity(z[i], z[k], dim=0)) / 0.5 for k in range(6)] for i in range(6)]
    terms = []
    for i in range(6):
        j = (i + 3) % 6
        terms.append(-sim[i][j] + math.log(sum(math.exp(sim[i][k]) for k in range(6) if k != i)))
    assert float(loss) == pytest.approx(sum(terms) / 6, rel=1e-5)


def test_a_proto_head_on_contrastive_episodes_is_protonet_on_the_projected_views():
    torch.manual_seed(0)
    cfg = ContrastiveConfig(head="proto", ways=3, support_views=2, query_views=1)
    model = ContrastiveLearner(conv4(), cfg).eval()
    x, y = ContrastiveEpisodes(_images(), cfg, length=1)[0]
    logits = model(x[None])  # (1, ways, ways * Q)
    reference = MetaLearner(nn.Sequential(model.backbone, model.projector), "proto", n_way=3, k_shot=2).eval()
    expected = reference.classify(x[:6], x[6:], 3).T
    torch.testing.assert_close(logits[0], expected, atol=1e-4, rtol=1e-4)
    assert logits.shape == (1, 3, 3) and y.tolist() == [0, 1, 2]


def test_the_linear_probe_reads_separable_features_and_refuses_a_bad_split():
    labels = torch.arange(5).repeat_interleave(6)
    images = torch.zeros(30, 1, 1, 5)
    images[torch.arange(30), 0, 0, labels] = 1.0  # one-hot features: perfectly separable
    images += 0.05 * torch.randn(30, 1, 1, 5, generator=torch.Generator().manual_seed(0))
    assert linear_probe(nn.Flatten(), images, labels) == 1.0
    noise = torch.randn(30, 1, 1, 5, generator=torch.Generator().manual_seed(1))
    assert linear_probe(nn.Flatten(), noise, labels) < 0.7  # chance is 20%
    with pytest.raises(ConfigError, match="fit_per_class must be between 1 and 5"):
        linear_probe(nn.Flatten(), images, labels, fit_per_class=6)


def test_a_killed_pretraining_resumes_exactly(tmp_path):
    images = load_glyphs(**SMALL).train.images
    cfg = ContrastiveConfig(head="r2d2", ways=8, steps=6, checkpoint_every=2, lr=3e-3)
    full = pretrain_contrastive(images, cfg)
    with pytest.raises(Crash):
        pretrain_contrastive(images, cfg, callbacks=[CrashAt(3)], out_dir=tmp_path)
    resumed = pretrain_contrastive(images, cfg, out_dir=tmp_path, resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)


def test_the_pretrain_command_reports_probe_and_fewshot_and_evaluates(tmp_path, capsys, monkeypatch):
    from effdl.cli import fewshot as cli

    monkeypatch.setattr(cli, "load_glyphs", lambda: load_glyphs(**SMALL))  # the small set, for speed
    out = tmp_path / "pre"
    args = ["fewshot", "pretrain", "--head", "proto", "--ways", 8, "--steps", 3, "--episodes", 10, "--out", out,
            "--no-progress", "-q"]  # fmt: skip
    code, text, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "linear probe" in text and "5-way 1-shot" in text and (out / "pretrain.json").exists()
    assert json.loads((out / "report.json").read_text())["details"]["linear_probe"] >= 0
    first = (out / "model.safetensors").read_bytes()
    code, _, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    assert (out / "model.safetensors").read_bytes() == first
    code, text, err = run_cli(capsys, "fewshot", "eval", "--run", out, "--shots", "1", "--query", 2, "--episodes", 10,
                              "-q")  # fmt: skip
    assert code == 0 and "5-way 1-shot" in text, err
    assert_refused(capsys, *args[:-4], "--out", out, "--resume", "--steps", 4, message="cannot resume")
    assert_refused(capsys, "fewshot", "pretrain", "--head", "ntxent", "--support-views", 2, "--out", tmp_path / "x",
                   message="support_views=1 and query_views=1")  # fmt: skip
