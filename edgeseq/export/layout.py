"""Which input axis is the batch and which is time: checked, and detected when no flag says.

A time-first model (``nn.LSTM()`` without ``batch_first=True``) exported as batch-first still passes a
parity gate, because ONNX Runtime and PyTorch misread the axes alike; ``Session.predict`` would then
batch over time.  :func:`check_layout` refuses such a reading; :func:`detect_time_first` picks the
reading that passes when the user gave no flag.

>>> detect_time_first(seq2seq_model, None, None, print)        # doctest: +SKIP
note: read batch-first, changing sample 0 of the input changes other samples' outputs ...
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import LayoutError
from ..inputs import InputSpec
from . import parity
from .packed import unpacked
from .signature import runnable_signature


def check_layout(model: Any, spec: InputSpec, time_first: bool, say: Callable[[str], None] | None = None) -> None:
    """Refuse when the model's outputs follow the sequence axis instead of the batch axis, or when its
    samples are not independent along the batch axis but are along the sequence axis.

    A time-first model exported as batch-first (or the reverse) still passes parity, because both
    runtimes misread the axes the same way, but ``Session.predict`` would then batch over time.  An
    output of shape ``(steps, batch, classes)`` follows both axes, so the second test is the one that
    catches a seq2seq model read the wrong way: changing one "sample" then changes all the others.
    """
    if spec.inputs[0].batch_axis is None or spec.inputs[0].seq_axis is None:
        return
    runner = parity.torch_runner(model)
    probes = [(3, 5), (2, 7)]
    follows_batch = follows_seq = True
    for batch, length in probes:
        try:
            outs = runner(spec.random(batch, length))
        except Exception:
            return  # the model rejects these shapes; the parity gate will speak for it
        dims = {d for o in outs for d in o.shape}
        follows_batch &= batch in dims
        follows_seq &= length in dims
    flag = "drop --time-first" if time_first else "pass --time-first"
    looks_like = f"it looks like a {'batch-first' if time_first else 'time-first (seq, batch, features)'} model"
    if not follows_batch and follows_seq:
        raise LayoutError(
            f"the model's outputs follow the {'batch' if time_first else 'sequence'} axis, not the "
            f"{'sequence' if time_first else 'batch'} axis: {looks_like}; {flag}", not time_first)
    info = spec.inputs[0]
    mixed = _mixes(runner, spec, info.batch_axis, along_batch=True)
    if mixed and _mixes(runner, spec, info.seq_axis, along_batch=False) is False:
        raise LayoutError(
            f"changing sample 0 of the input changes other samples' outputs ({mixed}), while samples along the "
            f"{'batch' if time_first else 'sequence'} axis stay independent: {looks_like}; {flag}", not time_first)
    if mixed and say:
        say(f"warning: changing sample 0 of the input changes other samples' outputs ({mixed}): the model mixes "
            "samples, so its answers depend on what else is in the batch (Session.predict runs chunks)")


def detect_time_first(model: Any, input_shape: Sequence[int] | None, dynamic_axes: Sequence[int] | None,
                      say: Callable[[str], None]) -> bool:
    """Whether ``model`` reads ``(seq, batch, ...)``: :func:`check_layout` refuses the batch-first reading and
    accepts the time-first one (``nn.LSTM()`` without ``batch_first=True``, as the seq2seq tutorials write it).
    Anything short of that keeps batch-first, whose own checks then speak."""

    packers = {tf: unpacked(model, tf, input_shape, dynamic_axes) for tf in (False, True)}

    def fits(time_first: bool) -> bool | str:
        """True when this reading runs and passes :func:`check_layout`, else why not."""
        subject = packers[time_first]
        if subject is None and packers[not time_first] is not None:  # forward(x, lengths), packed one way only
            return f"forward's lengths, one per sample along axis {1 if time_first else 0}, do not fit its input"
        subject = subject or model
        try:
            spec, _ = runnable_signature(subject, input_shape, dynamic_axes, time_first)
            check_layout(subject, spec, time_first)
        except LayoutError as exc:
            return str(exc).split(": it looks like")[0]
        except Exception as exc:  # noqa: BLE001 - e.g. forward(x, lengths) whose packing fails read this way
            return f"the model fails ({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]})"
        return True

    why = fits(False)
    if why is True or fits(True) is not True:
        return False
    say(f"note: read batch-first, {why}; read time-first, (seq, batch, ...), it passes: exported time-first "
        "(--time-first says so yourself, --batch-first refuses this)")
    return True


# (batch, length) pairs tried in turn until every output has exactly one axis of the probed size: an output
# with 3 or 5 classes has two axes of size 3 or 5 at the first pair, and was skipped, which let a time-first
# per-step model with 3 classes export batch-first without a word.
PROBE_SIZES = ((3, 5), (7, 11), (13, 17))


def _mixes(runner: Any, spec: InputSpec, axis: int, along_batch: bool) -> str | None | bool:
    """Whether changing index 0 of the first input along ``axis`` (the batch axis when ``along_batch``, else
    the sequence axis) changes any output at the other indices of its axis of that size: a description of
    the first output that changed, False when none did, None when the model cannot tell (it fails, or no
    output has exactly one axis of that size at any of :data:`PROBE_SIZES`)."""
    for k, (batch, length) in enumerate(PROBE_SIZES):
        size, other = (batch, length) if along_batch else (length, batch)
        found = _mixes_at(runner, spec, axis, size, other, strict=k < len(PROBE_SIZES) - 1)
        if found != "ambiguous":
            return found
    return None


def _mixes_at(runner: Any, spec: InputSpec, axis: int, size: int, other: int,
              strict: bool) -> str | None | bool:
    """:func:`_mixes` at one probe size; "ambiguous" when ``strict`` and some output has several axes of
    ``size`` (without ``strict`` such outputs are skipped)."""
    batch, length = (size, other) if axis == spec.inputs[0].batch_axis else (other, size)
    try:
        arrays = spec.random(batch, length, seed=21)
        changed = list(arrays)
        index = [slice(None)] * arrays[0].ndim
        index[axis] = 0
        changed[0] = arrays[0].copy()
        changed[0][tuple(index)] = spec.random(batch, length, seed=22)[0][tuple(index)]
        before, after = runner(arrays), runner(changed)
    except Exception:  # noqa: BLE001 - the model rejects these shapes: the parity gate will speak for it
        return None
    if strict and any(sum(d == size for d in a.shape) > 1 for a in before):
        return "ambiguous"
    seen = False
    for i, (a, b) in enumerate(zip(before, after)):
        axes = [k for k, d in enumerate(a.shape) if d == size]
        if len(axes) != 1 or a.shape != b.shape:
            continue
        seen = True
        rest_a, rest_b = np.delete(a, 0, axis=axes[0]), np.delete(b, 0, axis=axes[0])
        scale = float(np.abs(rest_a).max()) if rest_a.size else 0.0
        if rest_a.size and not np.allclose(rest_a, rest_b, rtol=1e-5, atol=1e-6 * max(scale, 1.0)):
            return f"output {i}"
    return False if seen else None
