"""Fashion-MNIST read row by row by a stacked LSTM (the classic "LSTM on MNIST" recipe).

Input: raw pixel values 0..255 as float32, shape (batch, 28 rows, 28 pixels); each image row is
one time step. Output: logits (batch, 10). Normalisation is inside the model.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import Standardize, finish

NAME = "fashion_lstm"
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class FashionLSTM(nn.Module):
    def __init__(self, hidden_size: int = 128, num_layers: int = 2, num_classes: int = 10):
        super().__init__()
        self.norm = Standardize(1)
        self.lstm = nn.LSTM(28, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.norm(x))
        return self.head(out[:, -1])

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        return (torch.randint(0, 256, (2, 28, 28), generator=g).to(torch.float32),)


def build(pretrained: bool = True) -> FashionLSTM:
    return finish(FashionLSTM(), NAME, pretrained)
