"""Unsafe ONNX files: external data outside the model's folder (refused before ONNX Runtime opens anything), bad names."""

from __future__ import annotations

import os

import numpy as np
import pytest
from robust_helpers import write_external_model

from edgeseq import Session
from edgeseq.errors import ModelFileError
from edgeseq.runtime.safety import check_external_data


@pytest.fixture
def no_ort_session(monkeypatch):
    """Fail the test if ONNX Runtime is asked to open the file at all."""
    import onnxruntime as ort

    def refuse(*args, **kwargs):
        raise AssertionError("ONNX Runtime was asked to open an unsafe file")

    monkeypatch.setattr(ort, "InferenceSession", refuse)


@pytest.mark.parametrize("where", ["initializer", "constant", "subgraph"])
def test_external_data_inside_the_folder_loads_and_runs(tmp_path, where):
    path = write_external_model(tmp_path / "m", "weights.bin", where=where)
    assert check_external_data(path) == [(tmp_path / "m" / "weights.bin").resolve()]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(Session(path, device="cpu").run({"x": x})["y"], x)  # w is the identity


@pytest.mark.parametrize("where", ["initializer", "constant", "subgraph"])
@pytest.mark.parametrize("location, message", [
    ("../secret.bin", "outside the model's folder"),
    ("sub/../../secret.bin", "outside the model's folder"),
    ("/etc/passwd", "an absolute path"),
    ("C:\\Windows\\win.ini", "an absolute path"),
    ("missing.bin", "does not exist"),
])
def test_unsafe_locations_are_refused_before_ort(tmp_path, no_ort_session, where, location, message):
    (tmp_path / "secret.bin").write_bytes(np.eye(4, dtype=np.float32).tobytes())
    path = write_external_model(tmp_path / "m", location, data_file=None, where=where)
    with pytest.raises(ModelFileError, match=f"tensor 'w' keeps its data in .*{message}"):
        Session(path, device="cpu")


def test_symlink_leading_out_of_the_folder_is_refused(tmp_path, no_ort_session):
    (tmp_path / "secret.bin").write_bytes(np.eye(4, dtype=np.float32).tobytes())
    path = write_external_model(tmp_path / "m", "weights.bin", data_file=None)
    os.symlink(tmp_path / "secret.bin", tmp_path / "m" / "weights.bin")
    with pytest.raises(ModelFileError, match="outside the model's folder"):
        Session(path, device="cpu")


def test_inspect_refuses_too(tmp_path, no_ort_session):
    from edgeseq.inspect import describe

    path = write_external_model(tmp_path / "m", "../secret.bin", data_file=None)
    with pytest.raises(ModelFileError, match="outside the model's folder"):
        describe(path)


def test_plain_models_have_no_external_data(exported):
    assert check_external_data(exported("gru")) == []


# every "/gru/GRU" (node and value names), the first "batch" (the input's symbolic dim, not the card's)
@pytest.mark.parametrize("name, count", [(b"/gru/GRU", -1), (b"batch", 1)])
def test_names_that_are_not_utf8_are_a_clear_error(exported, tmp_path, name, count):
    """Without the check, ONNX Runtime's Python API raises UnicodeDecodeError on these (measured)."""
    data = exported("gru").read_bytes()
    assert name in data
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data.replace(name, b"\xff" + name[1:], count))  # same length: the protobuf stays well-formed
    with pytest.raises(ModelFileError, match="not a valid ONNX file"):
        Session(bad, device="cpu")
