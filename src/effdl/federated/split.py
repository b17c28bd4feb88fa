"""Splitting a labelled dataset across clients: IID shares, or non-IID with label proportions drawn from a
Dirichlet distribution per class (Hsu et al. 2019, the usual federated benchmark split)."""

from __future__ import annotations

import numpy as np

from effdl.core.errors import ConfigError

__all__ = ["split_clients"]


def split_clients(
    labels: np.ndarray, clients: int, *, split: str = "dirichlet", alpha: float = 0.5, seed: int = 0
) -> list[np.ndarray]:
    """Indices of each client's examples. Every example goes to exactly one client and every client gets at least
    one; ``dirichlet`` draws, for each class, the share of its examples each client receives from Dirichlet(alpha)
    (redrawn until no client is empty).

    Example:
        >>> labels = np.repeat(np.arange(4), 25)
        >>> parts = split_clients(labels, 5, split="dirichlet", alpha=0.3, seed=0)
        >>> sorted(np.concatenate(parts).tolist()) == list(range(100)), min(len(p) for p in parts) > 0
        (True, True)
    """
    labels = np.asarray(labels)
    n = len(labels)
    if clients > n:
        raise ConfigError(f"{clients} clients need at least {clients} examples, the dataset has {n}; use fewer clients")
    rng = np.random.default_rng(seed)
    if split == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(n), clients)]
    if split != "dirichlet":
        raise ConfigError(f"split must be 'iid' or 'dirichlet', got {split!r}")
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) > 0:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ConfigError(
        f"a Dirichlet split with alpha={alpha} left a client empty 100 times ({clients} clients, {n} examples); "
        "raise alpha or use fewer clients"
    )
