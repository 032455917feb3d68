"""Models that loop over time in Python: exported scripted, so the loop stays a loop (an ONNX ``Loop``).

Tracing (both torch.onnx exporters trace) runs ``for t in range(x.size(1))`` once, at the example's
length, and writes every step out: the file then fails at shorter lengths and is silently wrong at
longer ones.  ``torch.jit.script`` compiles the loop itself, and the TorchScript exporter writes it as
a ``Loop`` whose trip count is the input's length.  The parity gate then checks lengths far from the
example's, as for any export.

A scripted ``nn.LSTMCell`` exports as a one-step ``LSTM`` node in the loop's body; ``nn.GRUCell`` and
``nn.RNNCell`` need the translations in :mod:`edgeseq.export.symbolics`.

>>> scripted = script(model, attempts=[], say=print)                    # doctest: +SKIP
"""

from __future__ import annotations

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


def script(model: Any, examples: list[Any], attempts: list[str], say: Callable[[str], None]) -> Any | None:
    """``torch.jit.script`` of ``model``, or None with the reason added to ``attempts``."""
    import contextlib
    import io
    import warnings

    import torch

    say("the traced graph is fixed to the example's length; scripting forward to keep its loop over time ...")
    # TorchScript would compile edgeseq's own forward pre-hook (edgeseq.export.loading.restore_state_each_call)
    handle = getattr(model, "_edgeseq_restore_handle", None)
    if handle is not None:
        handle.remove()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.13, and says so
            return _traced_call(torch.jit.script(model), examples)
    except Exception as exc:  # noqa: BLE001 - any compile error means: no scripted fallback
        text = script_error(exc)
        attempts.append(f"torch.jit.script: {text}")
        say(f"  torch.jit.script failed: {text}")
        return None
    finally:
        if handle is not None:
            model._edgeseq_restore_handle = model.register_forward_pre_hook(model._edgeseq_restore_hook)


def _traced_call(scripted: Any, examples: list[Any]) -> Any:
    """``scripted`` called with the example inputs only, traced: exporting a ScriptModule itself makes
    every ``forward`` parameter a graph input (``future: int = 0`` too), and exporting a plain module
    that calls one fails ("not part of the active trace"); a trace of that call keeps the defaults as
    constants and the scripted loops as loops."""
    import torch
    from torch import nn

    class CallsScripted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scripted = scripted

        def forward(self, *inputs: Any) -> Any:
            return self.scripted(*inputs)

    return torch.jit.trace(CallsScripted().eval(), tuple(examples), check_trace=False)


def script_error(exc: BaseException) -> str:
    """The first line of a TorchScript compile error, and the source line it points at."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0].strip()
    # TorchScript prints the offending source line just above a line of '~~~~ <--- HERE'
    marked = next((lines[i - 1].strip() for i, ln in enumerate(lines) if "<--- HERE" in ln and i > 0), "")
    text = (f"{first} (at: {marked})" if marked else first)[:300]
    if "(inferred)" in first:  # TorchScript's default type for a parameter without an annotation
        text += ("; TorchScript takes a parameter without a type annotation for a Tensor: annotate it in the "
                 "signature, e.g. cur_state: Tuple[torch.Tensor, torch.Tensor] (from typing import Tuple)")
    return text
