"""JapaneseVowels speaker recognition with a bidirectional GRU over variable-length sequences.

Input: raw LPC cepstrum coefficients, float32 (batch, seq, 12), right-padded with zeros; seq is
7..29 frames in the data. Output: logits (batch, 9 speakers).

``forward(x, lengths=None)``: with ``lengths`` (int64, batch) the padded steps are skipped with
``pack_padded_sequence`` (PyTorch training/eval path). Without it the whole padded input is read,
which is exact for unpadded input (e.g. one length group at a time). The head reads the GRU's
final states ``h_n`` (forward direction: last valid step; backward direction: step 0), so an
exported graph becomes exact for padded batches once ``lengths`` is wired to ONNX's
``sequence_lens``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.common import Standardize, finish

NAME = "vowels_bigru"
NUM_CHANNELS = 12


class VowelsBiGRU(nn.Module):
    def __init__(self, hidden_size: int = 64, num_classes: int = 9, dropout: float = 0.2):
        super().__init__()
        self.norm = Standardize(NUM_CHANNELS)
        self.gru = nn.GRU(NUM_CHANNELS, hidden_size, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden_size, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(x)  # (2, batch, hidden): [forward final, backward final]
        return self.head(self.dropout(torch.cat([h[-2], h[-1]], dim=-1)))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        z = torch.randn(2, 20, NUM_CHANNELS, generator=g)
        return (z * self.norm.std + self.norm.mean,)


def build(pretrained: bool = True) -> VowelsBiGRU:
    return finish(VowelsBiGRU(), NAME, pretrained)
