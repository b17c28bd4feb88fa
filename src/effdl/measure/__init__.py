"""Measurement: parameters, MACs, serialized size, peak memory and CPU latency, per layer and in total.

Example:
    >>> import torch
    >>> from effdl.measure import count_macs
    >>> count_macs(torch.nn.Linear(40, 10), torch.zeros(1, 40))
    400
"""

from effdl.measure.curvature import hessian_trace
from effdl.measure.evaluation import evaluate, sqnr_db, stack_batches
from effdl.measure.latency import LatencyStats, compare_latency, measure_latency, num_threads
from effdl.measure.macs import count_macs, module_macs
from effdl.measure.memory import MemoryStats, peak_allocated, peak_forward_memory
from effdl.measure.profiler import LayerProfile, Profile, profile
from effdl.measure.size import count_nonzero_params, count_params, serialized_size
from effdl.measure.summary import MeasureConfig, summarize, summarize_quantized

__all__ = [
    "LatencyStats",
    "LayerProfile",
    "MeasureConfig",
    "MemoryStats",
    "Profile",
    "compare_latency",
    "count_macs",
    "count_nonzero_params",
    "count_params",
    "evaluate",
    "hessian_trace",
    "measure_latency",
    "module_macs",
    "num_threads",
    "peak_allocated",
    "peak_forward_memory",
    "profile",
    "serialized_size",
    "sqnr_db",
    "stack_batches",
    "summarize",
    "summarize_quantized",
]
