"""Configuration of a federated run: :class:`FederatedConfig`."""

from __future__ import annotations

import dataclasses

from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import ConfigError

__all__ = ["METHODS", "SUPPORTED_BITS", "FederatedConfig"]

#: ``fedavg``: float clients (FedAvg, McMahan et al. 2017); ``qat``: FedAvg of QAT clients that keep a float shadow
#: copy of the weights; ``fedaqt``: clients hold only k-bit weights and write each update straight back into k bits
#: (FedAQT, Ni et al. ICASSP 2024)
METHODS = ("fedavg", "qat", "fedaqt")
#: weight bit widths with a packed client format (2 and 4 bits: several codes per byte)
SUPPORTED_BITS = (2, 4, 8)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FederatedConfig(Config):
    """A federated training run simulated in one process (or run on Flower with the same client and server logic).

    Args:
        method: ``fedavg``, ``qat`` or ``fedaqt`` (see :data:`METHODS`).
        bits: weight bits of ``qat`` and ``fedaqt`` (2, 4 or 8; per output channel, symmetric).
        rounding: how a ``fedaqt`` client writes its update back into k bits: ``stochastic`` (unbiased) or
            ``nearest`` (the ablation: small updates round away).
        clients: number of clients.
        clients_per_round: clients sampled each round (without replacement, seeded).
        rounds: communication rounds.
        local_epochs: passes over its data a client makes per round.
        batch_size: client batch size.
        lr: client SGD learning rate (plain SGD: no optimizer state on the client, for every method).
        split: ``iid`` (shuffled equal shares) or ``dirichlet`` (label proportions per client ~ Dirichlet(alpha)).
        alpha: Dirichlet concentration (smaller is more skewed).
        seed: seeds the split, the client sampling, the local shuffles and the stochastic rounding.

    Example:
        >>> FederatedConfig(method="fedaqt", bits=4).describe()
        'fedaqt W4 (stochastic rounding), 10 clients, 20 rounds'
        >>> FederatedConfig(bits=3)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: bits must be one of 2, 4, 8, got bits=3; use bits=4 or bits=8
    """

    method: str = "fedaqt"
    bits: int = 8
    rounding: str = "stochastic"
    clients: int = 10
    clients_per_round: int | None = None
    rounds: int = 20
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    split: str = "dirichlet"
    alpha: float = 0.5
    seed: int = 0

    def validate(self) -> None:
        check_choice("method", self.method, METHODS)
        if self.bits not in SUPPORTED_BITS:
            raise ConfigError(
                f"bits must be one of {', '.join(map(str, SUPPORTED_BITS))}, got bits={self.bits}; use bits=4 or bits=8"
            )
        check_choice("rounding", self.rounding, ("stochastic", "nearest"))
        check_choice("split", self.split, ("iid", "dirichlet"))
        check_range("clients", self.clients, 1, hint="use clients=10")
        if self.clients_per_round is not None:
            check_range("clients_per_round", self.clients_per_round, 1, self.clients,
                        hint=f"use at most clients={self.clients}")  # fmt: skip
        check_range("rounds", self.rounds, 1, hint="use rounds=20")
        check_range("local_epochs", self.local_epochs, 1, hint="use local_epochs=1")
        check_range("batch_size", self.batch_size, 1, hint="use batch_size=32")
        check_range("lr", self.lr, 0.0, low_open=True, hint="use lr=0.05")
        check_range("alpha", self.alpha, 0.0, low_open=True, hint="use alpha=0.5")
        for name in ("clients", "rounds", "local_epochs", "batch_size"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"{name} must be an integer, got {getattr(self, name)!r}")

    @property
    def sampled(self) -> int:
        """Clients per round."""
        return self.clients_per_round or self.clients

    def describe(self) -> str:
        what = "fedavg (float)" if self.method == "fedavg" else f"{self.method} W{self.bits}"
        if self.method == "fedaqt":
            what += f" ({self.rounding} rounding)"
        return f"{what}, {self.clients} clients, {self.rounds} rounds"
