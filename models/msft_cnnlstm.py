"""CNN-LSTM forecaster of the next day's MSFT closing price (the classic CNN-LSTM stock example).

A window of ``N_SUB * SUB_LEN`` = 32 trading days is split into 4 sub-sequences of 8 days; a
small CNN (Conv1d -> ReLU -> MaxPool1d -> Flatten) reads each sub-sequence, an LSTM reads the
sequence of sub-sequence features, and a Linear head gives the forecast.

Input: raw closing prices in dollars, float32 (batch, n_subsequences, SUB_LEN, 1) — rank 4, the
sequence axis is axis 1 (number of sub-sequences; any number works), SUB_LEN is fixed.
Output: next-day close in dollars, float32 (batch, 1).

Scaling lives in the model, so the exported graph maps raw prices to raw prices: the window is
expressed as log-ratios to its last price (scaled by ``ret_scale``), the head predicts the scaled
log-return of the next day, and the forecast is ``last * exp(ret_scale * head)``. A head output
of 0 is exactly the naive last-value forecast.

Two factories, one architecture, differing only in how Keras-style ``TimeDistributed`` is used:
``build()`` wraps the whole CNN (one sub-module) in a single TimeDistributed (approach 1);
``build_per_layer()`` wraps every CNN layer in its own TimeDistributed (approach 2).
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import TimeDistributed, finish

NAME = "msft_cnnlstm"
NAME_PER_LAYER = "msft_cnnlstm_per_layer"
N_SUB = 4
SUB_LEN = 8
N_FEATURES = 1  # closing price


class ChannelsFirst(nn.Module):
    """(n, length, channels) -> (n, channels, length), the layout Conv1d wants."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def _cnn_layers(channels: int, kernel_size: int) -> list[nn.Module]:
    return [
        ChannelsFirst(),
        nn.Conv1d(N_FEATURES, channels, kernel_size, padding=kernel_size // 2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Flatten(),
    ]


class _Forecaster(nn.Module):
    """Shared scaling, LSTM and head; subclasses define ``self.cnn`` (per-sub-sequence features)."""

    def __init__(self, channels: int, hidden_size: int):
        super().__init__()
        self.register_buffer("ret_scale", torch.tensor([0.02]))
        self.lstm = nn.LSTM(channels * (SUB_LEN // 2), hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def scaled_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (last price (batch, 1), scaled log-return prediction (batch, 1))."""
        last = x[:, -1, -1, :]  # (batch, N_FEATURES): last observed close
        rel = torch.log(x / last[:, None, None, :]) / self.ret_scale
        feats = self.cnn(rel)  # (batch, n_sub, channels * SUB_LEN // 2)
        out, _ = self.lstm(feats)
        return last, self.head(out[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last, z = self.scaled_forward(x)
        return last * torch.exp(z * self.ret_scale)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        steps = 0.015 * torch.randn(2, N_SUB * SUB_LEN, generator=g)
        prices = torch.tensor([[50.0], [80.0]]) * torch.exp(torch.cumsum(steps, dim=1))
        return (prices.reshape(2, N_SUB, SUB_LEN, N_FEATURES),)


class MsftCNNLSTM(_Forecaster):
    """Approach 1: the whole CNN is one sub-module applied per sub-sequence."""

    def __init__(self, channels: int = 16, kernel_size: int = 3, hidden_size: int = 32):
        super().__init__(channels, hidden_size)
        self.cnn = TimeDistributed(nn.Sequential(*_cnn_layers(channels, kernel_size)))


class MsftCNNLSTMPerLayer(_Forecaster):
    """Approach 2: every CNN layer wrapped in its own TimeDistributed."""

    def __init__(self, channels: int = 16, kernel_size: int = 3, hidden_size: int = 32):
        super().__init__(channels, hidden_size)
        self.cnn = nn.Sequential(*(TimeDistributed(m) for m in _cnn_layers(channels, kernel_size)))


def build(pretrained: bool = True) -> MsftCNNLSTM:
    return finish(MsftCNNLSTM(), NAME, pretrained)


def build_per_layer(pretrained: bool = True) -> MsftCNNLSTMPerLayer:
    return finish(MsftCNNLSTMPerLayer(), NAME_PER_LAYER, pretrained)
