"""An embedded language-modelling corpus: the bytes of the Python standard library's own source files, read from
the running interpreter (nothing is downloaded), split by file into a fixed train and held-out set."""

from __future__ import annotations

import logging
import sys
import sysconfig
import zlib
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from effdl.core.config import check_range
from effdl.core.errors import ConfigError
from effdl.data.base import DATASETS, DatasetSplits

__all__ = [
    "VOCAB_SIZE",
    "decode_bytes",
    "docstring_sentences",
    "encode_bytes",
    "load_pysource",
    "stdlib_source_files",
]

log = logging.getLogger(__name__)

#: byte-level tokens: every byte value is a token, so any text encodes without a tokenizer file
VOCAB_SIZE = 256


def stdlib_source_files(root: str | Path | None = None) -> list[Path]:
    """The top-level ``*.py`` files of the standard library (``root``: its folder, default the running
    interpreter's), sorted by name.

    Example:
        >>> any(f.name == "os.py" for f in stdlib_source_files())
        True
    """
    folder = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    files = sorted(folder.glob("*.py"), key=lambda f: f.name)
    if not files:
        raise ConfigError(f"no Python source files in {folder}; pass root= the standard library's folder")
    return files


def _held_out(name: str) -> bool:
    return zlib.crc32(name.encode()) % 10 == 0  # a fixed tenth of the files, chosen by name, never by order


def encode_bytes(text: str) -> torch.Tensor:
    """UTF-8 bytes of ``text`` as int64 tokens.

    Example:
        >>> encode_bytes("ab").tolist()
        [97, 98]
    """
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.int64)


def decode_bytes(tokens: torch.Tensor) -> str:
    """Inverse of :func:`encode_bytes` (invalid UTF-8 replaced).

    Example:
        >>> decode_bytes(torch.tensor([104, 105]))
        'hi'
    """
    return bytes(int(t) for t in tokens.flatten()).decode("utf-8", errors="replace")


def _windows(data: bytes, length: int, limit: int | None) -> TensorDataset:
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)
    n = (tokens.numel() - 1) // length
    if limit is not None:
        n = min(n, limit)
    if n < 1:
        raise ConfigError(f"the corpus has {tokens.numel()} bytes, fewer than one sequence of {length + 1}")
    x = tokens[: n * length].view(n, length)
    y = tokens[1 : n * length + 1].view(n, length)  # the next byte at every position
    return TensorDataset(x.contiguous(), y.contiguous())


@DATASETS.register(
    "pysource",
    description="Python standard library source as bytes (language model; next byte, held-out files)",
    input_shape=(128,),
    num_classes=VOCAB_SIZE,
    needs_files=False,
    task="language-model",
)
def load_pysource(
    *,
    seq_len: int = 128,
    train_bytes: int = 1_200_000,
    test_sequences: int = 256,
    root: str | None = None,
) -> DatasetSplits:
    """Next-byte prediction on the standard library's top-level source files.

    A fixed tenth of the files (chosen by a hash of the file name) is held out for testing; train and test are
    the concatenated files (in name order) cut into non-overlapping windows of ``seq_len`` bytes, the targets
    being the same windows shifted by one byte. The corpus is the running interpreter's library, so it is the same
    for every run on one Python version (the description names the version).

    Args:
        seq_len: tokens per sequence.
        train_bytes: bytes of training text used (the first ones, in file order).
        test_sequences: held-out sequences (``None``-free: a fixed count keeps evaluation time bounded).
        root: the standard library folder (default: the running interpreter's).

    Example:
        >>> d = load_pysource(train_bytes=20_000, test_sequences=8)
        >>> d.train[0][0].shape, d.task, len(d.test)
        (torch.Size([128]), 'language-model', 8)
    """
    check_range("seq_len", seq_len, 2, hint="use seq_len=128")
    check_range("train_bytes", train_bytes, seq_len + 1, hint="use train_bytes=1_200_000")
    check_range("test_sequences", test_sequences, 1, hint="use test_sequences=256")
    files = stdlib_source_files(root)
    train, test = bytearray(), bytearray()
    for f in files:
        target = test if _held_out(f.name) else train
        if target is train and len(train) >= train_bytes + 1:
            continue
        target += f.read_bytes() + b"\n"
    splits = DatasetSplits(
        name="pysource",
        train=_windows(bytes(train[: train_bytes + 1]), seq_len, None),
        test=_windows(bytes(test), seq_len, test_sequences),
        input_shape=(seq_len,),
        num_classes=VOCAB_SIZE,
        task="language-model",
    )
    log.info("pysource (Python %d.%d): %s", *sys.version_info[:2], splits.describe())
    return splits


def docstring_sentences(
    limit: int | None = None, *, every_sentence: bool = False, min_words: int = 5, max_words: int = 40
) -> list[str]:
    """English sentences from the standard library's own docstrings (the summary paragraph of every documented
    module, class and function in its top-level source files; with ``every_sentence``, every sentence of every
    paragraph), read offline from the running interpreter, deduplicated and in a fixed order: an embedded sentence
    set for text encoders.

    Example:
        >>> s = docstring_sentences(50)
        >>> len(s), all(5 <= len(x.split()) <= 40 for x in s)
        (50, True)
    """
    import ast

    seen: dict[str, None] = {}
    for path in stdlib_source_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            paragraphs = [" ".join(p.split()) for p in doc.strip().split("\n\n")]
            if every_sentence:
                texts = [t.strip() for p in paragraphs for t in p.replace("? ", ". ").split(". ")]
            else:
                texts = paragraphs[:1]
            for text in texts:
                if text and min_words <= len(text.split()) <= max_words and text[0].isalpha():
                    seen.setdefault(text, None)
        if limit is not None and len(seen) >= limit:  # files are read in a fixed order: the first ones suffice
            break
    sentences = list(seen)
    return sentences if limit is None else sentences[:limit]
