"""Input checks: a numpy array the graph accepts, or an :class:`InputError` saying what to change.

>>> check_array([[1, 2]], TensorSpec("ids", np.int64, ("batch", "seq")), vocab_size=3).dtype
dtype('int64')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}

@dataclass(frozen=True)
class TensorSpec:
    """Name, numpy dtype and shape of a graph input or output; dims are ints or axis names."""

    name: str
    dtype: Any
    shape: tuple[int | str, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"


def thread_count(value: Any) -> int | None:
    """``threads`` checked: a positive int, and not beyond what a machine can use (ONNX Runtime hangs on
    thousands of threads and then ignores SIGTERM): at most 4 per core, or 64."""
    import os

    threads = positive_int(value, "threads")
    cores = os.cpu_count() or 1
    limit = max(64, 4 * cores)
    if threads is not None and threads > limit:
        raise InputError(f"threads={threads} is far more than this machine's {cores} cores can use (at most "
                         f"{limit}); pass at most {cores}")
    return threads


def positive_int(value: Any, name: str) -> int | None:
    """``value`` as an int >= 1 (None passes through); InputError naming ``name`` otherwise.

    >>> positive_int(4, "threads")
    4
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def spec_of(node: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or "?") for d in (node.shape or ()))
    return TensorSpec(node.name, _ORT_TO_NUMPY.get(node.type, np.float32), shape)


def check_array(x: Any, spec: TensorSpec, allow_nonfinite: bool = False, *, vocab_size: int | None = None,
                batch_axis: int | None = 0, seq_axis: int | None = 1, offset: int = 0) -> np.ndarray:
    """Return ``x`` as an array the graph accepts, or raise :class:`InputError` saying what to change.

    Checks rank, fixed dims, empty axes, NaN/Inf (naming sample and step), lossless casting and,
    with ``vocab_size``, that integer token ids lie in ``0..vocab_size-1``.

    >>> check_array([[1, 2]], TensorSpec("ids", np.int64, ("batch", "seq")), vocab_size=3).dtype
    dtype('int64')
    """
    x = check_shape(x, spec)
    return _cast(x, spec, allow_nonfinite, vocab_size, _Where(batch_axis, seq_axis, offset))


def untorch(x: Any) -> Any:
    """A torch tensor (from a notebook, say) as a numpy array, without importing torch; anything else as is."""
    if callable(getattr(x, "detach", None)) and callable(getattr(x, "numpy", None)):
        return x.detach().cpu().numpy()
    return x


