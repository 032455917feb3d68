"""What a layer builder gets besides the layer config, and the shared helpers builders use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UnsupportedModelError
from .activations import ACTIVATIONS, activation_name, make_activation
from .reader import layer_name
from .weights import WeightBag


@dataclass
class BuildContext:
    """What a layer builder needs besides the layer's own config."""

    bag: WeightBag
    keras_major: int
    build_model: Callable[[dict[str, Any], BuildContext], nn.Module]
    input_shape: Callable[[], tuple[int | None, ...] | None] = lambda: None
    """The layer's input shape (batch first, None for dynamic axes), or None when unknown."""


class Refused(UnsupportedModelError):
    """A supported layer class used with a setting that cannot be reproduced exactly."""


def refuse(cfg: dict[str, Any], reason: str) -> Refused:
    """One-line error naming the layer, its class and why it cannot be imported."""
    return Refused(f"Keras layer {layer_name(cfg)!r} ({cfg.get('class_name')}): {reason}")


def to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def ints(v: Any) -> list[int]:
    return [int(i) for i in v] if isinstance(v, (list, tuple)) else [int(v)]


def activation_of(cfg: dict[str, Any], ctx: BuildContext, key: str = "activation") -> nn.Module | None:
    spec = cfg["config"].get(key, "linear")
    try:
        return make_activation(spec, keras_major=ctx.keras_major)
    except KeyError:
        raise refuse(
            cfg, f"{key}={activation_name(spec)!r} is not supported (supported: {', '.join(ACTIVATIONS)})"
        ) from None


def then(mod: nn.Module, act: nn.Module | None) -> nn.Module:
    return nn.Sequential(mod, act) if act is not None else mod


def static_len(cfg: dict[str, Any], ctx: BuildContext, axis: int) -> int | None:
    shape = (cfg.get("build_config") or {}).get("input_shape")
    if isinstance(shape, (list, tuple)) and len(shape) > axis and isinstance(shape[axis], int):
        return shape[axis]
    probed = ctx.input_shape()
    return probed[axis] if probed is not None and len(probed) > axis else None


def same_pad(cfg: dict[str, Any], ctx: BuildContext, k_eff: int, stride: int, axis: int) -> tuple[int, int]:
    """Keras/TensorFlow 'same' padding: total split evenly, the extra element at the end."""
    if stride == 1:
        total = k_eff - 1
    else:
        length = static_len(cfg, ctx, axis)
        if length is None:
            if k_eff <= 2:  # total is 0 or 1 for every length, always at the end
                return (0, k_eff - 1)
            raise refuse(
                cfg, "padding='same' with strides > 1 and a window > 2 needs a fixed input length"
            )
        out = (length + stride - 1) // stride
        total = max(0, (out - 1) * stride + k_eff - length)
    return (total // 2, total - total // 2)
