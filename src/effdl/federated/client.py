"""What a client does in a round, for each method: receive the global model in the method's wire format, train it
locally with plain SGD, and return its new weights in the same format. The payloads are plain dicts of tensors
(``name -> tensor``), so the in-process simulator and the Flower apps exchange the same thing.

Wire formats (``encode`` / ``decode``):
- float (``fedavg``, ``qat``): every parameter and buffer as float32 (BatchNorm's counter as int64).
- k-bit (``fedaqt``): each layer of :func:`~effdl.federated.quantized.client_layers` as its packed codes
  (``NAME.codes``) and float32 scales (``NAME.scale``); every other tensor as float32.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from effdl.core.errors import CheckpointError
from effdl.federated.config import FederatedConfig
from effdl.federated.quantized import QuantizedLayer, QuantizedWeight, _functional, _unpack, client_layers

__all__ = ["ClientResult", "client_state_bytes", "decode", "encode", "payload_bytes", "train_client"]


def encode(model: nn.Module, config: FederatedConfig) -> dict[str, torch.Tensor]:
    """The global float ``model`` in the wire format of ``config.method`` (what the server sends).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 2))
        >>> sorted(encode(m, FederatedConfig(method="fedaqt", bits=4)))
        ['0.bias', '0.codes', '0.scale']
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if config.method != "fedaqt":
        return state
    for name in client_layers(model):
        q = QuantizedWeight.from_float(state.pop(f"{name}.weight"), config.bits)
        state[f"{name}.codes"], state[f"{name}.scale"] = q.packed, q.scale
    return state


def decode(payload: dict[str, torch.Tensor], model: nn.Module, config: FederatedConfig) -> dict[str, torch.Tensor]:
    """A float state dict for ``model``'s architecture from a payload (what the server averages).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 2))
        >>> c = FederatedConfig(method="fedaqt", bits=8)
        >>> state = decode(encode(m, c), m, c)
        >>> bool((state["0.weight"] - m[0].weight).abs().max() < m[0].weight.abs().max() / 100)
        True
    """
    state = dict(payload)
    if config.method != "fedaqt":
        return state
    for name in client_layers(model):
        shape = tuple(model.get_submodule(name).weight.shape)
        codes = _unpack(state.pop(f"{name}.codes"), config.bits, int(torch.Size(shape).numel())).reshape(shape)
        scale = state.pop(f"{name}.scale")
        state[f"{name}.weight"] = codes.float() * scale.reshape(-1, *([1] * (len(shape) - 1)))
    return state


def payload_bytes(payload: dict[str, torch.Tensor]) -> int:
    """Bytes on the wire: every tensor's data (packed codes, scales, float tensors)."""
    return sum(t.numel() * t.element_size() for t in payload.values())


def _client_model(architecture: nn.Module, payload: dict[str, torch.Tensor], config: FederatedConfig) -> nn.Module:
    """The model a client trains, built from the payload alone (its k-bit layers never hold a float weight)."""
    model = copy.deepcopy(architecture)
    if config.method != "fedaqt":
        model.load_state_dict(payload)
        if config.method == "qat":
            from effdl.quant import QuantConfig, prepare_

            prepare_(model, QuantConfig(bits_w=config.bits, bits_a=None, fold_bn=False))  # float shadow + fake-quant
        return model
    layers = set(client_layers(model))
    for name in layers:
        layer = model.get_submodule(name)
        q = QuantizedWeight(payload[f"{name}.codes"].clone(), payload[f"{name}.scale"].clone(),
                            tuple(layer.weight.shape), config.bits)  # fmt: skip
        new = QuantizedLayer(q, layer.bias, _functional(layer), type(layer).__name__)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    coded = {f"{n}.{part}" for n in layers for part in ("codes", "scale")}
    rest = {k: v for k, v in payload.items() if k not in coded}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    if unexpected or missing:
        raise CheckpointError(
            f"the payload does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}; server and "
            "client must build the same architecture"
        )
    return model


def _upload(model: nn.Module, config: FederatedConfig) -> dict[str, torch.Tensor]:
    if config.method == "fedaqt":
        out: dict[str, torch.Tensor] = {}
        for name, m in model.named_modules():
            if isinstance(m, QuantizedLayer):
                out[f"{name}.codes"], out[f"{name}.scale"] = m.q.packed.clone(), m.q.scale.clone()
        out.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return out
    if config.method == "qat":
        from effdl.quant import dequantize_

        dequantize_(model)  # uploads the float shadow weights (the QAT baseline's client keeps them)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclasses.dataclass
class ClientResult:
    """A client's upload and what its training cost: the bytes of the state it holds between steps (weights,
    optimizer state: none, plain SGD) and the peak bytes of tensors alive during its first training step."""

    payload: dict[str, torch.Tensor]
    examples: int
    loss: float
    state_bytes: int
    step_peak_bytes: int


def client_state_bytes(model: nn.Module) -> int:
    """Bytes of everything the client model holds: parameters, buffers, packed codes and scales."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    total = sum(seen.values())
    return total + sum(m.q.nbytes for m in model.modules() if isinstance(m, QuantizedLayer))


def train_client(
    architecture: nn.Module,
    payload: dict[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    config: FederatedConfig,
    *,
    seed: int,
) -> ClientResult:
    """One client's round: build the model from ``payload``, ``config.local_epochs`` of plain SGD over ``data``
    (``(inputs, labels)``, shuffled with ``seed``), return the upload. The first step is measured exactly
    (:func:`effdl.measure.peak_allocated`).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 3))
        >>> c = FederatedConfig(method="fedaqt", bits=8, batch_size=4)
        >>> r = train_client(m, encode(m, c), (torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])), c, seed=0)
        >>> sorted(r.payload), r.examples
        (['0.bias', '0.codes', '0.scale'], 8)
    """
    from effdl.measure.memory import peak_allocated

    model = _client_model(architecture, payload, config)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, QuantizedLayer):
            m.rounding.lr, m.rounding.stochastic = config.lr, config.rounding == "stochastic"
            m.rounding.generator = generator
    x, y = data
    params = [p for p in model.parameters() if p.requires_grad]
    state_bytes = client_state_bytes(model)
    peak, losses = 0, []

    def step(xb: torch.Tensor, yb: torch.Tensor) -> float:
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()  # k-bit layers update their codes here
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.sub_(config.lr * p.grad)  # plain SGD: no optimizer state
                    p.grad = None
        return float(loss.detach())

    first = True
    for _ in range(config.local_epochs):
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), config.batch_size):
            idx = order[i : i + config.batch_size]
            if first:
                loss, peak = peak_allocated(lambda idx=idx: step(x[idx], y[idx]))
                first = False
            else:
                loss = step(x[idx], y[idx])
            losses.append(loss)
    return ClientResult(_upload(model, config), len(y), sum(losses) / max(len(losses), 1), state_bytes, peak)
