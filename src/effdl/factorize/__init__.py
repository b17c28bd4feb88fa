"""Low-rank factorization: truncated SVD of Linear layers, channel decomposition and Tucker-2 of convolutions, with
ranks from a fixed value, an energy threshold, or a parameter/MAC budget per layer or for the whole model.

Example:
    >>> import torch
    >>> from effdl.models import create_model
    >>> m = create_model("test_cnn1d")
    >>> r = factorize_(m, LowRankConfig(selector="keep", keep=0.5), example_inputs=torch.zeros(2, 1, 40))
    >>> r.after.params < r.before.params
    True
"""

from effdl.core.deprecation import deprecated_config, module_getattr
from effdl.factorize.api import factorize_, factorized_layers, restore_factorized_
from effdl.factorize.config import LowRankConfig
from effdl.factorize.layers import LowRank, factorize_layer
from effdl.factorize.math import energy_kept, energy_rank, singular_values, svd_factors, tucker2_factors
from effdl.factorize.ranks import RANK_SELECTORS, LayerSpectrum

__all__ = [
    "RANK_SELECTORS",
    "LayerSpectrum",
    "LowRank",
    "LowRankConfig",
    "energy_kept",
    "energy_rank",
    "factorize_",
    "factorize_layer",
    "factorized_layers",
    "restore_factorized_",
    "singular_values",
    "svd_factors",
    "tucker2_factors",
]

# the name before the architecture change (one release)
__getattr__ = module_getattr(__name__, {
    "LowRankFactorization": lambda: deprecated_config("LowRankFactorization", LowRankConfig),
})  # fmt: skip
