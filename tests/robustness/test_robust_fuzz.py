"""Property tests: any file or array either works or raises EdgeseqError -- never another exception, never a hang."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeseq import EdgeseqError
from edgeseq.runtime.checks import TensorSpec, check_array
from edgeseq.runtime.io import open_input, read_input

# Modest by default so the suite stays fast; EDGESEQ_FUZZ_EXAMPLES=5000 for a deeper run.
FUZZ = settings(max_examples=int(os.environ.get("EDGESEQ_FUZZ_EXAMPLES", "100")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _read(suffix: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"in{suffix}"
        path.write_bytes(content)
        try:
            batch = read_input(path)
        except EdgeseqError:
            return
        assert isinstance(batch.x, np.ndarray) and batch.x.dtype.kind in "biuf" and batch.x.ndim >= 1
        if batch.lengths is not None:
            assert batch.lengths.shape == (len(batch.x),) and batch.lengths.min() >= 1
        if suffix == ".npy":  # the chunked reader agrees with the whole-file reader
            with open_input(path) as src:
                assert src.shape == batch.x.shape
                if len(src) and src.row_bytes:
                    np.testing.assert_array_equal(np.concatenate([c for _, c, _ in src.chunks(3)]), batch.x)


def _npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


@FUZZ
@given(st.sampled_from([".npy", ".npz", ".csv", ".jsonl"]), st.binary(max_size=400))
def test_random_bytes(suffix, content):
    _read(suffix, content)


@FUZZ
@given(hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=4, max_side=4)),
       st.integers(0, 400), st.binary(max_size=16))
def test_corrupted_npy(x, cut, tail):
    """Valid .npy files of any dtype/shape, truncated or with bytes flipped/appended."""
    data = _npy_bytes(x)
    _read(".npy", data)
    _read(".npy", data[:cut])
    _read(".npy", data[:cut] + tail + data[cut + len(tail):])


@FUZZ
@given(hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)),
       st.integers(0, 600), st.binary(min_size=1, max_size=8))
def test_corrupted_npz(x, cut, junk):
    buf = io.BytesIO()
    np.savez(buf, x=x, lengths=np.arange(len(x) if x.ndim else 1))
    data = buf.getvalue()
    _read(".npz", data)
    _read(".npz", data[:cut])
    _read(".npz", data[:cut] + junk + data[cut + len(junk):])


CELL = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**30, 10**30).map(str),
                 st.text(max_size=6), st.sampled_from(["", " ", "nan", "inf", "-", "1e999", "0x1", "1_0", '"1"']))


@FUZZ
@given(st.lists(st.lists(CELL, min_size=0, max_size=5), max_size=6),
       st.sampled_from([",", ";", "\t"]), st.booleans())
def test_csv_contents(rows, sep, header):
    lines = ([sep.join(f"c{i}" for i in range(len(rows[0]) if rows else 1))] if header else []) + [sep.join(r) for r in rows]
    _read(".csv", "\n".join(lines).encode())


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**25, 10**25), st.floats(), st.text(max_size=3))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("xyz"), inner, max_size=2),
                          max_leaves=30)


@FUZZ
@given(st.lists(JSON_VALUE, min_size=1, max_size=4), st.booleans())
def test_jsonl_contents(lines, blank):
    text = ("\n\n" if blank else "\n").join(json.dumps(v) for v in lines)
    _read(".jsonl", text.encode())


@FUZZ
@given(st.integers(1, 5000))
def test_deeply_nested_jsonl(depth):
    _read(".jsonl", ("[" * depth + "1" + "]" * depth).encode())


# ------------------------------------------------------------------------------------ check_array
SPEC_DTYPES = [np.float32, np.float16, np.float64, np.int64, np.int32]
DIMS = st.one_of(st.integers(1, 4), st.sampled_from(["batch", "seq"]))


@st.composite
def specs(draw) -> TensorSpec:
    return TensorSpec("x", draw(st.sampled_from(SPEC_DTYPES)), tuple(draw(st.lists(DIMS, min_size=1, max_size=4))))


ANY_DTYPE = st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(max_len=3), hnp.unicode_string_dtypes(max_len=3))


@FUZZ
@given(specs(), hnp.arrays(ANY_DTYPE, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)),
       st.booleans(), st.one_of(st.none(), st.integers(1, 50)), st.integers(0, 10**6))
def test_check_array_works_or_refuses(spec, x, allow_nonfinite, vocab, offset):
    try:
        y = check_array(x, spec, allow_nonfinite, vocab_size=vocab, offset=offset)
    except EdgeseqError:
        return
    want = np.dtype(spec.dtype)
    assert y.dtype == want and y.shape == x.shape
    assert all(d > 0 for d in y.shape)
    for axis, dim in enumerate(spec.shape):
        assert not isinstance(dim, int) or y.shape[axis] == dim
    if want.kind == "f" and x.dtype.kind == "f" and not allow_nonfinite:
        assert np.isfinite(y).all()  # no NaN/Inf slips through, and no overflow to inf on the cast
    if want.kind == "f" and x.dtype.kind in "iu":
        np.testing.assert_array_equal(y.astype(np.float64), x.astype(np.float64))  # exact
    if want.kind in "iu":
        np.testing.assert_array_equal(y, x)  # ids are never changed by the cast
        if vocab is not None:
            assert y.min() >= 0 and y.max() < vocab


@FUZZ
@given(st.recursive(st.one_of(st.floats(), st.integers(-10**20, 10**20), st.booleans(), st.text(max_size=2)),
                    lambda inner: st.lists(inner, max_size=3), max_leaves=20), specs())
def test_check_array_on_python_lists(value, spec):
    try:
        check_array(value, spec)
    except EdgeseqError:
        pass


# ------------------------------------------------------------------------------------ model files
@FUZZ
@given(st.data())
def test_corrupted_onnx_files(exported, data):
    """Truncated, bit-flipped or spliced model files: a Session either works or raises EdgeseqError."""
    from edgeseq import Session

    original = Path(exported("gru")).read_bytes()
    kind = data.draw(st.sampled_from(["cut", "flip", "splice"]))
    blob = bytearray(original)
    if kind == "cut":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "flip":
        for pos in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=8)):
            blob[pos] ^= data.draw(st.integers(1, 255))
    else:
        pos = data.draw(st.integers(0, len(blob)))
        blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=24))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.onnx"
        path.write_bytes(bytes(blob))
        try:
            session = Session(path, device="cpu")
            session.predict(np.zeros((2, 3, 12), np.float32))
        except EdgeseqError:
            pass
