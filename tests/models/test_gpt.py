"""The embedded language model: token checks, causal outputs, per-position logits."""

import pytest
import torch

from effdl.core.errors import ShapeError
from effdl.models import create_model, example_batch


def test_outputs_are_causal_and_in_cross_entropy_layout():
    model = create_model("test_gpt").eval()
    x = example_batch(model, 2)
    out = model(x)
    assert out.shape == (2, 256, 16)
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 1) % 256  # changing later tokens never changes earlier predictions
    torch.testing.assert_close(model(y)[:, :, :10], out[:, :, :10])
    assert model.generate(x[:, :4], 3).shape == (2, 7)


@pytest.mark.parametrize(
    ("x", "match"),
    [(torch.randn(2, 16), "integer tokens"), (torch.zeros(2, 17, dtype=torch.long), "at most 16 tokens"),
     (torch.full((1, 4), 300), "vocabulary of 256"), (torch.zeros(16, dtype=torch.long), "unsqueeze")],
)  # fmt: skip
def test_bad_inputs_get_clear_errors(x, match):
    with pytest.raises(ShapeError, match=match):
        create_model("test_gpt")(x)
