"""Glyphs: an Omniglot-like few-shot dataset rendered offline from the fonts that ship with matplotlib.

Each class is one Unicode character; its "alphabet" is its script or symbol family (the first word of its Unicode
name: LATIN, GREEK, CYRILLIC, ARABIC, CANADIAN syllabics, BRAILLE, BOX drawing, ...). A class exists when at least
``min_faces`` of the 16 DejaVu and STIX faces shipped with matplotlib draw it; duplicates (the same clean drawing as
an earlier class, e.g. Latin A and Greek Alpha) are dropped. Each instance draws the character in one of the faces
that have it, fits it into a 20-pixel box centred on a ``size`` canvas (as MNIST), and applies a random affine
transform (rotation, shear, scale, shift) and a smooth elastic distortion, so instances of a class differ as
handwritten ones do. Train, validation and test classes are split by alphabet (Lake et al.'s Omniglot protocol:
test alphabets are never seen in training). Deterministic with a seed; cached as uint8 under ``cache_dir()``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import unicodedata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from effdl.core.config import check_range
from effdl.core.errors import ConfigError
from effdl.data.base import cache_dir, read_npz_cache, write_npz_cache

__all__ = ["GlyphSplit", "Glyphs", "load_glyphs"]

log = logging.getLogger(__name__)

VERSION = 1
_BOX = 20  # the glyph's longer side on the canvas, in pixels (MNIST's 20 in 28)
_RENDER_PX = 48  # em size the fonts are rasterized at before fitting into the box
# Unicode name prefixes that are not alphabets of their own: modifiers, super/subscripts, small forms, combining
_SKIP_FAMILIES = {"MODIFIER", "SUPERSCRIPT", "SUBSCRIPT", "SMALL", "COMBINING", "FULLWIDTH", "HALFWIDTH", "DIGIT"}
SPLITS = ("train", "val", "test")


def _faces() -> list[Path]:
    import matplotlib

    root = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    faces = sorted(p for p in root.glob("*.ttf") if p.name.startswith(("DejaVuSans", "DejaVuSerif", "STIXGeneral"))
                   and "Display" not in p.name)  # fmt: skip
    if not faces:
        raise ConfigError(f"no DejaVu or STIX fonts under {root}; reinstall matplotlib (pip install matplotlib)")
    return faces


@dataclasses.dataclass
class GlyphSplit:
    """One split (train, val or test): its images, labels (``0..classes-1`` within the split), and per class its
    character and alphabet.

    Attributes:
        images: ``(n, 1, size, size)`` float32 in [0, 1] (white glyph on black).
        labels: ``(n,)`` int64.
        chars: the character of each class.
        alphabets: the alphabet of each class.
    """

    images: torch.Tensor
    labels: torch.Tensor
    chars: list[str]
    alphabets: list[str]

    @property
    def num_classes(self) -> int:
        """Classes in this split."""
        return len(self.chars)

    def dataset(self) -> TensorDataset:
        """``(image, label)`` pairs."""
        return TensorDataset(self.images, self.labels)


@dataclasses.dataclass
class Glyphs:
    """The glyph dataset: train, val and test splits with disjoint alphabets.

    Attributes:
        train, val, test: the splits.
        instances: images per class.
        size: image side in pixels.
        seed: the generator's seed.
    """

    train: GlyphSplit
    val: GlyphSplit
    test: GlyphSplit
    instances: int
    size: int
    seed: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image."""
        return (1, self.size, self.size)

    def split(self, name: str) -> GlyphSplit:
        """The split called ``name`` (train, val or test)."""
        if name not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        return getattr(self, name)

    def describe(self) -> str:
        """One line: classes and alphabets per split."""
        parts = [f"{n} {s.num_classes} classes / {len(set(s.alphabets))} alphabets"
                 for n, s in zip(SPLITS, (self.train, self.val, self.test), strict=True)]  # fmt: skip
        return f"glyphs: {self.instances} instances of {self.size}x{self.size}; " + ", ".join(parts)


