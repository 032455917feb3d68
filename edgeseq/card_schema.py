"""The model card's shape, checked when a file is opened: a hand-edited or damaged card is one clear
error, never a KeyError or TypeError deep in a run.

Only the fields edgeseq reads back are described; anything else in a card is left alone.

>>> card_problem({"inputs": [{"name": "x", "batch_axis": "0"}]})
"inputs[0].batch_axis must be an integer or null, got '0'"
"""

from __future__ import annotations

from typing import Any

INT, NUM, STR, BOOL, DIM = "integer", "number", "string", "true/false", "dimension"
OPTIONAL = "or null"

# field -> expected kind; a dict is an object with those fields (required ones marked with "!"; the others may be
# absent or null), a one-item list a list of that kind, {"*": kind} a mapping of any names to that kind
_STATE = {"name!": STR, "input": STR, "output": STR, "batch_axis": INT, "shape": [DIM],
          "parts": [{"input!": STR, "output!": STR}]}
_INPUT = {"name!": STR, "dtype": STR, "shape!": [INT], "batch_axis": (INT, OPTIONAL), "seq_axis": (INT, OPTIONAL),
          "dynamic": {"*": STR}, "vocab_size": (INT, OPTIONAL), "low": (NUM, OPTIONAL), "high": (NUM, OPTIONAL),
          "lengths_of": (STR, OPTIONAL), "layout": STR, "features": (INT, OPTIONAL)}
SCHEMA: dict[str, Any] = {
    "inputs": [_INPUT],
    "output_axes": {"*": {"batch_axis": (INT, OPTIONAL), "seq_axis": (INT, OPTIONAL)}},
    "state_inputs": [STR], "state_outputs": [STR],
    "streaming": {"layers!": [{"name!": STR, "states!": [_STATE]}]},
    "parity": {"atol": (NUM, OPTIONAL), "rtol": (NUM, OPTIONAL), "batch_sizes": [INT], "lengths": [INT],
               "max_abs": (NUM, OPTIONAL), "min_sqnr_db": (NUM, OPTIONAL), "passed": BOOL, "check": (STR, OPTIONAL)},
    "quantization": {"mode": STR, "settings": ({"*": "any"}, OPTIONAL),
                     "metrics": ({"metric": (STR, OPTIONAL), "float_value": (NUM, OPTIONAL),
                                  "quantized_value": (NUM, OPTIONAL)}, OPTIONAL),
                     "drift": ({"max_abs": (NUM, OPTIONAL), "sqnr_db": (NUM, OPTIONAL)}, OPTIONAL),
                     "float_model": ({"file": (STR, OPTIONAL), "sha256": (STR, OPTIONAL)}, OPTIONAL)},
    "graph_cleanup": {"by": [STR], "nodes": [INT]}, "loops": ({"*": "any"}, OPTIONAL),
    "precision": STR, "layout": STR, "exporter": STR, "source": STR, "lengths_input": (STR, OPTIONAL),
    "lengths_parameter": (STR, OPTIONAL), "packed_by": (STR, OPTIONAL), "max_steps": (INT, OPTIONAL), "min_steps": (INT, OPTIONAL),
    "opset": INT, "example_length": INT, "features": (INT, OPTIONAL), "versions": {"*": "any"},
}


def card_problem(card: Any) -> str | None:
    """What is wrong with ``card`` against :data:`SCHEMA` (the first problem), or None."""
    if not isinstance(card, dict):
        return f"the card must be an object, got {type(card).__name__}"
    problem = _check(card, SCHEMA, "")
    if problem is None:
        problem = _axes_problem(card)
    return problem


def _check(value: Any, kind: Any, where: str) -> str | None:
    if isinstance(kind, tuple):  # (kind, OPTIONAL)
        if value is None:
            return None
        problem = _check(value, kind[0], where)
        return None if problem is None else problem.replace(f"must be {_name(kind[0])}", f"must be {_name(kind[0])} or null")
    if kind == "any":
        return None
    if isinstance(kind, list):
        if not isinstance(value, list):
            return f"{where} must be a list, got {_show(value)}"
        for i, item in enumerate(value):
            problem = _check(item, kind[0], f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            return f"{where or 'the card'} must be an object, got {_show(value)}"
        if "*" in kind:
            return next((p for k, v in value.items() if (p := _check(v, kind["*"], f"{where}.{k}"))), None)
        for field, sub in kind.items():
            name = field.rstrip("!")
            path = f"{where}.{name}" if where else name
            if value.get(name) is None:  # an optional field may be absent or null; the code reading it checks
                if field.endswith("!"):
                    return f"{path} is missing"
                continue
            problem = _check(value[name], sub, path)
            if problem:
                return problem
        return None
    ok = {INT: isinstance(value, int) and not isinstance(value, bool),
          NUM: isinstance(value, (int, float)) and not isinstance(value, bool),
          STR: isinstance(value, str), BOOL: isinstance(value, bool),
          DIM: isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))}[kind]
    return None if ok else f"{where} must be {_name(kind)}, got {_show(value)}"


def _axes_problem(card: dict[str, Any]) -> str | None:
    """Axes that point outside their input's shape (the types are right, the numbers are not)."""
    for i, entry in enumerate(card.get("inputs") or []):
        if entry.get("dtype") is not None and entry["dtype"] not in _DTYPES:
            return f"inputs[{i}].dtype must be one of {', '.join(_DTYPES)}, got {entry['dtype']!r}"
        rank = len(entry.get("shape") or [])
        for axis in ("batch_axis", "seq_axis"):
            value = entry.get(axis)
            if value is not None and rank and not 0 <= value < rank:
                return f"inputs[{i}].{axis} is {value}, outside the input's {rank} axes"
        if "batch_axis" in entry and entry["batch_axis"] is None and "batch" in (entry.get("dynamic") or {}).values():
            return f"inputs[{i}].batch_axis is null, but the input's axes name a batch"
        if entry.get("vocab_size") is not None and entry["vocab_size"] < 1:
            return f"inputs[{i}].vocab_size must be at least 1, got {entry['vocab_size']}"
    if isinstance(card.get("max_steps"), int) and card["max_steps"] < 1:
        return f"max_steps must be at least 1, got {card['max_steps']}"
    return None


_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


def _name(kind: Any) -> str:
    return {INT: "an integer", NUM: "a number", STR: "a string", BOOL: "true or false",
            DIM: "a size or an axis name"}.get(kind, "an object") \
        if not isinstance(kind, list) else "a list"


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
