import pytest
import torch

from effdl.models import create_model, example_batch


def randomize_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics and affine terms, so that zeroed channels are not zero by accident."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


@pytest.fixture
def make():
    def build(name: str, batch: int = 2):
        torch.manual_seed(0)
        model = randomize_norms(create_model(name))
        x = example_batch(model, batch)
        return model, x

    return build