def load_glyphs(
    *,
    instances: int = 20,
    size: int = 28,
    max_per_alphabet: int = 100,
    min_faces: int = 4,
    alphabets: tuple[str, ...] | None = None,
    seed: int = 0,
    cache: bool = True,
) -> Glyphs:
    """Renders (or reads from the cache) the glyph dataset.

    Args:
        instances: images per class (Omniglot has 20).
        size: image side in pixels (at least 20).
        max_per_alphabet: classes kept per alphabet at most (drawn with ``seed``), so that large scripts (Latin
            has ~1,000 characters in these fonts) do not swamp the others.
        min_faces: a character becomes a class when at least this many of the 16 faces draw it.
        alphabets: only these alphabets (e.g. ``("GREEK", "CYRILLIC", "BRAILLE")``; None: all with >= 20 classes);
            the split then still goes by alphabet.
        seed: seeds the class selection, the split, the faces and the distortions.
        cache: read and write ``glyphs_v1_<settings>.npz`` under :func:`effdl.data.cache_dir`.

    Example:
        >>> g = load_glyphs(instances=2, alphabets=("GREEK", "CYRILLIC", "HEBREW"), max_per_alphabet=10, cache=False)
        >>> g.train.images.shape[1:], len(set(g.train.alphabets + g.val.alphabets + g.test.alphabets))
        (torch.Size([1, 28, 28]), 3)
    """
    check_range("instances", instances, 1, hint="use instances=20 (as Omniglot)")
    check_range("size", size, _BOX, hint="use size=28")
    check_range("max_per_alphabet", max_per_alphabet, 2, hint="use max_per_alphabet=100")
    check_range("min_faces", min_faces, 1, 16, hint="use min_faces=4")
    settings = {"v": VERSION, "instances": instances, "size": size, "max": max_per_alphabet, "faces": min_faces,
                "alphabets": sorted(alphabets) if alphabets else None, "seed": seed}  # fmt: skip
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"glyphs_v{VERSION}_{tag}.npz"
    arrays = read_npz_cache(path, ("images", "labels", "chars", "alphabets"), "glyph") if cache else None
    if arrays is None:
        arrays = _generate(instances, size, max_per_alphabet, min_faces, alphabets, seed)
        if cache:
            write_npz_cache(path, arrays, "glyph", compress=True)
    return _splits(arrays, instances, size, seed)


def _classes(faces: list[Path], min_faces: int) -> dict[str, list[tuple[str, list[int]]]]:
    """Alphabet -> [(character, indices of the faces that draw it)], in code point order."""
    from matplotlib import ft2font

    cover: dict[int, list[int]] = {}
    for i, face in enumerate(faces):
        for cp in ft2font.FT2Font(str(face)).get_charmap():
            cover.setdefault(cp, []).append(i)
    out: dict[str, list[tuple[str, list[int]]]] = {}
    for cp in sorted(cover):
        ch = chr(cp)
        if len(cover[cp]) < min_faces or unicodedata.category(ch)[0] not in "LS":
            continue
        try:
            family = unicodedata.name(ch).split()[0]
        except ValueError:
            continue
        if family not in _SKIP_FAMILIES:
            out.setdefault(family, []).append((ch, cover[cp]))
    return out


def _render(font, ch: str, size: int) -> np.ndarray | None:
    """The character drawn by ``font``, fitted into the box and centred on a ``size`` canvas (float32 in [0, 1]);
    None when the face draws nothing visible."""
    font.set_text(ch, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    img = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.nonzero(img > 0.1)
    if rows.size < 4:
        return None
    img = img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = img.shape
    scale = _BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = F.interpolate(torch.from_numpy(img)[None, None], size=(nh, nw), mode="bilinear", antialias=True,
                          align_corners=False)[0, 0].clamp(0, 1).numpy()  # fmt: skip
    canvas = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top : top + nh, left : left + nw] = small
    return canvas


