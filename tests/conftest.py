import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated datasets go to a temporary cache, never the user's."""
    old = os.environ.get("EFFDL_CACHE")
    os.environ["EFFDL_CACHE"] = str(tmp_path_factory.mktemp("effdl-cache"))
    yield
    if old is None:
        os.environ.pop("EFFDL_CACHE", None)
    else:
        os.environ["EFFDL_CACHE"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
