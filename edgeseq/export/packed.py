"""Models whose ``forward(x, lengths)`` packs its input (``pack_padded_sequence``), exported with a
``lengths`` input (as ``edgeseq export --lengths``).

Neither torch.onnx exporter can trace packing (TorchScript: ``vector::_M_range_check``; dynamo: a
``FakeTensor`` where ``zeros()`` wants ints), yet it is how most text tutorials batch sentences of
different lengths.  What packing computes -- every sample run over its own steps only -- is what an
ONNX ``LSTM``/``GRU`` node's ``sequence_lens`` input computes, which ``--lengths`` wires up.  So:

* :func:`unpacked` wraps the model as ``forward(x)``: it calls the model with every sample's full
  length, ``pack_padded_sequence`` passing the tensor through (at full length that is what packing
  computes, and the recurrent layers see a plain tensor that tracing and streaming can handle).
* While traced, the wrapper also returns the full lengths it made up, last; :func:`wire_lengths_probe`
  turns every use of them into the ``lengths`` input, so masks or means the model computes from its
  lengths read the real ones (and ``pad_packed_sequence`` zeroes the padded steps, as it would).
* ``--lengths`` then wires that input into ``sequence_lens`` and checks a padded batch against each
  sample alone; :func:`verify_packed` checks the file against the model's own packed forward.

>>> wrapper = unpacked(model, time_first=False)      # doctest: +SKIP  (None: forward does not pack)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..inputs import InputSpec
from ..tolerances import Tolerance, tolerance_for
from . import parity


@contextlib.contextmanager
def _patched_packing(model: Any, pack: Any, pad: Any) -> Iterator[None]:
    """Replace ``pack_padded_sequence``/``pad_packed_sequence`` in torch and in the model's modules' globals."""
    import torch.nn.utils.rnn as rnn

    originals = {"pack_padded_sequence": rnn.pack_padded_sequence, "pad_packed_sequence": rnn.pad_packed_sequence}
    replacements = {"pack_padded_sequence": pack, "pad_packed_sequence": pad}
    # nn.utils.rnn.pack_padded_sequence(...) looks the name up in rnn; a model's module may have imported it
    namespaces = [rnn.__dict__] + [vars(sys.modules[m]) for m in {type(sub).__module__ for sub in model.modules()}
                                   if m in sys.modules]
    undo = []
    for ns in namespaces:
        for key, value in list(ns.items()):
            for name, original in originals.items():
                if value is original:
                    undo.append((ns, key, value))
                    ns[key] = replacements[name]
    try:
        yield
    finally:
        for ns, key, value in reversed(undo):
            ns[key] = value


def _pass_through(model: Any) -> Any:
    """Packing that leaves the padded tensor as it is (for tracing; ``sequence_lens`` does the rest)."""
    seen: list[Any] = []

    def pack(input: Any, lengths: Any, batch_first: bool = False, enforce_sorted: bool = True) -> Any:
        seen.append(lengths)
        return input

    def pad(sequence: Any, batch_first: bool = False, padding_value: float = 0.0, total_length: Any = None) -> Any:
        import torch

        lengths = seen[-1]
        time_axis = 1 if batch_first else 0
        # what pad_packed_sequence returns past each sample's length: padding_value, not the held last step
        valid = torch.arange(sequence.shape[time_axis])[None, :] < lengths.to(torch.int64)[:, None]
        valid = valid if batch_first else valid.t()  # (batch, steps) or (steps, batch), as the sequence
        valid = valid.reshape(*valid.shape, *[1] * (sequence.dim() - 2))
        padded = sequence.masked_fill(~valid, padding_value)
        if total_length is None:  # and it cuts at the longest sample (traced: a Gather of the first max(lengths) steps)
            padded = padded.index_select(time_axis, torch.arange(lengths.to(torch.int64).max()))
        return padded, lengths

    return _patched_packing(model, pack, pad)


def _pack_calls(model: Any, args: list[Any]) -> tuple[list[Any], bool]:
    """(the lengths ``model(*args)`` handed to ``pack_padded_sequence``, whether the call completed)."""
    import torch
    import torch.nn.utils.rnn as rnn

    original = rnn.pack_padded_sequence
    calls: list[Any] = []

    def recording(input: Any, lens: Any, *rest: Any, **kwargs: Any) -> Any:
        calls.append(lens)
        return original(input, lens, *rest, **kwargs)

    try:
        with _patched_packing(model, recording, rnn.pad_packed_sequence), torch.inference_mode():
            model(*args)
    except Exception:  # noqa: BLE001 - the calls made before the failure still count
        return calls, False
    return calls, True


def packs(model: Any, examples: list[Any]) -> bool:
    """Whether ``model(*examples)`` calls ``pack_padded_sequence`` at all."""
    return bool(_pack_calls(model, examples)[0])


def _packs_with(model: Any, x: Any, lengths: Any) -> bool:
    """Whether ``model(x, lengths)`` runs and hands ``lengths`` (or a copy) to ``pack_padded_sequence``."""
    import torch

    calls, ran = _pack_calls(model, [x, lengths])
    return ran and any(torch.is_tensor(c) and c.shape == lengths.shape and bool((c.to(lengths.dtype) == lengths).all())
                       for c in calls)


def unpacked(model: Any, time_first: bool = False, input_shape: Any = None, dynamic_axes: Any = None) -> Any | None:
    """``forward(x)`` around a model whose ``forward(x, lengths)`` packs ``x`` with ``lengths``
    (``wrapper.packs``), or reads per-sample lengths another way (``out[range(b), lengths - 1]``); None otherwise.

    The example ``x`` comes from ``input_shape`` or is guessed from the model's first layer.
    """
    import torch
    from torch import nn

    from .signature import forward_parameter_names, infer_signature

    if isinstance(model, torch.jit.ScriptModule):  # its packing is compiled in: nothing to pass through
        return None
    # a lengths parameter with a default (forward(x, lengths=None)) means the model also runs unpacked:
    # exported as it is, and with --lengths on request
    params = forward_parameter_names(model, required=True)
    if len(params) != 2:
        return None
    batch_axis, seq_axis = (1, 0) if time_first else (0, 1)

    class Unpacked(nn.Module):
        """The model with every sample at its full length; packing passes through while torch.onnx traces."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.packed_parameter = params[1]
            self.packs = True  # forward packs with them (else it reads them another way)
            self.probe = True  # while traced, return the lengths last (see wire_lengths_probe)

        def forward(self, x: torch.Tensor) -> Any:
            lengths = torch.zeros(x.shape[batch_axis], dtype=torch.int64) + x.shape[seq_axis]
            with _pass_through(self.model):  # at full lengths the same as packing, and streamable
                y = self.model(x, lengths)
            if self.probe and (torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()):
                return (*parity.flatten_outputs(y), lengths)
            return y

    wrapper = Unpacked().eval()
    try:
        _spec, examples = infer_signature(wrapper, input_shape, dynamic_axes, time_first)
    except Exception:  # noqa: BLE001 - cannot guess an example: not for this path
        return None
    x = examples[0]
    lengths = torch.full((x.shape[batch_axis],), x.shape[seq_axis], dtype=torch.int64)
    if _packs_with(model, x, lengths):
        return wrapper
    wrapper.packs = False
    return wrapper if _reads_lengths(model, x, lengths, params[1]) else None