def check_shape(x: Any, spec: TensorSpec) -> np.ndarray:
    """``x`` as an array with ``spec``'s rank and fixed dims and no empty axis (values are not looked at)."""
    try:
        x = np.asarray(untorch(x))
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InputError(f"input {spec.name!r}: ragged data; all samples need the same shape (pad them)") from None
    if x.dtype.kind not in "biuf":
        raise InputError(f"input {spec.name!r}: dtype {x.dtype} is not numeric")
    if x.ndim != spec.rank:
        hint = ""
        if x.ndim == spec.rank - 1:
            # a fixed axis of 1 after the batch (a spectrogram's channel) that the data lacks: insert that one
            ones = [a for a, d in enumerate(spec.shape) if a > 0 and d == 1]
            hint = (f" (add the axis of 1, e.g. np.expand_dims(x, {ones[0]}))" if ones and x.shape[0] != 1
                    else " (add a batch axis, e.g. x[None])")
        raise InputError(
            f"input {spec.name!r} expects rank {spec.rank} [{', '.join(map(str, spec.shape))}], "
            f"got shape {tuple(x.shape)}{hint}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, x.shape)):
        if isinstance(want, int) and want != got:
            raise InputError(
                f"input {spec.name!r} axis {axis} must be {want}, got {got} "
                f"(shape {tuple(x.shape)}; expected [{', '.join(map(str, spec.shape))}])"
            )
    if any(d == 0 for d in x.shape):
        named = [str(d) for d in spec.shape]
        if x.ndim and x.shape[0] == 0 and named[0] in ("batch", "N"):
            raise InputError(f"input {spec.name!r} has no samples (shape {tuple(x.shape)}): nothing to run")
        raise InputError(f"input {spec.name!r} has an empty axis (shape {tuple(x.shape)}); every sequence needs at least one step")
    return x


@dataclass(frozen=True)
class _Where:
    """How to name a position in error messages: which axes are sample/step, and the first sample's number."""

    batch_axis: int | None
    seq_axis: int | None
    offset: int

    def __call__(self, mask: np.ndarray) -> str:
        pos = [int(i) for i in np.argwhere(mask)[0]]
        if self.batch_axis is not None and self.batch_axis < len(pos):
            pos[self.batch_axis] += self.offset
        named = []
        if self.batch_axis is not None and self.batch_axis < len(pos):
            named.append(f"sample {pos[self.batch_axis]}")
        if self.seq_axis is not None and self.seq_axis < len(pos):
            named.append(f"step {pos[self.seq_axis]}")
        return f"index {tuple(pos)}" + (f" ({', '.join(named)})" if named else "")


def _cast(x: np.ndarray, spec: TensorSpec, allow_nonfinite: bool, vocab_size: int | None = None,
          where: _Where = _Where(0, 1, 0)) -> np.ndarray:
    want = np.dtype(spec.dtype)
    name = spec.name
    if x.dtype.kind == "b" and want.kind != "b":
        raise InputError(f"input {name!r}: boolean data given where {want.name} is expected")
    if want.kind == "f":
        if x.dtype.kind == "f":
            if not allow_nonfinite:
                finite = np.isfinite(x)
                if not finite.all():
                    raise InputError(f"input {name!r} has NaN/Inf at {where(~finite)}; clean the data or pass "
                                     "allow_nonfinite / --allow-nonfinite")
            if x.dtype != want and np.finfo(x.dtype).max > np.finfo(want).max:
                too_big = np.isfinite(x) & (np.abs(x) > np.finfo(want).max)
                if too_big.any():
                    raise InputError(f"input {name!r}: value at {where(too_big)} overflows {want.name} "
                                     f"(largest is {np.finfo(want).max:.3g}); rescale the data")
        elif x.dtype.kind in "iu":
            exact = 2 ** (np.finfo(want).nmant + 1)  # larger integers are rounded by the cast
            inexact = (x > exact) | (x < -exact)
            if inexact.any():
                raise InputError(f"input {name!r}: integer at {where(inexact)} is above 2**{np.finfo(want).nmant + 1} "
                                 f"and cannot be represented exactly as {want.name}; rescale the data")
        return x.astype(want, copy=False)
    if want.kind in "iu":
        if x.dtype.kind == "f":
            bad = ~np.isfinite(x) | (x != np.round(x))
            if bad.any():
                raise InputError(f"input {name!r} expects integer ids ({want.name}); got non-integer float at "
                                 f"{where(bad)}")
        info = np.iinfo(want)
        if vocab_size is not None:
            out = (x < 0) | (x >= vocab_size)
            if out.any():
                value = x[tuple(np.argwhere(out)[0])]
                raise InputError(f"input {name!r}: token id {value:.0f} at {where(out)} is outside the embedding's "
                                 f"range 0..{vocab_size - 1}; map unknown tokens to a valid id (e.g. 0)")
        elif x.dtype != want and (x.dtype.kind == "f" or np.iinfo(x.dtype).max > info.max
                                  or np.iinfo(x.dtype).min < info.min):
            # float(info.max) rounds up to 2**63 for int64, so compare floats against max + 1, in float64
            # (in float16 the bound itself overflows, with a RuntimeWarning)
            if x.dtype.kind == "f":
                wide = x.astype(np.float64, copy=False)
                out = (wide < info.min) | (wide >= float(info.max) + 1)
            else:
                out = (x < info.min) | (x > info.max)
            if out.any():
                raise InputError(f"input {name!r}: value at {where(out)} does not fit {want.name}")
        return x.astype(want, copy=False)
    return x.astype(want, copy=False)
