import pytest
import torch
from torch.utils.data import TensorDataset

from effdl.models import create_model


@pytest.fixture
def net():
    """A tiny 1D CNN with BatchNorm (so buffers exist) in eval-ready state."""
    torch.manual_seed(0)
    model = create_model("test_cnn1d", input_shape=(1, 40), num_classes=10)
    with torch.no_grad():  # non-trivial running statistics
        model.train()
        model(torch.randn(64, 1, 40))
    return model.eval()


@pytest.fixture
def splits():
    g = torch.Generator().manual_seed(1)
    train = TensorDataset(torch.randn(96, 1, 40, generator=g), torch.randint(0, 10, (96,), generator=g))
    test = TensorDataset(torch.randn(40, 1, 40, generator=g), torch.randint(0, 10, (40,), generator=g))
    return {"train": train, "test": test}
