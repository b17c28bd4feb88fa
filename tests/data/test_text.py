"""The embedded language-modelling corpus: deterministic, held-out by file, next-byte targets."""

import torch

from effdl.data import decode_bytes, encode_bytes, get_dataset
from effdl.data.text import _held_out, stdlib_source_files


def test_targets_are_the_next_byte_and_the_split_is_fixed():
    a = get_dataset("pysource", train_bytes=40_000, test_sequences=16)
    b = get_dataset("pysource", train_bytes=40_000, test_sequences=16)
    x, y = a.train[:]
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x[1:, 0], y[:-1, -1])
    assert torch.equal(x, b.train[:][0]) and torch.equal(a.test[:][0], b.test[:][0])
    assert a.task == "language-model" and a.num_classes == 256 and x.dtype == torch.int64
    held = [f for f in stdlib_source_files() if _held_out(f.name)]
    assert 0 < len(held) < len(stdlib_source_files()) / 5
    first = held[0].read_bytes()[:128]
    assert bytes(a.test[0][0].tolist()) == first  # the test split is the held-out files, not training text
    assert decode_bytes(encode_bytes("déjà vu")) == "déjà vu"
