"""Keras activation names -> exact PyTorch modules."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from .modules import HardSigmoid, Lambda

# Names accepted in ``activation=...`` (and the Activation layer).
ACTIVATIONS = (
    "linear", "relu", "relu6", "tanh", "sigmoid", "softmax", "log_softmax", "elu", "selu",
    "softplus", "softsign", "swish", "silu", "gelu", "hard_sigmoid", "hard_silu",
    "hard_swish", "exponential", "leaky_relu", "mish",
)  # fmt: skip


def _softmax(x: torch.Tensor, axis: int = -1) -> torch.Tensor:
    return torch.softmax(x, dim=axis)


def _log_softmax(x: torch.Tensor, axis: int = -1) -> torch.Tensor:
    return torch.log_softmax(x, dim=axis)


def _hard_silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


def _relu6(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, 0.0, 6.0)


def activation_name(spec: Any) -> str:
    """Normalize a serialized activation (string, or Keras 3 ``{'class_name': ..., 'config': ...}``)."""
    if spec is None:
        return "linear"
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        inner = spec.get("config")
        if isinstance(inner, str):
            return inner
        if isinstance(inner, dict) and isinstance(inner.get("name"), str):
            return inner["name"]
        return str(spec.get("class_name", "?"))
    return str(spec)


def make_activation(spec: Any, *, keras_major: int = 3) -> nn.Module | None:
    """Module for a Keras activation, ``None`` for linear; raises KeyError when unknown."""
    name = activation_name(spec)
    if name in ("linear", None):
        return None
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return Lambda(_relu6, "relu6")
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "softmax":
        return Lambda(_softmax, "softmax(axis=-1)")
    if name == "log_softmax":
        return Lambda(_log_softmax, "log_softmax(axis=-1)")
    if name == "elu":
        return nn.ELU(1.0)
    if name == "selu":
        return nn.SELU()
    if name == "softplus":
        return nn.Softplus()
    if name == "softsign":
        return nn.Softsign()
    if name in ("swish", "silu"):
        return nn.SiLU()
    if name == "gelu":
        return nn.GELU()
    if name == "hard_sigmoid":  # Keras 2: clip(0.2x + 0.5); Keras 3: relu6(x + 3) / 6
        return HardSigmoid(0.2 if keras_major < 3 else 1.0 / 6.0)
    if name in ("hard_silu", "hard_swish"):
        return Lambda(_hard_silu, "hard_silu")
    if name == "exponential":
        return Lambda(torch.exp, "exp")
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "mish":
        return nn.Mish()
    raise KeyError(name)


def softmax(axis: int) -> nn.Module:
    """Softmax over ``axis``."""
    return Lambda(functools.partial(_softmax, axis=axis), f"softmax(axis={axis})")


