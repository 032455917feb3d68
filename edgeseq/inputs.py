"""Input signatures: what a model takes, which axes vary, and random inputs for parity sweeps.

Shared by the exporter (from a PyTorch model) and the checker (from an ONNX file's
model card), so this module needs only numpy.

>>> spec = InputSpec([InputInfo("x", "float32", [2, 8, 6])])
>>> spec.random(batch=3, length=17)[0].shape
(3, 17, 6)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .errors import InputError


@dataclass
class InputInfo:
    """One graph input: example shape, dtype, which axes are batch/seq, token range for ids."""

    name: str
    dtype: str  # numpy dtype name: "float32" or "int64"
    shape: list[int]  # example shape
    batch_axis: int | None = 0
    seq_axis: int | None = 1
    dynamic: dict[int, str] = field(default_factory=dict)  # axis -> name
    vocab_size: int | None = None  # int inputs: ids must be < vocab_size
    low: float | None = None  # float inputs: value range of the declared example (e.g. prices > 0)
    high: float | None = None
    lengths_of: str | None = None  # per-sample lengths (1..steps) of this sequence input, e.g. forward(x, lengths, meta)

    def __post_init__(self) -> None:
        self.dynamic = {int(k): v for k, v in (self.dynamic or {}).items()}
        if not self.dynamic:
            if self.batch_axis is not None:
                self.dynamic[self.batch_axis] = "batch"
            if self.seq_axis is not None and self.seq_axis < len(self.shape):
                self.dynamic[self.seq_axis] = "seq"

    @property
    def layout(self) -> str:
        return "time_first" if self.seq_axis == 0 else "batch_first"

    @property
    def features(self) -> int | None:
        if self.dtype.startswith("int") or len(self.shape) != 3 or self.seq_axis == 2:
            return None  # (batch, channels, bins, length) and the like have no one feature count
        return int(self.shape[-1])

    @property
    def own_length(self) -> bool:
        """A sequence whose length varies apart from the first input's (an encoder-decoder's target):
        its time axis has a name of its own (``tgt_seq``) instead of ``seq``."""
        name = self.dynamic.get(self.seq_axis) if self.seq_axis is not None else None
        return name is not None and name != "seq"

    @property
    def length_is_fixed(self) -> bool:
        """A sequence input whose length axis is not dynamic (the model runs at one length only)."""
        return self.seq_axis is not None and self.seq_axis < len(self.shape) and self.seq_axis not in self.dynamic

    def shape_for(self, batch: int, length: int) -> list[int]:
        shape = list(self.shape)
        if self.batch_axis is not None:
            shape[self.batch_axis] = batch
        if self.seq_axis is not None and self.seq_axis < len(shape):
            shape[self.seq_axis] = length
        return shape

    def symbolic_shape(self) -> list[int | str]:
        return [self.dynamic.get(i, d) for i, d in enumerate(self.shape)]


@dataclass
class InputSpec:
    """All inputs of a model, in order."""

    inputs: list[InputInfo]

    @property
    def example_length(self) -> int:
        first = self.inputs[0]
        return int(first.shape[first.seq_axis]) if first.seq_axis is not None and first.seq_axis < len(first.shape) else 1

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def fixed_length(self) -> int | None:
        """The only sequence length the model accepts, when its length axis is fixed (else None)."""
        return self.example_length if self.inputs[0].length_is_fixed else None

    def with_fixed_length(self) -> InputSpec:
        """This spec with every sequence axis fixed at the example's length (batch axes stay dynamic)."""
        infos = []
        for info in self.inputs:
            fixed = replace(info)
            fixed.dynamic = {a: n for a, n in info.dynamic.items() if a != info.seq_axis}
            infos.append(fixed)
        return InputSpec(infos)

    def length_of(self, info: InputInfo, length: int) -> int:
        """The length of input ``info`` when the first input has ``length`` steps: the same, or for an input
        with a length of its own, ``length`` scaled by the two examples' ratio (at least 1), so sweeps vary both.

        >>> spec = InputSpec([InputInfo("x", "float32", [2, 12, 8]),
        ...                   InputInfo("tgt", "float32", [2, 6, 4], dynamic={0: "batch", 1: "tgt_seq"})])
        >>> [a.shape[1] for a in spec.random(batch=1, length=30)]
        [30, 15]
        """
        if not info.own_length or info is self.inputs[0]:
            return length
        return max(1, round(length * int(info.shape[info.seq_axis]) / max(self.example_length, 1)))

    def random(self, batch: int, length: int, seed: int = 0,
               own_lengths: dict[str, int] | None = None) -> list[np.ndarray]:
        """Random inputs at ``batch`` x ``length``: uniform ids in range; floats uniform over the declared
        example's value range when known (a model taking log-prices needs positive inputs), else standard normal.
        An input with a length of its own gets ``own_lengths[name]``, else :meth:`length_of`."""
        rng = np.random.default_rng(seed)
        arrays = []
        for info in self.inputs:
            steps = (own_lengths or {}).get(info.name) or self.length_of(info, length)
            shape = info.shape_for(batch, steps)
            if info.lengths_of is not None:  # each sample's length: 1 to the sequence's steps
                of = next((i for i in self.inputs if i.name == info.lengths_of), self.inputs[0])
                arrays.append(rng.integers(1, self.length_of(of, length) + 1, size=shape).astype(info.dtype))
            elif info.dtype.startswith("int"):
                high = info.vocab_size or 2
                arrays.append(rng.integers(0, high, size=shape).astype(info.dtype))
            elif info.low is not None and info.high is not None and info.high > info.low:
                arrays.append(rng.uniform(info.low, info.high, size=shape).astype(info.dtype))
            else:
                arrays.append(rng.standard_normal(shape).astype(info.dtype))
        return arrays

    def to_card(self) -> list[dict[str, Any]]:
        out = []
        for info in self.inputs:
            d = asdict(info)
            d["dynamic"] = {str(k): v for k, v in info.dynamic.items()}
            d["layout"] = info.layout
            d["symbolic_shape"] = info.symbolic_shape()
            d["features"] = info.features
            out.append(d)
        return out

    @classmethod
    def from_card(cls, entries: list[dict[str, Any]]) -> InputSpec:
        fields_ = set(InputInfo.__dataclass_fields__)
        return cls([InputInfo(**{k: v for k, v in e.items() if k in fields_}) for e in entries])

    @property
    def fixed_batch(self) -> int | None:
        """The only batch size the first input accepts, when its batch axis is not dynamic (else None)."""
        first = self.inputs[0]
        if first.batch_axis is None or first.batch_axis >= len(first.shape) or first.batch_axis in first.dynamic:
            return None
        return int(first.shape[first.batch_axis])

    @classmethod
    def from_session_inputs(cls, inputs: list[Any], time_first: bool = False, example_length: int = 8) -> InputSpec:
        """Best-effort spec for an ONNX file without a card, from its axis names.

        The first input's axes are (batch, seq, ...) (``time_first``: (seq, batch, ...)); another input's
        batch and sequence axes are the ones named like those (a hand-exported ``h0: [1, batch, 20]`` has
        its batch on axis 1 and no sequence axis).  Unnamed dims count as their position's.

        >>> from types import SimpleNamespace as T
        >>> spec = InputSpec.from_session_inputs([T(name="x", dtype="float32", shape=["batch", "seq", 6]),
        ...                                      T(name="h0", dtype="float32", shape=[1, "batch", 20])])
        >>> [a.shape for a in spec.random(batch=3, length=5)]
        [(3, 5, 6), (1, 3, 20)]
        """
        batch_pos, seq_pos = (1, 0) if time_first else (0, 1)
        first_dims = list(inputs[0].shape) if inputs else []

        def name_at(axis: int) -> str | None:
            dim = first_dims[axis] if axis < len(first_dims) else None
            return dim if isinstance(dim, str) and dim else None

        batch_name, seq_name = name_at(batch_pos), name_at(seq_pos)
        infos = []
        for index, spec in enumerate(inputs):
            dims = list(spec.shape)
            batch_axis: int | None = batch_pos
            seq_axis: int | None = seq_pos if len(dims) > 1 else None
            fixed_batch = first_dims[batch_pos] if batch_pos < len(first_dims) else None
            if index > 0 and batch_name is None and isinstance(fixed_batch, int) and fixed_batch > 0:
                # a fixed batch: the others hold it where their size is the same (h0: [1, 2, 16] at batch 2)
                batch_axis = (batch_pos if batch_pos < len(dims) and dims[batch_pos] == fixed_batch
                              else next((a for a, d in enumerate(dims) if d == fixed_batch), None))
                seq_axis = None if seq_axis == batch_axis else seq_axis
            if index > 0 and batch_name is not None:  # the first input's names say where the others' axes are
                batch_axis = dims.index(batch_name) if batch_name in dims else None
                named = [a for a, d in enumerate(dims) if isinstance(d, str) and d and a != batch_axis]
                seq_axis = (dims.index(seq_name) if seq_name in dims
                            else (named[0] if named else None))  # a length of its own (a decoder's target)
            if batch_axis is not None and batch_axis >= len(dims):
                batch_axis = None
            shape, dynamic = [], {}
            for axis, dim in enumerate(dims):
                if isinstance(dim, int) and dim > 0:
                    shape.append(dim)
                else:
                    shape.append(2 if axis == batch_axis else example_length)
                    dynamic[axis] = str(dim)
            dtype = np.dtype(spec.dtype).name
            info = InputInfo(spec.name, dtype, shape, batch_axis, seq_axis, dynamic)
            info.dynamic = dynamic  # as the file says: fixed axes stay fixed (not filled in as batch/seq)
            infos.append(info)
        return cls(infos)


def parse_shape(text: str) -> list[int]:
    """Parse ``"1,10,4"`` into ``[1, 10, 4]``."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = [int(p) for p in parts]
    except ValueError:  # "2,30,x", "2,,30": a part that is not a number is a typo, never dropped
        raise InputError(f"--input-shape {text!r}: expected comma-separated integers like 1,100,6") from None
    if not shape or any(d < 1 for d in shape):
        raise InputError(f"--input-shape {text!r}: every dimension must be a positive integer")
    return shape


def parse_int_list(text: str, what: str, minimum: int = 1, example: str = "1,3,16") -> list[int]:
    """Parse ``"1,3,16"`` into ``[1, 3, 16]``; every value must be at least ``minimum``."""
    kind = "positive integers" if minimum >= 1 else "axis numbers"
    message = f"{what} {text!r}: expected comma-separated {kind} like {example}"
    try:
        values = [int(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        raise InputError(message) from None
    if not values or any(v < minimum for v in values):
        raise InputError(message)
    return values


def parse_axes(text: str) -> list[int]:
    """Parse ``"0,1"`` into ``[0, 1]`` (non-negative axis indices)."""
    return parse_int_list(text, "--dynamic-axes", minimum=0, example="0,1")
