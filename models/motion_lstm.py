"""BasicMotions activity recognition from a 6-axis accelerometer + gyroscope stream.

Input: raw sensor values, float32 (batch, seq, 6) — columns: accel x/y/z, gyro x/y/z, 10 Hz;
the recordings are 100 steps (10 s). Output: logits (batch, 4) for
("badminton", "running", "standing", "walking").

Streaming-friendly by design: a unidirectional LSTM, no convolution, and the class is read from
the LAST time step's hidden state through a Linear head, so the model can be run step by step
(carrying the LSTM state) and queried at any time.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import Standardize, finish

NAME = "motion_lstm"
CLASSES = ("badminton", "running", "standing", "walking")
NUM_CHANNELS = 6
SEQ_LEN = 100


class MotionLSTM(nn.Module):
    def __init__(self, hidden_size: int = 64, num_layers: int = 2, num_classes: int = 4):
        super().__init__()
        self.norm = Standardize(NUM_CHANNELS)
        self.lstm = nn.LSTM(NUM_CHANNELS, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.norm(x))
        return self.head(out[:, -1])

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        z = torch.randn(2, SEQ_LEN, NUM_CHANNELS, generator=g)
        return (z * self.norm.std + self.norm.mean,)


def build(pretrained: bool = True) -> MotionLSTM:
    return finish(MotionLSTM(), NAME, pretrained)