def _reads_lengths(model: Any, x: Any, lengths: Any, name: str) -> bool:
    """Whether forward's second parameter, named like lengths, is per-sample lengths that change the output."""
    import re

    import torch

    if not re.search(r"len", name, re.I) or int(lengths.min()) < 2:
        return False
    try:
        with torch.inference_mode():
            full, shorter = model(x, lengths), model(x, lengths - 1)
    except Exception:  # noqa: BLE001 - not a model that takes (x, lengths)
        return False
    a, b = parity.flatten_outputs(full), parity.flatten_outputs(shorter)
    return len(a) == len(b) and any(s.shape != t.shape or not torch.equal(s, t) for s, t in zip(a, b))


def wire_lengths_probe(proto: Any, data: Any) -> None:
    """In a graph traced from :func:`unpacked`'s wrapper, in place: its last output (the full lengths it
    made up) becomes the ``lengths`` input, so every use of the lengths -- packing, and masks or means the
    model computes from them -- reads the real ones; the card says which input that is."""
    from onnx import TensorProto, helper

    from ..card import set_card
    from ..subgraphs import graphs
    from .cleanup import _drop_dead_nodes
    from .lengths import LENGTHS_INPUT

    graph = proto.graph
    probe = graph.output[-1].name
    del graph.output[-1]
    aliases = _int64_aliases(graph, probe)
    for g in graphs(graph):
        for node in g.node:
            for i, name in enumerate(node.input):
                if name in aliases:
                    node.input[i] = LENGTHS_INPUT
    graph_input = next(i for i in graph.input if i.name == data.name)
    batch = graph_input.type.tensor_type.shape.dim[data.batch_axis or 0]
    graph.input.append(helper.make_tensor_value_info(LENGTHS_INPUT, TensorProto.INT64,
                                                     [batch.dim_param or batch.dim_value or "batch"]))
    _drop_dead_nodes(proto)
    set_card(proto, {"lengths_input": LENGTHS_INPUT})  # the final card replaces it


