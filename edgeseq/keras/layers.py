"""Map one serialized Keras layer (config + weights) to an exact PyTorch module."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelLoadError, UnsupportedModelError
from .activations import softmax
from .context import (
    BuildContext,
    activation_of,
    ints,
    refuse,
    same_pad,
    then,
    to_tensor,
)
from .modules import Affine, ChannelsLast, Embedding, Lambda, TimeDistributed
from .reader import layer_name
from .recurrent import build_bidirectional, build_recurrent

Builder = Callable[[dict[str, Any], dict[str, Any], BuildContext], "nn.Module | None"]

# Layers that do nothing at inference time.
IDENTITY_LAYERS = (
    "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Identity",
)  # fmt: skip
MERGE_LAYERS = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate")
CONTAINERS = ("Sequential", "Functional", "Model")


# -- core ---------------------------------------------------------------------------------------


def _dense(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    units, use_bias = int(c["units"]), bool(c.get("use_bias", True))
    shapes: list[tuple[int | None, ...]] = [(None, units)] + ([(units,)] if use_bias else [])
    w = ctx.bag.take(layer_name(cfg), shapes)
    lin = nn.Linear(w[0].shape[0], units, bias=use_bias)
    with torch.no_grad():
        lin.weight.copy_(to_tensor(w[0].T))
        if use_bias:
            lin.bias.copy_(to_tensor(w[1]))
    return then(lin, activation_of(cfg, ctx))


MASK_ZERO_REFUSAL = ("mask_zero=True is not supported: Keras then skips padded (id 0) steps in later layers, which a "
                     "fixed ONNX graph cannot reproduce; re-save with mask_zero=False (and trim or bucket padding, or "
                     "feed lengths) to import it")


def _embedding(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    if c.get("mask_zero"):
        raise refuse(cfg, MASK_ZERO_REFUSAL)
    (w,) = ctx.bag.take(layer_name(cfg), [(int(c["input_dim"]), int(c["output_dim"]))])
    return Embedding(to_tensor(w))


def _activation(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module | None:
    return activation_of(cfg, ctx)


def _relu(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    if float(c.get("threshold", 0.0) or 0.0) != 0.0:
        raise refuse(cfg, "threshold != 0 is not supported")
    slope = float(c.get("negative_slope", 0.0) or 0.0)
    mod: nn.Module = nn.LeakyReLU(slope) if slope else nn.ReLU()
    max_value = c.get("max_value")
    if max_value is not None:
        mod = nn.Sequential(mod, nn.Hardtanh(-math.inf, float(max_value)))
    return mod


def _leaky_relu(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    return nn.LeakyReLU(float(c.get("negative_slope", c.get("alpha", 0.3))))


def _elu(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    return nn.ELU(float(c.get("alpha", 1.0)))


def _softmax_layer(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    axis = c.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise refuse(cfg, "softmax over several axes is not supported")
        axis = axis[0]
    return softmax(int(axis))


# -- convolution and pooling ---------------------------------------------------------------------


def _channels_first(cfg: dict[str, Any], c: dict[str, Any]) -> bool:
    fmt = c.get("data_format") or "channels_last"
    if fmt not in ("channels_last", "channels_first"):
        raise refuse(cfg, f"data_format={fmt!r} is not supported")
    return fmt == "channels_first"


def _conv1d(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    (k,), (s,) = ints(c["kernel_size"]), ints(c.get("strides", 1))
    (d,) = ints(c.get("dilation_rate", 1))
    filters, groups = int(c["filters"]), int(c.get("groups", 1) or 1)
    use_bias, cf = bool(c.get("use_bias", True)), _channels_first(cfg, c)
    if s != 1 and d != 1:
        raise refuse(cfg, "strides > 1 together with dilation_rate > 1 is not supported")
    padding = str(c.get("padding", "valid")).lower()
    if padding == "valid":
        pad = (0, 0)
    elif padding == "causal":
        pad = (d * (k - 1), 0)
    elif padding == "same":
        pad = same_pad(cfg, ctx, d * (k - 1) + 1, s, 2 if cf else 1)
    else:
        raise refuse(cfg, f"padding={padding!r} is not supported")
    shapes: list[tuple[int | None, ...]] = [(k, None, filters)] + ([(filters,)] if use_bias else [])
    w = ctx.bag.take(layer_name(cfg), shapes)
    conv = nn.Conv1d(w[0].shape[1] * groups, filters, k, stride=s, dilation=d, groups=groups, bias=use_bias)
    with torch.no_grad():
        conv.weight.copy_(to_tensor(w[0].transpose(2, 1, 0)))
        if use_bias:
            conv.bias.copy_(to_tensor(w[1]))
    return then(ChannelsLast(conv, pad, channels_first=cf), activation_of(cfg, ctx))


def _pool1d(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    is_max = cfg["class_name"].startswith("Max")
    (p,) = ints(c.get("pool_size", 2))
    strides = c.get("strides")
    (s,) = ints(strides) if strides is not None else (p,)
    cf = _channels_first(cfg, c)
    padding = str(c.get("padding", "valid")).lower()
    if padding == "valid":
        pad = (0, 0)
    elif padding == "same" and is_max:
        pad = same_pad(cfg, ctx, p, s, 2 if cf else 1)
    else:
        raise refuse(cfg, f"padding={padding!r} is not supported (valid; same for max pooling)")
    op = nn.MaxPool1d(p, s) if is_max else nn.AvgPool1d(p, s)
    return ChannelsLast(op, pad, pad_value=-math.inf, channels_first=cf)


def _reduce_time(x: torch.Tensor, axis: int, keepdims: bool, is_max: bool) -> torch.Tensor:
    return torch.amax(x, dim=axis, keepdim=keepdims) if is_max else torch.mean(x, dim=axis, keepdim=keepdims)


def _global_pool1d(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    is_max = cfg["class_name"].startswith("GlobalMax")
    axis = 2 if _channels_first(cfg, c) else 1
    fn = functools.partial(_reduce_time, axis=axis, keepdims=bool(c.get("keepdims", False)), is_max=is_max)
    return Lambda(fn, f"{'max' if is_max else 'mean'}(axis={axis})")


# -- shape ---------------------------------------------------------------------------------------


def _flatten_fn(x: torch.Tensor, channels_first: bool) -> torch.Tensor:
    if channels_first and x.dim() > 2:
        x = x.movedim(1, -1)
    return torch.flatten(x, 1)


def _flatten(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    cf = _channels_first(cfg, c)
    return Lambda(functools.partial(_flatten_fn, channels_first=cf), "flatten")


def _reshape_fn(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return x.reshape((x.shape[0],) + shape)


def _reshape(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    shape = tuple(-1 if v is None else int(v) for v in c["target_shape"])
    return Lambda(functools.partial(_reshape_fn, shape=shape), f"reshape{shape}")


def _permute_fn(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.permute(dims)


def _permute(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    dims = (0,) + tuple(int(d) for d in c["dims"])
    return Lambda(functools.partial(_permute_fn, dims=dims), f"permute{dims}")


def _repeat_fn(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.unsqueeze(1).repeat(1, n, 1)


def _repeat_vector(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    n = int(c["n"])
    return Lambda(functools.partial(_repeat_fn, n=n), f"repeat({n})")


# -- normalization -------------------------------------------------------------------------------


def _last_axis(cfg: dict[str, Any], ctx: BuildContext, axis: Any) -> None:
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    if len(axes) == 1 and axes[0] == -1:
        return
    shape = (cfg.get("build_config") or {}).get("input_shape") or ctx.input_shape()
    rank = len(shape) if isinstance(shape, (list, tuple)) else None
    if len(axes) != 1 or rank is None or axes[0] != rank - 1:
        raise refuse(cfg, f"axis={axis!r} is not supported (only the last, feature axis)")


def _batch_norm(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    _last_axis(cfg, ctx, c.get("axis", -1))
    center, scale = bool(c.get("center", True)), bool(c.get("scale", True))
    n = int(scale) + int(center) + 2
    w = ctx.bag.take(layer_name(cfg), [(None,)] * n)
    gamma = w[0] if scale else np.ones_like(w[-1])
    beta = w[int(scale)] if center else np.zeros_like(w[-1])
    mean, var = w[-2].astype(np.float64), w[-1].astype(np.float64)
    mult = gamma / np.sqrt(var + float(c.get("epsilon", 1e-3)))
    return Affine(to_tensor(mult), to_tensor(beta - mean * mult))


def _layer_norm(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    _last_axis(cfg, ctx, c.get("axis", -1))
    if c.get("rms_scaling"):
        raise refuse(cfg, "rms_scaling=True is not supported")
    center, scale = bool(c.get("center", True)), bool(c.get("scale", True))
    w = ctx.bag.take(layer_name(cfg), [(None,)] * (int(scale) + int(center)))
    dim = w[0].shape[0] if w else None
    if dim is None:
        raise refuse(cfg, "center=False and scale=False is not supported")
    ln = nn.LayerNorm(dim, eps=float(c.get("epsilon", 1e-3)))
    with torch.no_grad():
        ln.weight.copy_(to_tensor(w[0]) if scale else torch.ones(dim))
        ln.bias.copy_(to_tensor(w[-1]) if center else torch.zeros(dim))
    return ln


# -- wrappers and merges -------------------------------------------------------------------------


def _time_distributed(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    inner = build_layer(c["layer"], ctx)
    return TimeDistributed(inner if inner is not None else nn.Identity())


def _merge_fn(xs: list[torch.Tensor], op: str, axis: int = -1) -> torch.Tensor:
    if op == "Concatenate":
        return torch.cat(xs, dim=axis)
    if op == "Subtract":
        return xs[0] - xs[1]
    out = xs[0]
    for x in xs[1:]:
        if op in ("Add", "Average"):
            out = out + x
        elif op == "Multiply":
            out = out * x
        elif op == "Maximum":
            out = torch.maximum(out, x)
        else:
            out = torch.minimum(out, x)
    return out / len(xs) if op == "Average" else out


def _merge(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    op = cfg["class_name"]
    axis = int(c.get("axis", -1)) if op == "Concatenate" else -1
    return Lambda(functools.partial(_merge_fn, op=op, axis=axis), op.lower())


def _nested_model(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    return ctx.build_model(cfg, ctx)


def _identity(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> None:
    return None


MASKING_REFUSAL = ("masking is not supported: Keras skips masked steps in later RNN layers, which a fixed ONNX graph "
                   "cannot reproduce; remove the Masking layer (trim or bucket padded inputs) to import it")


def _masking(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> None:
    raise refuse(cfg, MASKING_REFUSAL)


BUILDERS: dict[str, Builder] = {
    "Dense": _dense,
    "Embedding": _embedding,
    "Activation": _activation,
    "ReLU": _relu,
    "LeakyReLU": _leaky_relu,
    "ELU": _elu,
    "Softmax": _softmax_layer,
    "LSTM": build_recurrent,
    "GRU": build_recurrent,
    "SimpleRNN": build_recurrent,
    "Bidirectional": build_bidirectional,
    "Conv1D": _conv1d,
    "MaxPooling1D": _pool1d,
    "AveragePooling1D": _pool1d,
    "GlobalMaxPooling1D": _global_pool1d,
    "GlobalAveragePooling1D": _global_pool1d,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Permute": _permute,
    "RepeatVector": _repeat_vector,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "TimeDistributed": _time_distributed,
    "Masking": _masking,
    **{name: _merge for name in MERGE_LAYERS},
    **{name: _identity for name in IDENTITY_LAYERS},
    **{name: _nested_model for name in CONTAINERS},
}
# Keras 2 spellings.
BUILDERS["MaxPool1D"] = _pool1d
BUILDERS["AvgPool1D"] = _pool1d
BUILDERS["Convolution1D"] = _conv1d

SUPPORTED_LAYERS: tuple[str, ...] = ("InputLayer",) + tuple(sorted(set(BUILDERS) - {"Masking"}))


def _check_dtype_policy(cfg: dict[str, Any]) -> None:
    dtype = cfg.get("config", {}).get("dtype")
    name = ""
    if isinstance(dtype, dict):
        name = str(dtype.get("class_name", "")) + " " + str((dtype.get("config") or {}).get("name", ""))
    elif isinstance(dtype, str):
        name = dtype
    if any(q in name.lower() for q in ("quantized", "int8", "int4", "float8")):
        raise refuse(cfg, f"quantized Keras layers ({name.strip()}) are not supported; import the float model")
    if cfg.get("config", {}).get("lora_rank"):
        raise refuse(cfg, "LoRA-enabled layers are not supported; merge the LoRA weights first")


def build_layer(cfg: dict[str, Any], ctx: BuildContext) -> nn.Module | None:
    """Module for one serialized layer (``None`` when it is an identity at inference time)."""
    cls = cfg.get("class_name")
    builder = BUILDERS.get(str(cls))
    if builder is None:
        raise UnsupportedModelError(
            f"Keras layer {layer_name(cfg)!r} ({cls}) is not supported by edgeseq's Keras importer; "
            f"supported: {', '.join(SUPPORTED_LAYERS)}"
        )
    if cls not in CONTAINERS:
        _check_dtype_policy(cfg)
    try:
        return builder(cfg, cfg.get("config") or {}, ctx)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelLoadError(
            f"Keras layer {layer_name(cfg)!r} ({cls}): unexpected config or weights "
            f"({type(exc).__name__}: {exc})"
        ) from exc


__all__ = ["BuildContext", "SUPPORTED_LAYERS", "build_layer", "refuse"]
