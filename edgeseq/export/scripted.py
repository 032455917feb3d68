"""Models that loop over time in Python: exported scripted, so the loop stays a loop (an ONNX ``Loop``).

Tracing (both torch.onnx exporters trace) runs ``for t in range(x.size(1))`` once, at the example's
length, and writes every step out: the file then fails at shorter lengths and is silently wrong at
longer ones.  ``torch.jit.script`` compiles the loop itself, and the TorchScript exporter writes it as
a ``Loop`` whose trip count is the input's length.  The parity gate then checks lengths far from the
example's, as for any export.

``nn.GRUCell``/``nn.RNNCell`` script, but their ``forward`` tests ``hx.dim() in (1, 2)`` against a
constant list, which the TorchScript exporter cannot translate ("expected node type
prim::ListConstruct"), and it has no translation for ``aten::gru_cell``; a copy of the model gets
:func:`batched_cell` in their place: the same equations on the same weights, for batched (2-D)
inputs.  ``nn.LSTMCell`` exports as it is (an ``LSTM`` node per step).

>>> scripted = script(model, attempts=[], say=print)                    # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

CELL_KINDS = ("LSTMCell", "GRUCell", "RNNCell")


def cell_names(model: Any) -> list[str]:
    """Names of the model's single-step cells (``nn.LSTMCell``/``GRUCell``/``RNNCell``)."""
    import torch.nn as nn

    return [n for n, m in model.named_modules() if isinstance(m, (nn.LSTMCell, nn.GRUCell, nn.RNNCell))]


def cells_phrase(model: Any) -> str:
    """`` (stepping 'cell')`` for log lines, or '' for a loop without cell modules."""
    cells = cell_names(model)
    return f" (stepping {', '.join(repr(c) for c in cells[:3])})" if cells else ""


def batched_cell(cell: Any) -> Any:
    """A scriptable, exportable module computing ``cell`` (an ``nn.GRUCell``/``nn.RNNCell``) on batched
    input with the same weights: the cell's equations written out (the exporter has no ``gru_cell``)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    kind = "gru" if isinstance(cell, nn.GRUCell) else f"rnn_{getattr(cell, 'nonlinearity', 'tanh')}"

    class BatchedCell(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.kind = kind
            self.hidden_size = cell.hidden_size
            self.input_size = cell.input_size
            self.weight_ih, self.weight_hh = cell.weight_ih, cell.weight_hh
            zeros = torch.zeros(cell.weight_ih.shape[0], dtype=cell.weight_ih.dtype)
            self.register_buffer("bias_ih", cell.bias_ih.detach() if cell.bias_ih is not None else zeros)
            self.register_buffer("bias_hh", cell.bias_hh.detach() if cell.bias_hh is not None else zeros.clone())

        def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
            if hx is None:
                hx = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            gi = F.linear(input, self.weight_ih, self.bias_ih)
            gh = F.linear(hx, self.weight_hh, self.bias_hh)
            if self.kind == "gru":
                i_r, i_z, i_n = gi.chunk(3, 1)
                h_r, h_z, h_n = gh.chunk(3, 1)
                r = torch.sigmoid(i_r + h_r)
                z = torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                return n + z * (hx - n)
            if self.kind == "rnn_relu":
                return torch.relu(gi + gh)
            return torch.tanh(gi + gh)

    return BatchedCell().eval()


def _with_batched_cells(model: Any) -> Any:
    """``model``, or a copy whose GRUCell/RNNCell modules are :func:`batched_cell` (see the module doc)."""
    import torch.nn as nn

    names = [n for n, m in model.named_modules() if isinstance(m, (nn.GRUCell, nn.RNNCell))]
    if not names:
        return model
    clone = copy.deepcopy(model)
    if names == [""]:
        return batched_cell(clone)
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        setattr(parent, attr, batched_cell(getattr(parent, attr)))
    return clone


def script(model: Any, attempts: list[str], say: Callable[[str], None]) -> Any | None:
    """``torch.jit.script`` of ``model`` (GRU/RNN cells made exportable), or None with the reason added to ``attempts``."""
    import contextlib
    import io
    import warnings

    import torch

    say("the traced graph is fixed to the example's length; scripting forward to keep its loop over time ...")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.13, and says so
            return torch.jit.script(_with_batched_cells(model))
    except Exception as exc:  # noqa: BLE001 - any compile (or copy) error means: no scripted fallback
        text = script_error(exc)
        attempts.append(f"torch.jit.script: {text}")
        say(f"  torch.jit.script failed: {text}")
        return None


def script_error(exc: BaseException) -> str:
    """The first line of a TorchScript compile error, and the source line it points at."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0].strip()
    # TorchScript prints the offending source line just above a line of '~~~~ <--- HERE'
    marked = next((lines[i - 1].strip() for i, ln in enumerate(lines) if "<--- HERE" in ln and i > 0), "")
    return (f"{first} (at: {marked})" if marked else first)[:300]
