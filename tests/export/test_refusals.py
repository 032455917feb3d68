"""Models that cannot be exported correctly are refused with one clear line and no file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeseq.errors import ExportError
from edgeseq.export import export


class CellLoop(nn.Module):
    """Steps an LSTMCell in a Python loop: the exporters unroll it to the example's length."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(4, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], 16)
        c = x.new_zeros(x.shape[0], 16)
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
        return self.head(h)


@pytest.mark.parametrize("exporter", ["auto", "torchscript", "dynamo"])
def test_python_loop_over_lstmcell_is_refused(tmp_path, exporter):
    out = tmp_path / "loop.onnx"
    with pytest.raises(ExportError, match="frozen or unrolled") as info:
        export(CellLoop(), out, exporter=exporter)
    assert "LSTMCell" in str(info.value) or "'cell'" in str(info.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_no_check_skips_the_gate_but_still_writes_a_card(tmp_path):
    from edgeseq.card import read_card
    from models.families import gru

    out = tmp_path / "g.onnx"
    export(gru(), out, check=False)
    assert read_card(out)["parity"]["passed"] is None


def test_input_shape_and_dynamic_axes_for_rank4(tmp_path):
    from edgeseq.card import read_card
    from edgeseq.export import parity
    from models.families import CNNLSTM

    class Undeclared(CNNLSTM):
        example_inputs = None  # no declared example: --input-shape must be used

    out = tmp_path / "cnn.onnx"
    model = Undeclared(sub_len=4)
    export(model, out, input_shape=[1, 10, 4, 1], dynamic_axes=[0, 1])
    card = read_card(out)
    assert card["inputs"][0]["symbolic_shape"] == ["batch", "seq", 4, 1]
    report = parity.measure(out, model, batch_sizes=[1, 5], lengths=[1, 3, 40])
    assert report.passed


def test_time_first_model_without_flag_is_refused_then_exports_with_it(tmp_path):
    class TimeFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(5, 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):  # (seq, batch, features)
            return self.fc(self.rnn(x)[0][-1])

    out = tmp_path / "tf.onnx"
    with pytest.raises(ExportError, match="pass --time-first"):
        export(TimeFirst(), out)
    assert not out.exists()
    model = TimeFirst().eval()
    result = export(model, out, time_first=True)
    assert result.card["layout"] == "time_first"
    import numpy as np

    from edgeseq import Session

    x = torch.randn(6, 4, 5)  # 6 steps, 4 samples
    expected = model(x).detach().numpy()
    got = Session(out, device="cpu").predict(x.numpy(), batch_size=3)  # chunks along the batch axis (1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