def _distort(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random affine transforms and smooth elastic displacements, one per image: ``(n, 1, s, s)`` -> same."""
    n, _, s, _ = images.shape
    u = torch.rand(n, 6, generator=g)
    angle = (u[:, 0] - 0.5) * math.radians(30)  # +-15 degrees
    shear = (u[:, 1] - 0.5) * 0.5  # +-0.25
    scale = 0.85 + 0.25 * u[:, 2:4]  # per axis, 0.85 .. 1.10
    shift = (u[:, 4:6] - 0.5) * (4.0 / s)  # +-2 pixels (normalized coordinates span 2 over s pixels)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos / scale[:, 0]
    theta[:, 0, 1] = (-sin + shear) / scale[:, 0]
    theta[:, 1, 0] = sin / scale[:, 1]
    theta[:, 1, 1] = cos / scale[:, 1]
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # elastic: a coarse 4x4 random field, upsampled smoothly, about 1 pixel of displacement
    coarse = torch.randn(n, 2, 4, 4, generator=g) * (2.0 / s)
    field = F.interpolate(coarse, size=(s, s), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    return F.grid_sample(images, grid + field, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


def _generate(instances: int, size: int, max_per: int, min_faces: int, only, seed: int) -> dict[str, np.ndarray]:
    from matplotlib import ft2font

    faces = _faces()
    fonts = []
    for face in faces:
        font = ft2font.FT2Font(str(face))
        font.set_size(_RENDER_PX, 72)
        fonts.append(font)
    families = _classes(faces, min_faces)
    if only:
        unknown = sorted(set(only) - set(families))
        if unknown:
            raise ConfigError(f"unknown alphabets {unknown}; choose among: {', '.join(sorted(families))}")
        families = {k: v for k, v in families.items() if k in only}
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    seen: set[bytes] = set()
    images, labels, chars, alphabets = [], [], [], []
    for family in sorted(families):
        members = families[family]
        order = rng.permutation(len(members))
        kept = 0
        for j in order:
            if kept >= max_per:
                break
            ch, face_ids = members[j]
            clean = {f: _render(fonts[f], ch, size) for f in face_ids}
            clean = {f: img for f, img in clean.items() if img is not None}
            if len(clean) < min_faces:
                continue
            key = (next(iter(clean.values())) > 0.5).tobytes()  # the same drawing as a class kept before
            if key in seen:
                continue
            seen.add(key)
            pick = rng.choice(sorted(clean), size=instances, replace=len(clean) < instances)
            base = torch.from_numpy(np.stack([clean[f] for f in pick]))[:, None]
            images.append((_distort(base, g) * 255).round().to(torch.uint8).numpy())
            labels.append(np.full(instances, len(chars), dtype=np.int64))
            chars.append(ch)
            alphabets.append(family)
            kept += 1
    keep = [a for a in sorted(set(alphabets)) if alphabets.count(a) >= (20 if not only else 2)]
    idx = [i for i, a in enumerate(alphabets) if a in keep]
    if len(keep) < 3:
        raise ConfigError(f"the glyph dataset needs at least 3 alphabets to split by alphabet, got {keep}")
    log.info("glyphs: %d classes in %d alphabets, %d instances each", len(idx), len(keep), instances)
    return {
        "images": np.concatenate([images[i] for i in idx]),
        "labels": np.concatenate([np.full(instances, k, dtype=np.int64) for k in range(len(idx))]),
        "chars": np.array([chars[i] for i in idx]),
        "alphabets": np.array([alphabets[i] for i in idx]),
    }


def _splits(arrays: dict[str, np.ndarray], instances: int, size: int, seed: int) -> Glyphs:
    chars, alphabets = [str(c) for c in arrays["chars"]], [str(a) for a in arrays["alphabets"]]
    names = sorted(set(alphabets))
    order = np.random.default_rng(seed + 1).permutation(len(names))
    counts = {a: alphabets.count(a) for a in names}
    total = len(chars)
    split_of, filled = {}, {"test": 0, "val": 0}
    # alphabets in a seeded order fill test to 25% of the classes, then val to 10%, the rest train
    for i in order:
        name = names[i]
        if filled["test"] < 0.25 * total and len(split_of) < len(names) - 2:
            split_of[name] = "test"
            filled["test"] += counts[name]
        elif filled["val"] < 0.10 * total and len(split_of) < len(names) - 1:
            split_of[name] = "val"
            filled["val"] += counts[name]
        else:
            split_of[name] = "train"
    images = torch.from_numpy(arrays["images"]).float().div_(255.0)
    if images.dim() == 3:
        images = images[:, None]
    out = {}
    for split in SPLITS:
        classes = [c for c in range(total) if split_of[alphabets[c]] == split]
        rows = torch.cat([torch.arange(c * instances, (c + 1) * instances) for c in classes])
        out[split] = GlyphSplit(
            images=images[rows].contiguous(),
            labels=torch.arange(len(classes)).repeat_interleave(instances),
            chars=[chars[c] for c in classes],
            alphabets=[alphabets[c] for c in classes],
        )
    return Glyphs(**out, instances=instances, size=size, seed=seed)
