"""Keras LSTM / GRU / SimpleRNN / Bidirectional -> nn.LSTM / nn.GRU / nn.RNN (or OnnxRNN).

Weight layouts: Keras ``kernel`` is (features, gates*units) with LSTM gates i, f, c, o
(torch: i, f, g, o, the same order) and GRU gates z, r, h (torch: r, z, n; ONNX: z, r, h).
GRU ``reset_after=True`` keeps an input and a recurrent bias, ``bias`` shape (2, 3*units).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .activations import activation_name
from .context import BuildContext, refuse, to_tensor
from .modules import Recurrent
from .onnx_rnn import OnnxRNN
from .reader import layer_name

_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


# Keras activation -> (ONNX RNN activation, alpha, beta); None where Keras 2 and 3 differ.
_ONNX_RNN_ACTS: dict[str, tuple[str, float, float] | None] = {
    "tanh": ("Tanh", 0.0, 0.0),
    "sigmoid": ("Sigmoid", 0.0, 0.0),
    "relu": ("Relu", 0.0, 0.0),
    "hard_sigmoid": None,
    "linear": ("Affine", 1.0, 0.0),
    "softsign": ("Softsign", 0.0, 0.0),
    "softplus": ("Softplus", 0.0, 0.0),
    "elu": ("Elu", 1.0, 0.0),
}


def _rnn_act(cfg: dict[str, Any], key: str, default: str, ctx: BuildContext) -> tuple[str, float, float]:
    name = activation_name(cfg["config"].get(key, default))
    if name not in _ONNX_RNN_ACTS:
        raise refuse(
            cfg,
            f"{key}={name!r} is not supported (ONNX recurrent nodes allow "
            f"{', '.join(_ONNX_RNN_ACTS)})",
        )
    if name == "hard_sigmoid":  # Keras 2: clip(0.2x + 0.5); Keras 3: relu6(x + 3) / 6
        return ("HardSigmoid", 0.2 if ctx.keras_major < 3 else 1.0 / 6.0, 0.5)
    act = _ONNX_RNN_ACTS[name]
    assert act is not None
    return act


def _rnn_acts(cfg: dict[str, Any], ctx: BuildContext) -> tuple[tuple[str, float, float], ...]:
    """ONNX ``activations`` of one Keras RNN layer (LSTM: f, g, h; GRU: f, g; SimpleRNN: f)."""
    cls = cfg["class_name"]
    act = _rnn_act(cfg, "activation", "tanh", ctx)
    if cls == "SimpleRNN":
        return (act,)
    ract = _rnn_act(cfg, "recurrent_activation", "sigmoid", ctx)
    return (ract, act, act) if cls == "LSTM" else (ract, act)


def _check_rnn(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> None:
    if c.get("stateful"):
        raise refuse(
            cfg,
            "stateful=True is not supported (edgeseq runs each call from a zero state); "
            "rebuild the model with stateful=False and load the weights into it",
        )
    if c.get("return_state"):
        raise refuse(cfg, "return_state=True is not supported; only the output sequence/last output")
    if c.get("time_major"):
        raise refuse(cfg, "time_major=True is not supported")
    _rnn_acts(cfg, ctx)


def _rnn_weights(cfg: dict[str, Any], ctx: BuildContext) -> tuple[list[np.ndarray], int]:
    """Take ``kernel, recurrent_kernel[, bias]`` of one RNN layer; returns them and its input size."""
    c = cfg["config"]
    cls, units = cfg["class_name"], int(c["units"])
    g = _GATES[cls] * units
    shapes: list[tuple[int | None, ...]] = [(None, g), (units, g)]
    if c.get("use_bias", True):
        reset_after = cls == "GRU" and c.get("reset_after", True)
        shapes.append((2, g) if reset_after else (g,))
    w = ctx.bag.take(layer_name(cfg), shapes)
    return w, int(w[0].shape[0])


def _torch_rnn_params(cls: str, c: dict[str, Any], w: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Keras ``kernel (F, G*u)``, ``recurrent (u, G*u)``, ``bias`` -> torch ih/hh weights and biases."""
    units = int(c["units"])
    wi, wh = w[0].T, w[1].T  # (G*u, F), (G*u, u)
    if len(w) > 2:
        b = w[2]
        bi, bh = (b[0], b[1]) if b.ndim == 2 else (b, np.zeros_like(b))
    else:
        bi = bh = np.zeros(wi.shape[0], np.float32)
    if cls == "GRU":  # Keras gates z, r, h -> torch r, z, n
        order = np.concatenate([np.arange(units, 2 * units), np.arange(units), np.arange(2 * units, 3 * units)])
        wi, wh, bi, bh = wi[order], wh[order], bi[order], bh[order]
    # LSTM: Keras i, f, c, o == torch i, f, g, o; SimpleRNN has one gate.
    return {"weight_ih": to_tensor(wi), "weight_hh": to_tensor(wh), "bias_ih": to_tensor(bi), "bias_hh": to_tensor(bh)}


