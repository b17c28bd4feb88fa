import pytest
import torch
from torch import nn

from effdl.core.errors import UnsupportedError
from effdl.export import export_onnx, run_onnx
from effdl.models import create_model


@pytest.mark.parametrize("name", ["test_cnn1d", "test_resnet", "test_vit"])
def test_export_matches_pytorch_with_dynamic_batch(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, *model.effdl_spec["input_shape"])
    path = export_onnx(model, x, tmp_path / "m.onnx")
    x5 = torch.randn(5, *model.effdl_spec["input_shape"])
    out = run_onnx(path, x5)[0]
    torch.testing.assert_close(torch.from_numpy(out), model(x5).detach(), atol=1e-4, rtol=1e-4)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


class _NotExportable(nn.Module):
    def forward(self, x):
        return torch.from_numpy(x.numpy() * 2)  # leaves the graph: the exporter cannot follow


def test_failed_export_is_a_clear_error_and_leaves_no_file(tmp_path):
    with pytest.raises(UnsupportedError, match="_NotExportable"):
        export_onnx(_NotExportable(), torch.zeros(2, 3), tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
