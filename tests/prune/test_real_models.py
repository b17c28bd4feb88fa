"""Structured pruning on the models users bring: Hugging Face families built from config and torch's transformer
modules. Pruned == zeroed dense, saves, reloads into a freshly built model, exports to ONNX that onnxruntime runs."""

import copy

import pytest
import torch
from torch import nn

from effdl.export import export_onnx, run_onnx
from effdl.measure.capture import flatten_tensors
from effdl.models import load_model, save_model
from effdl.models.real import REAL_MODELS, real_model
from effdl.prune import (
    StructuredPruneConfig,
    build_dependency_graph,
    plan_structured,
    prune_,
    remove_channels_,
    zero_channels_,
)

pytest.importorskip("transformers", reason="the Hugging Face models need the hf extra (pip install 'effdl[hf]')")


def first(out):
    return flatten_tensors(out)[0]


@pytest.mark.parametrize("name", REAL_MODELS)
def test_pruned_equals_zeroed_dense_reloads_and_exports(name, tmp_path):
    model, x = real_model(name)
    _, plan = plan_structured(model, StructuredPruneConfig(ratio=0.5), x)
    assert plan.num_removed > 0
    zeroed = copy.deepcopy(model)
    zero_channels_(zeroed, plan)
    with torch.no_grad():
        a, b = first(zeroed(x)), first(model(x))
    assert (a - b).abs().max() > 1e-3 * b.abs().max()  # the check below is not vacuous
    remove_channels_(model, plan, x)
    with torch.no_grad():
        y, ref = first(model(x)), first(zeroed(x))
    torch.testing.assert_close(y, ref, atol=1e-4 * float(ref.abs().max()), rtol=0)
    path = save_model(model, tmp_path / "pruned.safetensors")
    fresh, _ = real_model(name, seed=1)
    again = load_model(path, model=fresh)
    with torch.no_grad():
        torch.testing.assert_close(first(again(x)), y, atol=0, rtol=0)
    onnx_path = export_onnx(again, x, tmp_path / "pruned.onnx")
    out = run_onnx(onnx_path, x)[0]
    torch.testing.assert_close(torch.from_numpy(out), y, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "heads"), [("bert", 4), ("gpt2", 4), ("llama", 2), ("vit", 4), ("mobilevit", 4)])
def test_attention_heads_are_found_from_the_graph(name, heads):
    model, x = real_model(name)
    graph = build_dependency_graph(model, x)
    head_groups = [g for g in graph.groups if g.kind == "heads"]
    assert head_groups and all(len(g) == heads for g in head_groups[:2])  # llama: 2 key/value groups of 2 heads


def test_grouped_query_attention_removes_query_heads_with_their_key_value_head():
    model, x = real_model("llama")
    attn = model.model.layers[0].self_attn
    q, k = attn.q_proj.out_features, attn.k_proj.out_features
    prune_(model, StructuredPruneConfig(ratio=0.5, per_layer={r".*mlp.*": 0.0}), example_inputs=x)
    assert attn.k_proj.out_features == k // 2 and attn.v_proj.out_features == k // 2
    assert attn.q_proj.out_features == q // 2 and attn.o_proj.in_features == q // 2


def test_gpt2_attributes_that_hard_code_sizes_are_updated():
    model, x = real_model("gpt2")
    report = prune_(model, StructuredPruneConfig(ratio=0.5), example_inputs=x)
    attn = model.transformer.h[0].attn
    assert attn.split_size == 32 and attn.c_attn.nf == 96 and attn.c_proj.nx == 32
    assert report.details["attributes"]["transformer.h.0.attn.split_size"] == 32


def test_multihead_attention_heads_are_kept_with_a_reason():
    model, x = real_model("torch_mha")
    graph = build_dependency_graph(model, x)
    assert [g.name for g in graph.groups] == ["fc1"]
    assert "nn.MultiheadAttention" in graph.pinned["attn.out_proj"]


class Tied(nn.Module):
    """An embedding and an output layer sharing one weight, with a prunable width between them."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.mid = nn.Linear(16, 16)
        self.out = nn.Linear(16, 20, bias=False)
        self.out.weight = self.emb.weight  # tied, as in language models

    def forward(self, ids):
        h = self.emb(ids)
        return self.out(torch.relu(self.mid(h)) + h)


def test_tied_weights_are_one_group_pruned_together_and_stay_tied(tmp_path):
    model, x = Tied().eval(), torch.randint(0, 20, (2, 5))
    graph = build_dependency_graph(model, x)
    assert [g.name for g in graph.groups] == ["emb"]  # the residual width, shared by the tied weight
    _, plan = plan_structured(model, StructuredPruneConfig(ratio=0.5), x)
    zeroed = copy.deepcopy(model)
    zero_channels_(zeroed, plan)
    remove_channels_(model, plan, x)
    assert model.out.weight is model.emb.weight and model.emb.weight.shape == (20, 8)
    torch.testing.assert_close(model(x), zeroed(x), atol=1e-5, rtol=1e-4)
    again = load_model(save_model(model, tmp_path / "tied.safetensors"), model=Tied())
    assert again.out.weight is again.emb.weight
    torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)


class PerHead(nn.Module):
    """Attention whose fused projection is laid out (head, q|k|v, head_dim), with attribute names that an
    attribute-based detector would read as (q|k|v, head, head_dim)."""

    def __init__(self, dim=16, num_heads=4):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, self.num_heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        q, k, v = qkv.unbind(0)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


def test_per_head_fused_layout_prunes_whole_heads_correctly():
    torch.manual_seed(0)
    model, x = nn.Sequential(PerHead(), nn.LayerNorm(16)).eval(), torch.randn(2, 5, 16)
    graph = build_dependency_graph(model, x)
    (group,) = [g for g in graph.groups if g.kind == "heads"]
    qkv_rows = next(s for s in group.sites() if s.module == "0.qkv" and s.tensor == "weight")
    assert group.channels[1].indices(qkv_rows) == list(range(12, 24))  # head 1 owns rows 12..23: its q, k and v
    _, plan = plan_structured(model, StructuredPruneConfig(ratio=0.5), x)
    zeroed = copy.deepcopy(model)
    zero_channels_(zeroed, plan)
    remove_channels_(model, plan, x)
    assert model[0].num_heads == 2 and model[0].qkv.out_features == 24
    torch.testing.assert_close(model(x), zeroed(x), atol=1e-5, rtol=1e-4)
