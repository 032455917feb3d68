"""load_keras rebuilds Keras models in PyTorch that match Keras to 1e-5 (both file formats)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from edgeseq.keras import load_keras  # noqa: E402


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_matches_keras(zoo, zoo_name: str, fmt: str) -> None:
    saved = zoo(zoo_name)
    model = load_keras(saved.path(fmt))
    assert not model.training
    for length in saved.lengths():
        x = saved.inputs(length)
        with torch.no_grad():
            got = model(torch.from_numpy(x)).numpy()
        assert_close(got, saved.keras_out(x))


def test_example_inputs_and_shape(zoo) -> None:
    m = load_keras(zoo("mnist_lstm").keras_path)
    assert m.keras_input_shape == (None, 28, 28)
    (x,) = m.example_inputs()
    assert x.shape == (2, 28, 28) and x.dtype == torch.float32

    m = load_keras(zoo("cnn_lstm").h5_path)
    assert m.keras_input_shape == (None, None, 4, 1)
    (x,) = m.example_inputs()
    assert x.shape == (2, 8, 4, 1) and x.dtype == torch.float32

    m = load_keras(zoo("text").keras_path)
    assert m.keras_input_shape == (None, None)
    (x,) = m.example_inputs()
    assert x.shape == (2, 8) and x.dtype == torch.int64
    assert int(x.max()) < 50 and int(x.min()) >= 0
    assert m(x).shape == (2, 4)


def test_same_module_from_both_formats(zoo) -> None:
    saved = zoo("functional")
    a, b = load_keras(saved.keras_path), load_keras(saved.h5_path)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_import_does_not_load_torch() -> None:
    code = "import sys, edgeseq.keras; print('torch' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_keras_reference_runs_original(zoo) -> None:
    from edgeseq.keras import keras_reference

    saved = zoo("gru")
    ref = keras_reference(saved.h5_path)
    x = saved.inputs(6)
    np.testing.assert_allclose(ref(x), saved.keras_out(x), rtol=1e-6, atol=1e-6)
