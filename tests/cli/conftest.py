import pytest
import torch

from effdl.data import get_dataset
from effdl.models import create_model, save_model
from effdl.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cnn1d trained for 2 epochs on MNIST-1D, saved with its dataset name."""
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    torch.manual_seed(0)
    model = create_model("cnn1d")
    data = get_dataset("mnist1d")
    Trainer(model, TrainConfig(epochs=2, lr=1e-2, batch_size=128, progress=False)).fit(data.train)
    save_model(model, path, meta={"dataset": "mnist1d"})
    return path
