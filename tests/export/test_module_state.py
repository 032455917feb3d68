"""Models that keep their recurrent state on the module (``self.hidden_cell``, assigned in forward)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeseq.errors import ExportError
from edgeseq.export import check, export


class StoresItsState(nn.Module):
    """stackabuse's airline-passengers LSTM: one series (seq,), batch 1 inside, state kept between calls."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, 16)
        self.linear = nn.Linear(16, 1)
        self.hidden_cell = (torch.zeros(1, 1, 16), torch.zeros(1, 1, 16))

    def forward(self, input_seq: torch.Tensor) -> torch.Tensor:
        lstm_out, self.hidden_cell = self.lstm(input_seq.view(input_seq.size(0), 1, -1), self.hidden_cell)
        return self.linear(lstm_out.view(input_seq.size(0), -1))[-1]


class UsesLen(StoresItsState):
    def forward(self, input_seq: torch.Tensor) -> torch.Tensor:
        lstm_out, self.hidden_cell = self.lstm(input_seq.view(len(input_seq), 1, -1), self.hidden_cell)
        return self.linear(lstm_out.view(len(input_seq), -1))[-1]


def _seeded(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def test_every_call_starts_from_the_state_at_load(tmp_path):
    model, out, log = _seeded(StoresItsState), tmp_path / "s.onnx", []
    x = torch.linspace(0, 1, 12)
    with torch.inference_mode():
        first = model(x)
        assert not torch.equal(model(x), first)  # as written, a second call continues from the first
    model = _seeded(StoresItsState)
    result = export(model, out, input_shape=[12], time_first=True, log=log.append)
    assert result.report.passed
    assert any("forward stores 'hidden_cell' on the module" in m for m in log)
    with torch.inference_mode():  # the loaded model now answers the same on every call, like the file
        np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    assert check(out, model, lengths=[1, 40, 300]).passed


def test_len_of_the_input_is_named_when_it_freezes_the_length(tmp_path):
    with pytest.raises(ExportError, match=r"len\(x\) in forward, a plain number to the tracer"):
        export(_seeded(UsesLen), tmp_path / "s.onnx", input_shape=[12], time_first=True)
