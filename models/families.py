"""Reference architectures for every family in the LSTM guide, with random weights.

Each is a plain ``nn.Module`` with an ``example_inputs()`` method; the trained zoo
recipes (``fashion_lstm.py`` ...) are built from the same ideas.  Tests parametrize over
``FAMILIES``.  Export one with::

    edgeseq export models/families.py:stacked_lstm -o lstm.onnx
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.common import TimeDistributed  # the zoo's Keras-style wrapper, shared


class StackedLSTMClassifier(nn.Module):
    """Stacked LSTM reading a sequence (e.g. an image row by row), classifying from the last step."""

    def __init__(self, features: int = 28, hidden: int = 64, layers: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.features = features
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, 12, self.features),)


class GRUClassifier(nn.Module):
    """Single GRU, classifying from the final hidden state."""

    def __init__(self, features: int = 12, hidden: int = 48, classes: int = 9) -> None:
        super().__init__()
        self.features = features
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.head(h[-1])

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, 10, self.features),)


class BiRNNClassifier(nn.Module):
    """Bidirectional stacked LSTM or GRU, concatenating both directions' final states."""

    def __init__(self, cell: str = "lstm", features: int = 6, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.features = features
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(features, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, 10, self.features),)


class _ChannelsFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, C) -> (N, C, L)
        return x.transpose(1, 2)


class CNNLSTM(nn.Module):
    """CNN-LSTM over sub-sequences (B, S, L, F): a CNN per sub-sequence, an LSTM over sub-sequences.

    ``per_layer=False`` wraps the whole CNN in one TimeDistributed (the guide's approach 1);
    ``per_layer=True`` wraps each layer in its own TimeDistributed (approach 2).
    """

    def __init__(self, sub_len: int = 4, features: int = 1, filters: int = 16, hidden: int = 32,
                 per_layer: bool = False) -> None:
        super().__init__()
        self.sub_len, self.features = sub_len, features
        layers = [_ChannelsFirst(), nn.Conv1d(features, filters, kernel_size=2), nn.ReLU(),
                  nn.MaxPool1d(2), nn.Flatten()]
        if per_layer:
            self.cnn = nn.Sequential(*[TimeDistributed(m) for m in layers])
        else:
            self.cnn = TimeDistributed(nn.Sequential(*layers))
        self.lstm = nn.LSTM(filters * ((sub_len - 1) // 2), hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.cnn(x))
        return self.head(out[:, -1])

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, 6, self.sub_len, self.features),)


class Conv1dLSTM(nn.Module):
    """Conv1d front-end over time (B, T, F) followed by an LSTM: the flat CNN-LSTM."""

    def __init__(self, features: int = 6, filters: int = 16, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.features = features
        self.conv = nn.Conv1d(features, filters, kernel_size=3, padding=1)
        self.lstm = nn.LSTM(filters, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        out, _ = self.lstm(z)
        return self.head(out[:, -1])

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, 10, self.features),)


class CausalConvLSTM(nn.Module):
    """Causal Conv1d front-end over time (padded on the left only, dilated) and an LSTM: streams exactly."""

    def __init__(self, features: int = 6, filters: int = 16, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.features = features
        self.conv = nn.Conv1d(features, filters, kernel_size=3, dilation=2)
        self.lstm = nn.LSTM(filters, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = (self.conv.kernel_size[0] - 1) * self.conv.dilation[0]
        z = F.pad(x.transpose(1, 2), (context, 0))  # step t sees steps t-4, t-2, t only
        out, _ = self.lstm(torch.relu(self.conv(z)).transpose(1, 2))
        return self.head(out[:, -1])

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, 10, self.features),)


class EmbeddingBiLSTM(nn.Module):
    """Embedding + bidirectional LSTM text classifier over int64 token ids (B, T)."""

    def __init__(self, vocab: int = 500, dim: int = 32, hidden: int = 32, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.embed(ids))
        return self.head(torch.cat([h[-2], h[-1]], dim=-1))


def _seeded(make, seed: int = 0) -> nn.Module:
    """Build with fixed random weights, so every call of a factory returns the same model."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def stacked_lstm() -> nn.Module:
    return _seeded(lambda: StackedLSTMClassifier())


def gru() -> nn.Module:
    return _seeded(lambda: GRUClassifier())


def bilstm() -> nn.Module:
    return _seeded(lambda: BiRNNClassifier("lstm"))


def bigru() -> nn.Module:
    return _seeded(lambda: BiRNNClassifier("gru"))


def cnn_lstm() -> nn.Module:
    return _seeded(lambda: CNNLSTM(per_layer=False))


def cnn_lstm_per_layer() -> nn.Module:
    return _seeded(lambda: CNNLSTM(per_layer=True))


def conv1d_lstm() -> nn.Module:
    return _seeded(lambda: Conv1dLSTM())


def causal_conv_lstm() -> nn.Module:
    return _seeded(CausalConvLSTM)


def text_bilstm() -> nn.Module:
    return _seeded(lambda: EmbeddingBiLSTM())


FAMILIES = {
    "stacked_lstm": stacked_lstm,
    "gru": gru,
    "bilstm": bilstm,
    "bigru": bigru,
    "cnn_lstm": cnn_lstm,
    "cnn_lstm_per_layer": cnn_lstm_per_layer,
    "conv1d_lstm": conv1d_lstm,
    "causal_conv_lstm": causal_conv_lstm,
    "text_bilstm": text_bilstm,
}
