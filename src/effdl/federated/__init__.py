"""Federated training where clients may hold only the quantized model (FedAQT: Ni, Xiao, Rybakov, Meadowlark,
Goldstein, ICASSP 2024): the server keeps a float global model and sends k-bit weights with per-channel scales; a
client stores only the packed integers, dequantizes a layer when it computes, and writes each SGD step straight back
into k bits with stochastic rounding; the server averages the uploads in float (FedAvg). Baselines: float FedAvg and
FedAvg of QAT clients with a float shadow copy. The in-process simulator is the embedded default; the same client and
server logic runs on Flower (``effdl.federated.flower``, extra ``effdl[fl]``).

Example:
    >>> from types import SimpleNamespace
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from effdl.federated import FederatedConfig, run_federated
    >>> x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    >>> data = SimpleNamespace(train=TensorDataset(x, y), test=TensorDataset(x, y))
    >>> result = run_federated(torch.nn.Linear(4, 2), data, FederatedConfig(clients=4, rounds=1, bits=4))
    >>> result.history[0]["round"]
    1
"""

from effdl.federated.client import ClientResult, client_state_bytes, decode, encode, payload_bytes, train_client
from effdl.federated.config import METHODS, SUPPORTED_BITS, FederatedConfig
from effdl.federated.quantized import (
    QuantizedLayer,
    QuantizedWeight,
    client_layers,
    quantize_weight,
    to_quantized_client,
)
from effdl.federated.server import (
    FederatedResult,
    aggregate,
    plot_accuracy,
    run_federated,
    sample_clients,
    server_update,
)
from effdl.federated.split import split_clients
from effdl.federated.study import compare_methods, methods_table

__all__ = [
    "METHODS",
    "SUPPORTED_BITS",
    "ClientResult",
    "FederatedConfig",
    "FederatedResult",
    "QuantizedLayer",
    "QuantizedWeight",
    "aggregate",
    "client_layers",
    "client_state_bytes",
    "compare_methods",
    "decode",
    "encode",
    "methods_table",
    "payload_bytes",
    "plot_accuracy",
    "quantize_weight",
    "run_federated",
    "sample_clients",
    "server_update",
    "split_clients",
    "to_quantized_client",
    "train_client",
]
