"""OnnxRNN: Keras recurrent layers that nn.LSTM/nn.GRU/nn.RNN cannot express, still native in ONNX.

Computes the ONNX ``LSTM``/``GRU``/``RNN`` operator's equations exactly in eager mode,
and the TorchScript exporter (``dynamo=False``) writes it as one native node through
the ``symbolic`` of an autograd Function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedModelError

Activation = tuple[str, float, float]  # ONNX RNN activation name, alpha, beta

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _onnx_act(spec: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    name, alpha, beta = spec
    if name == "Sigmoid":
        return torch.sigmoid
    if name == "Tanh":
        return torch.tanh
    if name == "Relu":
        return torch.relu
    if name == "HardSigmoid":
        return lambda v: torch.clamp(v * alpha + beta, 0.0, 1.0)
    if name == "Affine":
        return lambda v: v * alpha + beta
    if name == "Softsign":
        return F.softsign
    if name == "Softplus":
        return F.softplus
    if name == "Elu":
        return lambda v: F.elu(v, alpha)
    raise UnsupportedModelError(f"ONNX RNN activation {name!r} is not supported")  # pragma: no cover


def _run_direction(
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor,
    kind: str,
    acts: tuple[Activation, ...],
    lbr: int,
) -> torch.Tensor:
    """One direction of an ONNX LSTM/GRU/RNN, exactly as the ONNX spec defines it.

    ``x`` is (T, B, F); ``w``/``r``/``b`` use ONNX gate order (LSTM i, o, f, c; GRU z, r, h)
    and ``b`` is ``[Wb, Rb]``.  Returns (T, B, H).
    """
    hsz = r.shape[1]
    g = _GATES[kind] * hsz
    xw = torch.matmul(x, w.t()) + b[:g]
    rb = b[g:]
    fa = [_onnx_act(a) for a in acts]
    h = x.new_zeros(x.shape[1], hsz)
    c = h
    outs = []
    for t in range(x.shape[0]):
        if kind == "LSTM":
            gates = xw[t] + h @ r.t() + rb
            i, o, f, cc = gates.split(hsz, dim=-1)
            c = fa[0](f) * c + fa[0](i) * fa[1](cc)
            h = fa[0](o) * fa[2](c)
        elif kind == "GRU":
            xz, xr, xh = xw[t].split(hsz, dim=-1)
            rz, rr, rh = r.split(hsz, dim=0)
            bz, br, bh = rb.split(hsz, dim=0)
            z = fa[0](xz + h @ rz.t() + bz)
            rg = fa[0](xr + h @ rr.t() + br)
            if lbr:
                hh = fa[1](xh + rg * (h @ rh.t() + bh))
            else:
                hh = fa[1](xh + (rg * h) @ rh.t() + bh)
            h = (1.0 - z) * hh + z * h
        else:
            h = fa[0](xw[t] + h @ r.t() + rb)
        outs.append(h)
    if not outs:
        return x.new_zeros(0, x.shape[1], hsz)
    return torch.stack(outs, 0)


@contextlib.contextmanager
def _no_tracing() -> Iterator[None]:
    """Pause the TorchScript tracer (if any) so only the autograd Function node is recorded."""
    get = getattr(torch._C, "_get_tracing_state", None)
    state = get() if get is not None else None
    if state is None:
        yield
        return
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


class _OnnxRNNFn(torch.autograd.Function):
    """Exact eager LSTM/GRU/RNN that the TorchScript exporter turns into one native ONNX node."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        w: torch.Tensor,
        r: torch.Tensor,
        b: torch.Tensor,
        kind: str,
        acts: tuple[Activation, ...],
        lbr: int,
    ) -> torch.Tensor:
        # x (T, B, F); w (D, G*H, F); r (D, G*H, H); b (D, 2*G*H) -> (T, B, D*H)
        # The exporter uses `symbolic`; do not record the unrolled loop in the trace.
        with _no_tracing(), torch.no_grad():
            ys = [_run_direction(x, w[0], r[0], b[0], kind, acts, lbr)]
            if w.shape[0] == 2:
                back = _run_direction(torch.flip(x, [0]), w[1], r[1], b[1], kind, acts, lbr)
                ys.append(torch.flip(back, [0]))
            out = torch.cat(ys, dim=-1)
        if torch.jit.is_tracing():  # hand the tracer a traced value (a placeholder for `symbolic`)
            out = x.new_zeros(out.shape) + out
        return out

    @staticmethod
    def symbolic(  # pragma: no cover - called by the ONNX exporter only
        g: Any, x: Any, w: Any, r: Any, b: Any, kind: str, acts: tuple[Activation, ...], lbr: int
    ) -> Any:
        sizes = r.type().sizes()
        dirs, hsz = int(sizes[0]), int(sizes[2])
        per_dir = list(acts) * dirs
        attrs: dict[str, Any] = {
            "hidden_size_i": hsz,
            "direction_s": "bidirectional" if dirs == 2 else "forward",
            "activations_s": [a[0] for a in per_dir],
        }
        alphas = [a[1] for a in per_dir if a[0] in _USES_ALPHA]
        betas = [a[2] for a in per_dir if a[0] in _USES_BETA]
        if alphas:
            attrs["activation_alpha_f"] = alphas
        if betas:
            attrs["activation_beta_f"] = betas
        if kind == "GRU":
            attrs["linear_before_reset_i"] = lbr
        n_out = 3 if kind == "LSTM" else 2
        outs = g.op(kind, x, w, r, b, outputs=n_out, **attrs)
        y = outs[0]  # (T, D, B, H)
        y = g.op("Transpose", y, perm_i=[0, 2, 1, 3])
        return g.op("Reshape", y, g.op("Constant", value_t=torch.tensor([0, 0, -1])))


