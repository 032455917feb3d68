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

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from .attention import scriptable_attention

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
    import io
    import warnings

    import torch

    say("the traced graph is fixed to the example's length; scripting forward to keep its loop over time ...")
    seen = _seen_arguments(model, examples)
    # TorchScript would compile edgeseq's own forward pre-hook (edgeseq.export.loading.restore_state_each_call);
    # it runs once more first, to undo what that eager call stored on the module
    handle = getattr(model, "_edgeseq_restore_handle", None)
    if handle is not None:
        model._edgeseq_restore_hook(model, ())
        handle.remove()
    try:
        with (_annotated(seen, say), scriptable_attention(model), warnings.catch_warnings(),
              contextlib.redirect_stderr(io.StringIO())):
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


def _seen_arguments(model: Any, examples: list[Any]) -> dict[Any, dict[str, Any]]:
    """{a submodule class's forward: {parameter: the value it got}} from one eager call of ``model``."""
    import inspect

    import torch

    seen: dict[Any, dict[str, Any]] = {}

    def record(module: Any, args: tuple, kwargs: dict) -> None:
        fn = type(module).forward
        try:
            names = list(inspect.signature(fn).parameters)[1:]
        except (TypeError, ValueError):
            return
        seen.setdefault(fn, {}).update({**dict(zip(names, args)), **kwargs})

    handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in model.modules()]
    try:
        with torch.no_grad():
            model(*examples)
    except Exception:  # noqa: BLE001 - no types seen: scripting says what it needs
        return {}
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _annotation(value: Any) -> str | None:
    """The TorchScript annotation of a value TorchScript would not infer (it takes unannotated for Tensor)."""
    import torch

    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return ("tuple[" + ", ".join(["torch.Tensor"] * len(value)) + "]") if isinstance(value, tuple) \
            else "list[torch.Tensor]"
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float"}.get(type(value))


@contextlib.contextmanager
def _annotated(seen: dict[Any, dict[str, Any]], say: Callable[[str], None]) -> Iterator[None]:
    """While scripting: each submodule ``forward`` reads with type annotations for its unannotated
    parameters that got a tuple, list or number in one eager call (``seen``; a ConvLSTM cell's
    ``cur_state``), by rewriting the source TorchScript reads (``torch._sources.get_source_lines_and_file``)."""
    import ast
    import inspect
    import textwrap

    import torch._sources as sources

    wanted: dict[Any, dict[str, str]] = {}
    for fn, values in seen.items():
        params = inspect.signature(fn).parameters
        notes = {n: a for n, v in values.items() if n in params
                 and params[n].annotation is inspect.Parameter.empty and (a := _annotation(v))}
        if notes:
            wanted[fn] = notes
    original = getattr(sources, "get_source_lines_and_file", None)  # a private torch function
    if not wanted or original is None:
        yield
        return

    def annotated_source(obj: Any, error_msg: Any = None) -> Any:
        lines, lineno, filename = original(obj, error_msg)
        notes = wanted.get(getattr(obj, "__func__", obj))  # TorchScript asks with the bound method
        if not notes:
            return lines, lineno, filename
        tree = ast.parse(textwrap.dedent("".join(lines)))
        for arg in tree.body[0].args.args:
            if arg.arg in notes:
                arg.annotation = ast.parse(notes[arg.arg], mode="eval").body
        indent = " " * (len(lines[0]) - len(lines[0].lstrip()))
        return textwrap.indent(ast.unparse(tree) + "\n", indent).splitlines(keepends=True), lineno, filename

    say("  annotated for TorchScript, from the types of one call: " + "; ".join(
        f"{fn.__qualname__}({', '.join(f'{n}: {a}' for n, a in notes.items())})" for fn, notes in wanted.items()))
    sources.get_source_lines_and_file = annotated_source
    try:
        yield
    finally:
        sources.get_source_lines_and_file = original


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
    elif "of Random object" in first:  # random.random() for teacher forcing (the seq2seq tutorials)
        text += ("; TorchScript cannot call Python's random: an exported decoder feeds back its own predictions, "
                 "so drop the teacher-forcing draw from forward (or draw with torch.rand(()) and export with "
                 "teacher_forcing_ratio: float = 0.0)")
    return text
