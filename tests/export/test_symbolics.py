"""Translations edgeseq registers for the TorchScript exporter: ``unfold`` over a dynamic length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeseq import Session
from edgeseq.export import export


class Framed(nn.Module):
    """Raw audio framed in forward: frames of 40 samples every 16, then an LSTM over the frames."""

    def __init__(self, channels_last: bool) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.proj = nn.Linear(40 * (2 if channels_last else 1), 16)
        self.lstm = nn.LSTM(16, 16, batch_first=True)

    def forward(self, wav):
        frames = wav.unfold(1, 40, 16)  # (batch, frames, 40) or (batch, frames, 2, 40)
        return self.lstm(torch.relu(self.proj(frames.flatten(2))))[0]

    def example_inputs(self):
        return (torch.randn(2, 400, 2) if self.channels_last else torch.randn(2, 400),)


@pytest.mark.parametrize("channels_last", [False, True], ids=["mono", "stereo"])
def test_unfold_over_a_dynamic_length_exports_with_torchscript(tmp_path, channels_last):
    torch.manual_seed(0)
    model = Framed(channels_last).eval()
    result = export(model, tmp_path / "m.onnx", exporter="torchscript")  # failed: "input size not accessible"
    assert result.exporter == "torchscript"
    s = Session(tmp_path / "m.onnx", device="cpu")
    for samples in (40, 57, 1000):
        shape = (3, samples, 2) if channels_last else (3, samples)
        x = np.random.default_rng(samples).standard_normal(shape).astype(np.float32)
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(s.predict(x), want, atol=1e-5, rtol=1e-4)
