"""``edgeseq infer --stream``: one time step per stdin line, one flushed output line per step.

>>> stream_stdin("motion-stream.onnx", sys.stdin, sys.stdout, device="cpu")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import InputError, ModelFileError
from .checks import TensorSpec
from .streaming import StreamingSession


def parse_step(text: str, lineno: int) -> list[float]:
    """One time step from a line: ``1.0,2,3`` / ``1 2 3`` or a JSON array ``[1.0, 2, 3]``."""
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"stdin line {lineno}: invalid JSON array ({exc.msg})") from None
        # one flat list of numbers: true/false or a nested list is a mistake, not a value
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values):
            raise InputError(f"stdin line {lineno}: expected one flat JSON array of numbers, like [0.5, 1, 2]")
        return values
    out = []
    body = text.strip()
    body = body[:-1] if body.endswith(",") else body  # one trailing comma, as some loggers write
    cells = body.split(",") if "," in body else body.split()  # comma-separated, else whitespace-separated
    for cell in cells:
        cell = cell.strip()
        if not cell:
            raise InputError(f"stdin line {lineno}: an empty cell (two commas in a row?); every value must be a number")
        try:
            out.append(float(cell))
        except ValueError:
            raise InputError(f"stdin line {lineno}: {cell!r} is not a number") from None
    return out


def stream_stdin(model: str | Path, stdin: TextIO | Iterable[str], stdout: TextIO, device: str = "auto",
                 threads: int | None = None, reset_on_blank: bool = False, allow_nonfinite: bool = False,
                 static: Mapping[str, Sequence[float]] | None = None) -> int:
    """Read one time step per line, write the model's output for it as one JSON array per line (flushed).

    With ``reset_on_blank`` an empty line starts a new sequence and is echoed as an empty line;
    otherwise empty lines are skipped.  A model that also takes per-sequence data (``forward(x, meta)``)
    gets it from ``static`` (``{"meta": [0.5, 1, 2]}``, ``--static meta=0.5,1,2``) or from a line holding a
    JSON object, ``{"meta": [0.5, 1, 2]}``, which applies to the steps after it.  Returns the number of
    steps run.

    >>> stream_stdin("motion-stream.onnx", sys.stdin, sys.stdout, device="cpu")   # doctest: +SKIP
    """
    session = StreamingSession(model, device=device, threads=threads, allow_nonfinite=allow_nonfinite)
    values = _static_values(session, static or {}, "--static")
    spec = session.input
    per_step = [d for a, d in enumerate(spec.shape) if a not in (session.batch_axis, session.seq_axis)]
    if not all(isinstance(d, int) for d in per_step):
        raise ModelFileError(f"{model}: the input's feature axes are not fixed ({spec.describe()}); cannot read steps")
    width = int(np.prod(per_step)) if per_step else 1
    out_axes = session.output_axes[session.output_names[0]]
    shape = [1 if a in (session.batch_axis, session.seq_axis) else int(d) for a, d in enumerate(spec.shape)]
    steps = 0
    for lineno, line in enumerate(stdin, start=1):
        text = (line[1:] if lineno == 1 and line.startswith("\ufeff") else line).strip()  # a BOM (Excel's "CSV UTF-8")
        if not text:
            if reset_on_blank:
                session.reset()
                _emit(stdout, "")
            continue
        if text.startswith("{"):
            values.update(_static_values(session, _json_object(text, lineno), f"stdin line {lineno}"))
            continue
        step_values = parse_step(text, lineno)
        if len(step_values) != width:
            raise InputError(f"stdin line {lineno}: expected {width} value(s) per step, got {len(step_values)}")
        missing = [i for i in session.static_inputs if i.name not in values]
        if missing:
            first = missing[0]
            raise InputError(
                f"stdin line {lineno}: this model also takes {first.name} ({_static_width(first)} value(s) per "
                f"sequence): pass --static {first.name}=v1,v2,... or send a line {{\"{first.name}\": [...]}} first")
        x = np.asarray(step_values).reshape(shape)
        try:
            y = session.step(x, **values)
        except InputError as exc:  # e.g. a NaN: say which line, not the index inside the one-step array
            raise InputError(f"stdin line {lineno}: {_without_index(str(exc))}") from None
        row = np.take(y, 0, axis=out_axes["batch_axis"] if out_axes["batch_axis"] is not None else 0)
        seq = out_axes["seq_axis"]
        if seq is not None:
            ba = out_axes["batch_axis"] if out_axes["batch_axis"] is not None else 0
            row = np.take(row, 0, axis=seq - (1 if seq > ba else 0))
        steps += 1
        _emit(stdout, json.dumps(np.asarray(row).tolist()))
    return steps


def _without_index(message: str) -> str:
    """'input 'x' has NaN at index (0, 0, 5) (sample 0, step 0); ...' -> '... has NaN in value 6; ...'."""
    return re.sub(r"at index \(0, 0, (\d+)\) \(sample 0, step 0\)", lambda m: f"in value {int(m.group(1)) + 1}", message)


def _static_width(spec: TensorSpec) -> int | str:
    dims = spec.shape[1:]
    return int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else "?"


def _json_object(text: str, lineno: int) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"stdin line {lineno}: invalid JSON object ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"stdin line {lineno}: expected a JSON object like {{\"meta\": [1, 2, 3]}}")
    return obj


def _static_values(session: StreamingSession, given: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """``given`` (name -> numbers) as one-sample arrays for the session's per-sequence inputs, checked."""
    specs = {i.name: i for i in session.static_inputs}
    if given and not specs:
        raise InputError(f"{where}: this model takes no input besides the sequence "
                         f"(got {', '.join(map(str, given))})")
    out = {}
    for name, raw in given.items():
        spec = specs.get(name)
        if spec is None:
            raise InputError(f"{where}: unknown input {name!r}; this model also takes {', '.join(specs)}")
        flat = np.asarray(raw, dtype=object).ravel().tolist() if isinstance(raw, (list, tuple)) else [raw]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
            raise InputError(f"{where}: {name} must be numbers")
        width = _static_width(spec)
        if width != len(flat):
            raise InputError(f"{where}: {name} takes {width} value(s) per sequence ({spec.describe()}), got {len(flat)}")
        dims = [1, *(int(d) for d in spec.shape[1:])]
        out[name] = np.asarray(flat, dtype=spec.dtype).reshape(dims)
    return out


def _emit(stdout: TextIO, text: str) -> None:
    """Write one line and flush it at once; a reader that has gone away (piped into head) raises
    BrokenPipeError, which the CLI turns into exit status 141, as a shell pipeline expects."""
    stdout.write(text + "\n")
    stdout.flush()