_USES_ALPHA = ("HardSigmoid", "Affine", "Elu")
_USES_BETA = ("HardSigmoid", "Affine")


class OnnxRNN(nn.Module):
    """A Keras recurrent layer that ``nn.LSTM``/``nn.GRU``/``nn.RNN`` cannot express.

    Covers other activations (``relu`` LSTMs, ``hard_sigmoid`` gates, ...) and GRU with
    ``reset_after=False``.  Eager results are exact; the TorchScript exporter
    (``torch.onnx.export(..., dynamo=False)``) writes one native ONNX LSTM/GRU/RNN node
    with the matching ``activations`` / ``linear_before_reset`` attributes.  Returns
    ``(output, None)`` batch-first like ``nn.LSTM``.  Parameters use ONNX layout.
    """

    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_size: int,
        acts: tuple[Activation, ...],
        *,
        bidirectional: bool = False,
        linear_before_reset: int = 1,
    ) -> None:
        super().__init__()
        self.kind, self.input_size, self.hidden_size = kind, input_size, hidden_size
        self.acts, self.linear_before_reset, self.bidirectional = acts, linear_before_reset, bidirectional
        d, gh = (2 if bidirectional else 1), _GATES[kind] * hidden_size
        self.W = nn.Parameter(torch.zeros(d, gh, input_size))
        self.R = nn.Parameter(torch.zeros(d, gh, hidden_size))
        self.B = nn.Parameter(torch.zeros(d, 2 * gh))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        if _is_dynamo_tracing():
            raise UnsupportedModelError(
                f"this Keras {self.kind} ({self.extra_repr()}) exports only with the TorchScript "
                "exporter: torch.onnx.export(..., dynamo=False)"
            )
        y = _OnnxRNNFn.apply(
            x.transpose(0, 1), self.W, self.R, self.B, self.kind, self.acts, self.linear_before_reset
        )
        return y.transpose(0, 1), None

    def extra_repr(self) -> str:
        acts = ",".join(a[0] for a in self.acts)
        extra = f", linear_before_reset={self.linear_before_reset}" if self.kind == "GRU" else ""
        return (
            f"{self.input_size}, {self.hidden_size}, activations={acts}, "
            f"bidirectional={self.bidirectional}{extra}"
        )


def _is_dynamo_tracing() -> bool:
    compiler = getattr(torch, "compiler", None)
    for probe in ("is_compiling", "is_exporting"):
        fn = getattr(compiler, probe, None)
        if fn is not None and fn():
            return True
    return False
