"""Model card: what edgeseq knows about an exported file, stored in ONNX ``metadata_props``.

The card is a JSON object under the key ``edgeseq.card``.  Reading it needs
neither torch nor onnx: :func:`read_card` walks the top level of the ONNX
protobuf directly, skipping the (possibly large) graph without decoding it.

>>> card = read_card("model.onnx")          # doctest: +SKIP
>>> card["inputs"][0]["layout"]             # doctest: +SKIP
'batch_first'
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ModelFileError

CARD_KEY = "edgeseq.card"
CARD_VERSION = 1

# ModelProto field numbers (onnx.proto): 14 = metadata_props (StringStringEntryProto: 1=key, 2=value)
_METADATA_FIELD = 14


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _iter_fields(buf: bytes | memoryview):
    """Yield (field_number, wire_type, value) for one protobuf message level."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated field")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


@contextlib.contextmanager
def mapped_file(path: str | Path) -> Iterator[memoryview]:
    """An ONNX file's bytes, memory-mapped rather than read: the protobuf walks here skip over tensor data,
    so its pages are never touched, and a large file is not copied into memory to read its card."""
    path = Path(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the mapping
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        if os.fstat(fh.fileno()).st_size == 0:
            yield memoryview(b"")
            return
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapped)
        try:
            yield view
        finally:
            try:
                view.release()
                mapped.close()
            except BufferError:  # a slice still referenced (say, by an error's traceback): unmapped when collected
                pass


def read_metadata(path: str | Path) -> dict[str, str]:
    """Return an ONNX file's ``metadata_props`` as a dict, without onnx or onnxruntime.

    >>> read_metadata("model.onnx").keys()     # doctest: +SKIP
    dict_keys(['edgeseq.card'])
    """
    path = Path(path)
    props: dict[str, str] = {}
    with mapped_file(path) as data:
        try:
            for field, wire, value in _iter_fields(data):
                if field == _METADATA_FIELD and wire == 2:
                    entry = {f: bytes(v).decode("utf-8") for f, w, v in _iter_fields(value) if w == 2}
                    props[entry.get(1, "")] = entry.get(2, "")
        except (ValueError, UnicodeDecodeError):
            raise ModelFileError(
                f"{path}: not a valid ONNX file (truncated or corrupt); re-export it with 'edgeseq export'"
            ) from None
    return props


def read_card(path: str | Path) -> dict[str, Any]:
    """Return the edgeseq model card of an ONNX file ({} when the file has none)."""
    raw = read_metadata(path).get(CARD_KEY)
    if not raw:
        return {}
    try:
        card = json.loads(raw)
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: its edgeseq model card is not valid JSON") from None
    if not isinstance(card, dict):
        return {}
    from .card_schema import card_problem

    problem = card_problem(card)
    if problem:
        raise ModelFileError(f"{path}: its edgeseq model card is damaged ({problem}); export the file again")
    return card


def card_from_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Parse the card out of a metadata map (e.g. ONNX Runtime's ``custom_metadata_map``)."""
    raw = props.get(CARD_KEY)
    if not raw:
        return {}
    try:
        card = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return card if isinstance(card, dict) else {}


def forward_takes_lengths(card: dict[str, Any]) -> bool:
    """Whether the file comes from a ``forward(x, lengths)`` (it packs, or reads the lengths itself): its
    ``lengths`` input stands for that parameter, and the PyTorch model is compared at full lengths."""
    return bool(card.get("packed_by") or card.get("lengths_parameter"))


def set_card(model_proto: Any, card: dict[str, Any]) -> None:
    """Store ``card`` in an ``onnx.ModelProto``'s metadata_props (replacing an older card)."""
    card = {"card_version": CARD_VERSION, **card}
    kept = [p for p in model_proto.metadata_props if p.key != CARD_KEY]
    del model_proto.metadata_props[:]
    for p in kept:
        model_proto.metadata_props.add(key=p.key, value=p.value)
    model_proto.metadata_props.add(key=CARD_KEY, value=json.dumps(card, sort_keys=True))


def update_card(model_proto: Any, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the card stored in ``model_proto`` and return the new card."""
    current: dict[str, Any] = {}
    for p in model_proto.metadata_props:
        if p.key == CARD_KEY:
            current = json.loads(p.value)
    current.update(changes)
    set_card(model_proto, current)
    return current


def op_histogram(path: str | Path, nested: bool = False) -> dict[str, int]:
    """Count the graph's operators (``domain::op`` for non-standard domains) without onnx installed;
    ``nested`` also counts the operators inside subgraphs (a ``Loop``'s body)."""
    data = memoryview(Path(path).read_bytes())
    counts: dict[str, int] = {}
    try:
        for field, wire, graph in _iter_fields(data):
            if field == 7 and wire == 2:  # ModelProto.graph
                _count_ops(graph, counts, nested)
    except (ValueError, UnicodeDecodeError):
        raise ModelFileError(f"{path}: not a valid ONNX file (truncated or corrupt)") from None
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _count_ops(graph: memoryview, counts: dict[str, int], nested: bool) -> None:
    for gfield, gwire, node in _iter_fields(graph):
        if gfield != 1 or gwire != 2:  # GraphProto.node
            continue
        op, domain = "", ""
        for nfield, nwire, value in _iter_fields(node):
            if nfield == 4 and nwire == 2:
                op = bytes(value).decode()
            elif nfield == 7 and nwire == 2:
                domain = bytes(value).decode()
            elif nested and nfield == 5 and nwire == 2:  # NodeProto.attribute
                for afield, awire, sub in _iter_fields(value):
                    if awire == 2 and afield in (6, 11):  # AttributeProto.g / .graphs
                        _count_ops(sub, counts, nested)
        key = f"{domain}::{op}" if domain and domain != "ai.onnx" else op
        counts[key] = counts.get(key, 0) + 1


_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_bytes_per_step(path: str | Path) -> int:
    """Bytes ONNX Runtime keeps per sample and time step for the top-level LSTM/GRU/RNN nodes of a file
    (every step's gates and outputs, float32): sum of directions x hidden x (gates + 1) x 4; 0 without any.
    Read from the protobuf without onnx, skipping tensor data.

    >>> recurrent_bytes_per_step("fashion_lstm.onnx")   # two LSTM layers of 128   # doctest: +SKIP
    5120
    """
    total = 0
    try:
        with mapped_file(path) as data:
            for field, wire, graph in _iter_fields(data):
                if field != 7 or wire != 2:
                    continue
                for gfield, gwire, node in _iter_fields(graph):
                    if gfield == 1 and gwire == 2:
                        total += _node_bytes_per_step(node)
    except (ValueError, UnicodeDecodeError):
        return 0
    return total


def _node_bytes_per_step(node: memoryview) -> int:
    op, hidden, directions = "", 0, 1
    for nfield, nwire, value in _iter_fields(node):
        if nfield == 4 and nwire == 2:
            op = bytes(value).decode()
        elif nfield == 5 and nwire == 2:  # AttributeProto: name (1), i (3), s (4)
            name, number, text = "", 0, b""
            for afield, awire, v in _iter_fields(value):
                if afield == 1 and awire == 2:
                    name = bytes(v).decode()
                elif afield == 3 and awire == 0:
                    number = int(v)
                elif afield == 4 and awire == 2:
                    text = bytes(v)
            if name == "hidden_size":
                hidden = number
            elif name == "direction" and text == b"bidirectional":
                directions = 2
    gates = _GATES.get(op)
    return directions * hidden * (gates + 1) * 4 if gates and hidden > 0 else 0