def build_recurrent(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    _check_rnn(cfg, c, ctx)
    w, n_in = _rnn_weights(cfg, ctx)
    return Recurrent(
        _make_torch_rnn(cfg, n_in, [w], ctx),
        return_sequences=bool(c.get("return_sequences", False)),
        go_backwards=bool(c.get("go_backwards", False)),
    )


def _is_native(cfg: dict[str, Any], acts: tuple[tuple[str, float, float], ...]) -> bool:
    """True when nn.LSTM / nn.GRU / nn.RNN compute exactly this Keras layer."""
    names = tuple(a[0] for a in acts)
    cls, c = cfg["class_name"], cfg["config"]
    if cls == "SimpleRNN":
        return names[0] in ("Tanh", "Relu")
    if cls == "GRU" and not c.get("reset_after", True):
        return False
    return names[0] == "Sigmoid" and all(n == "Tanh" for n in names[1:])


def _onnx_layout(cls: str, c: dict[str, Any], w: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Keras weights -> ONNX ``W (G*u, F)``, ``R (G*u, u)``, ``B (2*G*u,)`` (LSTM gates i, o, f, c)."""
    units = int(c["units"])
    wi, wh = w[0].T, w[1].T
    g = wi.shape[0]
    if len(w) > 2:
        b = w[2]
        bi, bh = (b[0], b[1]) if b.ndim == 2 else (b, np.zeros_like(b))
    else:
        bi = bh = np.zeros(g, np.float32)
    if cls == "LSTM":  # Keras i, f, c, o -> ONNX i, o, f, c
        blocks = [np.arange(k * units, (k + 1) * units) for k in (0, 3, 1, 2)]
        order = np.concatenate(blocks)
        wi, wh, bi, bh = wi[order], wh[order], bi[order], bh[order]
    return wi, wh, np.concatenate([bi, bh])


def _make_torch_rnn(
    cfg: dict[str, Any], n_in: int, dirs: list[list[np.ndarray]], ctx: BuildContext
) -> nn.Module:
    cls, c = cfg["class_name"], cfg["config"]
    units, bidir = int(c["units"]), len(dirs) == 2
    acts = _rnn_acts(cfg, ctx)
    if not _is_native(cfg, acts):
        kind = {"SimpleRNN": "RNN"}.get(cls, cls)
        lbr = int(bool(c.get("reset_after", True))) if cls == "GRU" else 0
        mod = OnnxRNN(kind, n_in, units, acts, bidirectional=bidir, linear_before_reset=lbr)
        with torch.no_grad():
            for d, w in enumerate(dirs):
                wi, wh, b = _onnx_layout(cls, c, w)
                mod.W[d].copy_(to_tensor(wi))
                mod.R[d].copy_(to_tensor(wh))
                mod.B[d].copy_(to_tensor(b))
        return mod
    kw: dict[str, Any] = {"batch_first": True, "bidirectional": bidir}
    if cls == "LSTM":
        rnn: nn.Module = nn.LSTM(n_in, units, **kw)
    elif cls == "GRU":
        rnn = nn.GRU(n_in, units, **kw)
    else:
        rnn = nn.RNN(n_in, units, nonlinearity=acts[0][0].lower(), **kw)
    with torch.no_grad():
        for d, w in enumerate(dirs):
            suffix = "_l0_reverse" if d else "_l0"
            for name, value in _torch_rnn_params(cls, c, w).items():
                getattr(rnn, name + suffix).copy_(value)
    return rnn


_RNN_FLAGS = ("units", "activation", "recurrent_activation", "use_bias", "reset_after", "return_sequences")


def build_bidirectional(cfg: dict[str, Any], c: dict[str, Any], ctx: BuildContext) -> nn.Module:
    fwd = c.get("layer") or {}
    bwd = c.get("backward_layer") or fwd
    if fwd.get("class_name") not in _GATES:
        raise refuse(cfg, f"wrapping {fwd.get('class_name')!r} is not supported (LSTM, GRU, SimpleRNN only)")
    merge = c.get("merge_mode", "concat")
    if merge not in ("concat", "sum", "mul", "ave"):
        raise refuse(cfg, f"merge_mode={merge!r} is not supported (concat, sum, mul, ave)")
    fc, bc = fwd["config"], bwd["config"]
    if bwd.get("class_name") != fwd["class_name"] or any(
        fc.get(k) != bc.get(k) for k in _RNN_FLAGS
    ):
        raise refuse(cfg, "forward and backward layers must be the same kind with the same settings")
    if fc.get("go_backwards"):
        raise refuse(cfg, "a forward layer with go_backwards=True is not supported")
    _check_rnn(fwd, fc, ctx)
    wf, n_in = _rnn_weights(fwd, ctx)
    wb, _ = _rnn_weights(bwd, ctx)
    return Recurrent(
        _make_torch_rnn(fwd, n_in, [wf, wb], ctx),
        return_sequences=bool(fc.get("return_sequences", False)),
        merge_mode=merge,
    )
