"""Example inputs for convolutional front ends.  A first ``nn.Conv1d`` may take its channels first,
``(batch, C, length)``, as Conv1d reads them.  A first ``nn.Conv2d`` says nothing of the input's shape:
clips of frames ``(batch, length, C, H, W)`` (a CNN run on every frame, ``x.view(b * t, c, h, w)``) and
spectrograms ``(batch, C, F, length)`` (an audio CRNN: conv over frequency and time, then the time axis
fed to an LSTM).  Each candidate is one run of the model at a small size; the first that runs is taken
and the note says how to choose another.

>>> spec, examples = conv2d_example(model, time_first=False, dynamic_axes=None, log=print)  # doctest: +SKIP
note: the model takes spectrograms (batch, 1, 40, length) ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..inputs import InputSpec

FRAME_SIDES = (32, 28, 64, 16, 48, 96, 112, 128, 224)  # common square frame sizes, small first
SPECTROGRAM_BINS = (40, 64, 80, 128, 13, 20, 32, 26, 96)  # mel bands / MFCCs, the common ones first
SPECTROGRAM_FRAMES = 48  # example length: none of the bin counts, so time and frequency cannot be confused


def frame_channels(model: Any, first_only: bool = True) -> int | None:
    """``in_channels`` of an ``nn.Conv2d`` registered before any recurrent, Conv1d or linear layer (with
    ``first_only=False``: of the first Conv2d anywhere, as layers may be registered out of call order)."""
    import torch.nn as nn

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
        if first_only and isinstance(module, (nn.Embedding, nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell,
                                              nn.RNNCell, nn.Conv1d, nn.Linear)):
            return None
    return None


def conv1d_channels(model: Any) -> int | None:
    """``in_channels`` of the first ``nn.Conv1d`` the model registers (in a TorchScript file too); None without one."""
    import torch.nn as nn

    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            return int(m.in_channels)
        if getattr(m, "original_name", None) == "Conv1d":  # scripted/traced: weight (out, in / groups, k)
            groups = getattr(m, "groups", 1)
            return int(m.weight.shape[1]) * int(groups if isinstance(groups, int) else 1)
    return None


def channels_first_reading(model: Any, shape: Sequence[int], dynamic_axes: Sequence[int] | None,
                           log: Callable[[str], None] | None) -> tuple[InputSpec, list[Any]] | None:
    """``--input-shape B,C,T`` for a model whose first Conv1d takes C channels: time is the last axis, not the
    second (read as time, the channels would be exported as a fixed length of C). None when it does not apply."""
    from .signature import _example, _failure, _info

    channels = conv1d_channels(model)
    if channels is None or len(shape) != 3 or shape[1] != channels or shape[2] == channels:
        return None
    examples = [_example(list(shape), "float32", None)]
    if _failure(model, examples) is not None:
        return None
    if log:
        log(f"note: --input-shape {','.join(map(str, shape))} reads as (batch, {channels} channels, {shape[2]} steps) "
            f"for the model's first Conv1d; exported input x as [batch, {channels}, seq]")
    return InputSpec([_info("x", "float32", list(shape), 0, 2, dynamic_axes, None)]), examples


def channels_first_example(model: Any, dynamic_axes: Sequence[int] | None,
                           log: Callable[[str], None] | None) -> tuple[InputSpec, list[Any]] | None:
    """``(batch, C, length)`` for a model that rejects ``(batch, length, C)``: one that hands its input straight
    to a first ``nn.Conv1d`` (channels first, as Conv1d reads them), or transposes ``(batch, features, length)``
    for its first layer itself; None when it does not run on that either."""
    from .signature import (
        DEFAULT_EXAMPLE_BATCH,
        DEFAULT_EXAMPLE_LENGTH,
        _example,
        _failure,
        _features_of,
        _info,
        first_layer,
    )

    channels = conv1d_channels(model)
    noun, what = "channels", "channels first as its Conv1d reads them"
    if channels is None:
        layer = first_layer(model)
        if layer is None or type(layer).__name__ == "Embedding" or getattr(layer, "original_name", "") == "Embedding":
            return None
        try:
            channels = _features_of(layer)
        except Exception:  # noqa: BLE001 - no feature count to try
            return None
        if channels == 1:  # a plain series: runnable_signature's univariate reading
            return None
        noun, what = "features", "features first (forward transposes them)"
    steps = DEFAULT_EXAMPLE_LENGTH if DEFAULT_EXAMPLE_LENGTH != channels else DEFAULT_EXAMPLE_LENGTH + 4
    shape = [DEFAULT_EXAMPLE_BATCH, channels, steps]
    examples = [_example(shape, "float32", None)]
    if _failure(model, examples) is not None:
        return None
    if log:
        log(f"note: the model takes (batch, {channels} {noun}, length), {what}; exported input x as "
            f"[batch, {channels}, seq] (pass --input-shape to choose otherwise)")
    return InputSpec([_info("x", "float32", shape, 0, 2, dynamic_axes, None)]), examples


def _spectrogram_shapes(batch: int, channels: int, bins: int) -> list[tuple[list[int], int]]:
    """(example shape, time axis) of spectrogram layouts: ``(batch, C, bins, time)`` as torchaudio writes it,
    ``(batch, C, time, bins)``, and for one channel the same without it (``forward`` adds it: ``x.unsqueeze(1)``)."""
    t = SPECTROGRAM_FRAMES
    shapes = [([batch, channels, bins, t], 3), ([batch, channels, t, bins], 2)]
    if channels == 1:
        shapes += [([batch, bins, t], 2), ([batch, t, bins], 1)]
    return shapes


def conv2d_hint(channels: int) -> str:
    """What ``--input-shape`` to pass for a Conv2d-first model edgeseq could not guess an input for."""
    return (f"BATCH,LENGTH,{channels},H,W for clips of frames, or BATCH,{channels},BINS,LENGTH with --dynamic-axes "
            f"0,3 for spectrograms (its first layer is a Conv2d)")


def conv2d_example(model: Any, time_first: bool, dynamic_axes: Sequence[int] | None,
                   log: Callable[[str], None] | None) -> tuple[InputSpec, list[Any]] | None:
    """The first frame clip or spectrogram the model runs on (and at a second length, for spectrograms), or None."""
    from .signature import DEFAULT_EXAMPLE_BATCH, DEFAULT_EXAMPLE_LENGTH, _axes, _example, _failure, _info

    channels = frame_channels(model, first_only=False)  # the guess is checked by running the model
    if channels is None:
        return None
    b, t = DEFAULT_EXAMPLE_BATCH, DEFAULT_EXAMPLE_LENGTH
    for side in FRAME_SIDES:
        shape = [t, b, channels, side, side] if time_first else [b, t, channels, side, side]
        examples = [_example(shape, "float32", None)]
        if _failure(model, examples) is None:
            if log:
                log(f"note: the model takes clips of frames (batch, length, {channels}, H, W) for its Conv2d; the first "
                    f"frame size it runs on is {side}x{side}: exported input x as [batch, seq, {channels}, {side}, "
                    f"{side}] (other frame sizes: pass --input-shape BATCH,LENGTH,{channels},H,W)")
            return InputSpec([_info("x", "float32", shape, *_axes(time_first), dynamic_axes, None)]), examples
    if time_first:
        return None
    for bins in SPECTROGRAM_BINS:
        for shape, seq_axis in _spectrogram_shapes(b, channels, bins):
            shorter = list(shape)
            shorter[seq_axis] = SPECTROGRAM_FRAMES // 2
            examples = [_example(shape, "float32", None)]
            if _failure(model, examples) is None and _failure(model, [_example(shorter, "float32", None)]) is None:
                dims = ", ".join("length" if a == seq_axis else str(d) for a, d in enumerate(shape) if a > 0)
                flag = ",".join("LENGTH" if a == seq_axis else str(d) for a, d in enumerate(shape) if a > 0)
                if log:
                    log(f"note: the model takes spectrograms (batch, {dims}) for its Conv2d: the first bin count it "
                        f"runs on is {bins}; exported input x with a dynamic length on axis {seq_axis} (other shapes: "
                        f"pass --input-shape BATCH,{flag} --dynamic-axes 0,{seq_axis})")
                return InputSpec([_info("x", "float32", shape, 0, seq_axis, dynamic_axes, None)]), examples
    return None
