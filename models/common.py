"""Small building blocks shared by the zoo recipes (torch/numpy only)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

MODELS_DIR = Path(__file__).resolve().parent
CHECKPOINT_DIR = MODELS_DIR / "checkpoints"
DATA_DIR = MODELS_DIR / "data"


def checkpoint_path(name: str) -> Path:
    return CHECKPOINT_DIR / f"{name}.pt"


def eval_set_path(name: str) -> Path:
    return DATA_DIR / f"{name}-test.npz"


def load_pretrained(model: nn.Module, name: str) -> nn.Module:
    """Load ``models/checkpoints/<name>.pt`` (a plain state_dict) into ``model``, in eval mode."""
    path = checkpoint_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found; train it with `python -m models.train {name}`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def finish(model: nn.Module, name: str, pretrained: bool) -> nn.Module:
    if pretrained:
        return load_pretrained(model, name)
    return model.eval()


class Standardize(nn.Module):
    """``(x - mean) / std`` with the statistics stored as buffers (so they travel in the checkpoint
    and the exported graph takes raw values). ``mean``/``std`` broadcast over the last axis."""

    def __init__(self, num_features: int = 1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    @torch.no_grad()
    def set_stats(self, mean, std) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(self.mean.shape))
        std = torch.as_tensor(std, dtype=torch.float32).reshape(self.std.shape)
        self.std.copy_(torch.clamp(std, min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TimeDistributed(nn.Module):
    """Apply ``module`` independently to every step of axis 1 (Keras ``TimeDistributed``).

    ``(batch, steps, *rest) -> (batch * steps, *rest) -> module -> (batch, steps, *out_rest)``.
    Batch and steps stay dynamic in a traced ONNX export (the sizes are read from the input).
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps = x.shape[0], x.shape[1]
        y = self.module(x.flatten(0, 1))
        # reshape, not unflatten: the traced exporter keeps batch/steps dynamic only this way
        return y.reshape(batch, steps, *y.shape[1:])
