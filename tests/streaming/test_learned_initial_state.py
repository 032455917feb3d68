"""A learned initial state (an nn.Parameter passed as h0/c0) streams: every stream starts from it, not zeros."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeseq import Session, StreamingSession
from edgeseq.card import read_card
from edgeseq.export.stateful import export_with_extras
from edgeseq.runtime.pool import StreamPool


class LearnedStart(nn.Module):
    """Stacked LSTM with learned h0/c0 (the same for every sample) and an output per step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 16, num_layers=2, batch_first=True)
        self.h0 = nn.Parameter(torch.randn(2, 1, 16))
        self.c0 = nn.Parameter(torch.randn(2, 1, 16))
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        b = x.size(0)
        state = (self.h0.expand(-1, b, -1).contiguous(), self.c0.expand(-1, b, -1).contiguous())
        return self.fc(self.lstm(x, state)[0])


def _exported(tmp_path):
    torch.manual_seed(0)
    model = LearnedStart().eval()
    path = tmp_path / "stream.onnx"
    export_with_extras(model, path, streaming=True)
    x = np.random.default_rng(0).standard_normal((3, 13, 4)).astype(np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    return path, x, want


def test_streams_start_from_the_learned_state(tmp_path):
    path, x, want = _exported(tmp_path)
    states = read_card(path)["streaming"]["layers"][0]["states"]
    assert [len(s["initial"]) for s in states] == [2, 2]  # (layers, hidden) per state, in the card
    from click.testing import CliRunner

    from edgeseq.cli import main

    assert "starting from a learned state" in CliRunner().invoke(main, ["inspect", str(path)]).output
    s = StreamingSession(path, device="cpu")
    for _ in range(2):  # and again after reset(): it starts from the learned state, not zeros
        got = np.concatenate([s.step(x[:, t : t + 4]) for t in range(0, 13, 4)], axis=1)
        np.testing.assert_allclose(got, want, atol=1e-5)
        s.reset()
    outs, _ = s.run_with_state(x, None)
    np.testing.assert_allclose(outs["y"], want, atol=1e-5)
    np.testing.assert_allclose(Session(path, device="cpu").predict(x), want, atol=1e-5)  # the plain runtime too


def test_a_stream_joining_a_pool_late_starts_from_the_learned_state(tmp_path):
    path, x, want = _exported(tmp_path)
    pool = StreamPool(path, device="cpu")
    first = pool.join()
    for t in range(5):
        pool.step({first: x[0, t]})
    late = pool.join()
    rows = [pool.step({first: x[0, 5 + t], late: x[1, t]})[late] for t in range(8)]
    np.testing.assert_allclose(np.concatenate(rows), want[1, :8], atol=1e-5)
