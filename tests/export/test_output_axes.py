"""Output axes found at export: a pooled time axis stays dynamic, a squeezed batch axis is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeseq import Session
from edgeseq.errors import UnsupportedModelError
from edgeseq.export import export


class PooledTagger(nn.Module):
    """MaxPool1d(2) before the LSTM: T // 2 outputs, which do not move between T = 8 and 9."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool1d(2)
        self.rnn = nn.LSTM(6, 16, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.rnn(self.pool(x.transpose(1, 2)).transpose(1, 2))[0])


class SqueezedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 16, batch_first=True)
        self.fc = nn.Linear(16, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc(self.rnn(x)[1][-1])).squeeze()  # (batch,), but () at batch 1


def test_a_pooled_time_axis_is_not_frozen_and_lists_come_back_at_the_longest_output(tmp_path):
    torch.manual_seed(0)
    net = PooledTagger().eval()
    path = tmp_path / "p.onnx"
    export(net, path, input_shape=(2, 8, 6))
    s = Session(path, device="cpu")
    assert s.outputs[0].shape == ("batch", "seq_out", 3)  # not [batch, 4, 3]; a name of its own: T // 2 steps
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((30, 6)).astype(np.float32), rng.standard_normal((51, 6)).astype(np.float32)
    y = s.predict([a, b])
    assert y.shape == (2, 25, 3)
    with torch.inference_mode():
        want_a, want_b = (net(torch.from_numpy(q[None])).numpy()[0] for q in (a, b))
    np.testing.assert_allclose(y[0, :15], want_a, atol=1e-5)
    np.testing.assert_allclose(y[0, 15:], np.broadcast_to(want_a[-1], (10, 3)), atol=1e-5)  # its last step, held
    np.testing.assert_allclose(y[1], want_b, atol=1e-5)


def test_a_bare_squeeze_that_drops_the_batch_axis_at_batch_1_is_refused(tmp_path):
    out = tmp_path / "s.onnx"
    with pytest.raises(UnsupportedModelError, match=r"loses an axis when the batch is 1 .*\.squeeze\(-1\)"):
        export(SqueezedHead(), out, input_shape=(2, 8, 4))
    assert not out.exists()


def test_a_model_that_needs_a_few_steps_records_them_and_refuses_shorter(tmp_path):
    """MaxPool1d(2) fails on one step in PyTorch; ONNX Runtime would answer it."""
    from edgeseq.errors import InputError

    torch.manual_seed(0)
    path = tmp_path / "p.onnx"
    export(PooledTagger().eval(), path, input_shape=(2, 8, 6))
    s = Session(path, device="cpu")
    assert s.card["min_steps"] == 2
    with pytest.raises(InputError, match="has sequences of 1 steps; this model needs at least 2"):
        s.predict(np.zeros((3, 1, 6), np.float32))
    with pytest.raises(InputError, match="sample 0 has 1 steps; this model needs at least 2"):
        s.predict([np.zeros((1, 6), np.float32), np.zeros((9, 6), np.float32)])
    assert s.predict(np.zeros((3, 2, 6), np.float32)).shape == (3, 1, 3)
