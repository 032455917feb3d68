"""Eval sets with per-sample lengths: the padding is never scored, for several inputs and per-step targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeseq.export import export
from edgeseq.export.check import check
from edgeseq.quantize import quantize


class MetaLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 16, batch_first=True)
        self.meta = nn.Linear(3, 16)
        self.head = nn.Linear(16, 1)

    def forward(self, x, meta):
        return self.head(self.lstm(x)[0][:, -1] + self.meta(meta))

    def example_inputs(self):
        return torch.zeros(2, 100, 4), torch.zeros(2, 3)


class PerStep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 16, batch_first=True)
        self.head = nn.Linear(16, 1)
        nn.init.constant_(self.head.bias, 5.0)  # padded steps' outputs are far from zero targets

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def _padded(rng, n=24, steps=30):
    x = rng.standard_normal((n, steps, 4)).astype(np.float32)
    lengths = rng.integers(1, steps + 1, n)
    for i, length in enumerate(lengths):
        x[i, length:] = 0
    return x, lengths


@pytest.mark.parametrize("kind", ["meta", "per-step"])
def test_eval_mae_is_over_each_samples_own_steps(tmp_path, kind):
    """y is each sample's own PyTorch output + 0.1, so the true MAE is 0.1; counting padding moved it."""
    torch.manual_seed(0)
    model = (MetaLSTM() if kind == "meta" else PerStep()).eval()
    rng = np.random.default_rng(0)
    x, lengths = _padded(rng)
    meta = rng.standard_normal((len(x), 3)).astype(np.float32)
    with torch.inference_mode():
        if kind == "meta":
            y = np.concatenate([model(torch.from_numpy(x[i : i + 1, :n]), torch.from_numpy(meta[i : i + 1])).numpy()
                                for i, n in enumerate(lengths)]) + 0.1
        else:
            y = np.zeros((len(x), x.shape[1], 1), np.float32)
            for i, n in enumerate(lengths):
                y[i, :n] = model(torch.from_numpy(x[i : i + 1, :n])).numpy()[0] + 0.1
    arrays = {"x": x, "lengths": lengths, "y": y.astype(np.float32)}
    if kind == "meta":
        arrays["meta"] = meta
    np.savez(tmp_path / "eval.npz", **arrays)
    path = tmp_path / "m.onnx"
    export(model, path, lengths=True)
    report = check(path, model, lengths=[1, 30], eval_data=tmp_path / "eval.npz")
    metrics = report.extra["metrics"]
    assert metrics["metric"] == "mae"
    assert metrics["pytorch"] == pytest.approx(0.1, abs=1e-4) and metrics["onnx"] == pytest.approx(0.1, abs=1e-4)
    if kind == "meta":  # quantize's own run of several inputs (the per-step case shares check's metric)
        result = quantize(path, tmp_path / "q.onnx", mode="fp16", eval_data=tmp_path / "eval.npz")
        assert result.metric.float_value == pytest.approx(0.1, abs=1e-4)


def test_a_forecast_horizon_is_scored_whole_whatever_the_lengths():
    from edgeseq.metrics import task_metric

    out = np.zeros((2, 7))  # 7 future steps, from histories padded to 30 steps
    y = np.ones((2, 7))
    assert task_metric(out, y, lengths=np.array([3, 30]), steps=30) == ("mae", 1.0)
    per_step = np.zeros((2, 30, 1))
    target = np.ones((2, 30, 1))
    target[0, 3:] = 0  # sample 0's padding: out of the score
    assert task_metric(per_step, target, lengths=np.array([3, 30]), steps=30) == ("mae", 1.0)