def _int64_aliases(graph: Any, name: str) -> set[str]:
    """``name`` and every value that is the same int64 tensor: tracing writes each ``lengths.to(torch.int64)`` as
    a Cast even when it changes nothing, so uses of the made-up lengths hang off a chain of them."""
    int64, aliases = 7, {name}
    same = [(n.input[0], n.output[0]) for n in graph.node if n.input and n.output and (
        n.op_type == "Identity" or (n.op_type == "Cast" and any(a.name == "to" and a.i == int64 for a in n.attribute)))]
    grown = True
    while grown:
        grown = False
        for src, dst in same:
            if (src in aliases) != (dst in aliases):
                aliases |= {src, dst}
                grown = True
    return aliases


def verify_packed(path: str | Path, model: Any, spec: InputSpec, axes: dict[str, dict[str, int | None]],
                  length: int = 12, tol: Tolerance | None = None, seed: int = 1) -> parity.ParityReport:
    """The file on a padded batch with ``lengths`` vs the model's own packed ``forward(x, lengths)``
    (lengths in decreasing order, which ``enforce_sorted=True`` needs)."""
    import torch

    from ..runtime.session import Session

    tol = tol or tolerance_for("float32")
    info = spec.inputs[0]
    lengths = np.array([length, length - 1, max(2, length // 2), 1], np.int64)
    x = spec.random(len(lengths), length, seed=seed)[0]
    session = Session(path, device="cpu", threads=1, allow_nonfinite=True)
    names = [o.name for o in session.data_outputs()]
    got = session.run({info.name: x, session.card["lengths_input"]: lengths})
    with torch.inference_mode():
        ref = [t.numpy() for t in parity.flatten_outputs(model(torch.from_numpy(x), torch.from_numpy(lengths)))]
    cases = []
    for j, name in enumerate(names):
        o_ba, o_sa = axes[name]["batch_axis"], axes[name]["seq_axis"]
        for i, n in enumerate(lengths):
            mine = np.take(got[name], [i], axis=o_ba) if o_ba is not None else got[name]
            theirs = np.take(ref[j], [i], axis=o_ba) if o_ba is not None else ref[j]
            if o_sa is not None:  # pad_packed_sequence pads with zeros and cuts at the longest: compare own steps
                mine, theirs = (np.take(a, range(int(n)), axis=o_sa) for a in (mine, theirs))
            max_abs, max_rel, sqnr, ok, note = parity.compare(mine, theirs, tol)
            cases.append(parity.ParityCase(len(lengths), int(n), name, max_abs, max_rel, sqnr, ok,
                                           note=note or ("" if ok else f"sample {i} (length {n} of {length}), packed")))
    return parity.ParityReport(cases, tol.atol, tol.rtol, "float32", extra={"check": "packed"})
