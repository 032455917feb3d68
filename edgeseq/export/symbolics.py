"""ONNX translations the TorchScript exporter lacks for scripted single-step cells.

A scripted ``nn.GRUCell``/``nn.RNNCell`` (in a model edgeseq scripts, or in a TorchScript file saved with
``torch.jit.script``) reaches the exporter as ``aten::gru_cell`` / ``aten::rnn_tanh_cell`` /
``aten::rnn_relu_cell``, which it cannot translate, behind an ``hx.dim() in (1, 2)`` test whose constant
list its ``__contains__`` translation rejects ("expected node type prim::ListConstruct").  Traced models
never reach these (tracing decomposes the cells).  A scripted ``for x_t in x.unbind(1)`` gets pieces of
the wrong rank from the exporter's ``unbind``.  Framing raw audio with ``wav.unfold(1, 400, 160)`` needs
the length known to the exporter's ``unfold``.  :func:`cell_symbolics` registers the cells' equations,
``in`` on a constant list, a correct ``unbind`` and a length-agnostic ``unfold``, for the duration of one
export.

>>> with cell_symbolics(17):                                  # doctest: +SKIP
...     torch.onnx.export(scripted, args, "m.onnx", dynamo=False, opset_version=17)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

ONNX_INT32, ONNX_BOOL = 6, 9


def _contains(g: Any, self: Any, element: Any) -> Any:
    """``element in (1, 2)`` when the exporter has folded the list into a constant tensor."""
    from torch.onnx import symbolic_helper as sh

    if self.node().kind() != "onnx::Constant":
        return sh._onnx_unsupported("__contains__ on a list that is not constant", self)
    listed = g.op("Constant", value_t=self.node().t("value"))
    hits = g.op("Cast", g.op("Equal", listed, element), to_i=ONNX_INT32)
    return g.op("Cast", g.op("ReduceMax", hits, keepdims_i=0), to_i=ONNX_BOOL)


def _linear(g: Any, x: Any, weight: Any, bias: Any) -> Any:
    from torch.onnx import symbolic_helper as sh

    y = g.op("MatMul", x, g.op("Transpose", weight, perm_i=[1, 0]))
    return y if sh._is_none(bias) else g.op("Add", y, bias)


def _gru_cell(g: Any, x: Any, hx: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> Any:
    import torch
    from torch.onnx import symbolic_helper as sh

    hidden = sh._get_tensor_sizes(w_hh)[1]
    thirds = g.op("Constant", value_t=torch.tensor([hidden] * 3, dtype=torch.int64))
    i_r, i_z, i_n = g.op("Split", _linear(g, x, w_ih, b_ih), thirds, axis_i=1, outputs=3)
    h_r, h_z, h_n = g.op("Split", _linear(g, hx, w_hh, b_hh), thirds, axis_i=1, outputs=3)
    r = g.op("Sigmoid", g.op("Add", i_r, h_r))
    z = g.op("Sigmoid", g.op("Add", i_z, h_z))
    n = g.op("Tanh", g.op("Add", i_n, g.op("Mul", r, h_n)))
    return g.op("Add", n, g.op("Mul", z, g.op("Sub", hx, n)))  # (1 - z) * n + z * hx


def _rnn_cell(activation: str) -> Any:
    def cell(g: Any, x: Any, hx: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> Any:
        return g.op(activation, g.op("Add", _linear(g, x, w_ih, b_ih), _linear(g, hx, w_hh, b_hh)))

    return cell


def _unbind(g: Any, self: Any, dim: Any, _outputs: int | None = None) -> Any:
    """``x.unbind(dim)``.  For a scripted ``for x_t in x.unbind(1)`` the number of pieces is unknown, and the
    exporter's own translation writes ``SplitToSequence(x, split=1, keepdims=0)``; ONNX ignores ``keepdims``
    when ``split`` is given, so each piece keeps its length-1 axis and the layer reading it gets the wrong
    rank.  Without ``split`` the pieces are length 1 anyway and ``keepdims=0`` drops the axis."""
    import torch
    from torch.onnx import symbolic_helper as sh

    axis = sh._get_const(dim, "i", "dim")
    if _outputs is None:
        return g.op("SplitToSequence", self, axis_i=axis, keepdims_i=0)
    pieces = g.op("Split", self, g.op("Constant", value_t=torch.tensor([1] * _outputs)), axis_i=axis,
                  outputs=_outputs)
    pieces = [pieces] if _outputs == 1 else pieces
    return [g.op("Squeeze", p, g.op("Constant", value_t=torch.tensor([axis]))) for p in pieces]


def _unfold(g: Any, self: Any, dimension: Any, size: Any, step: Any) -> Any:
    """``x.unfold(dim, size, step)`` (frames of raw audio) when the length along ``dim`` is dynamic: the
    exporter's own translation needs it known ("input size not accessible").  Frame ``i`` gathers steps
    ``i * step .. i * step + size - 1``; the frame axis takes ``dim``'s place and ``size`` goes last."""
    import torch
    from torch.onnx import symbolic_helper as sh

    dim, size_, step_ = (sh._get_const(v, "i", n) for v, n in ((dimension, "dimension"), (size, "size"), (step, "step")))
    rank = sh._get_tensor_rank(self)
    if rank is None:
        return sh._onnx_unsupported("unfold of a tensor of unknown rank", self)
    dim = dim % rank

    def const(value: Any) -> Any:
        return g.op("Constant", value_t=torch.tensor(value, dtype=torch.int64))

    length = g.op("Gather", g.op("Shape", self), const(dim), axis_i=0)
    frames = g.op("Add", g.op("Div", g.op("Sub", length, const(size_)), const(step_)), const(1))
    starts = g.op("Mul", g.op("Range", const(0), frames, const(1)), const(step_))
    index = g.op("Add", g.op("Unsqueeze", starts, const([1])), const([list(range(size_))]))  # (frames, size)
    out = g.op("Gather", self, index, axis_i=dim)  # dim -> (frames, size)
    if dim == rank - 1:
        return out
    perm = list(range(dim + 1)) + list(range(dim + 2, rank + 1)) + [dim + 1]
    return g.op("Transpose", out, perm_i=perm)


# the exporter's own translation of ``__contains__`` is registered as "aten::__contains_"
SYMBOLICS = {"aten::__contains_": _contains, "aten::gru_cell": _gru_cell,
             "aten::rnn_tanh_cell": _rnn_cell("Tanh"), "aten::rnn_relu_cell": _rnn_cell("Relu"),
             "aten::unbind": _unbind, "aten::unfold": _unfold}


@contextlib.contextmanager
def cell_symbolics(opset: int) -> Iterator[None]:
    """Register :data:`SYMBOLICS` at ``opset`` (where they take precedence), and remove them afterwards."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    registered = []
    try:
        for name, fn in SYMBOLICS.items():
            register_custom_op_symbolic(name, fn, opset)
            registered.append(name)
    except Exception:  # noqa: BLE001 - another torch's registry: export without them (cells may then fail)
        pass
    try:
        yield
    finally:
        for name in registered:
            unregister_custom_op_symbolic(name, opset)
