"""Refusals and load errors: one clear line naming the layer, or the file problem."""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("h5py")

from edgeseq.errors import MissingDependencyError, ModelLoadError, UnsupportedModelError  # noqa: E402
from edgeseq.keras import keras_reference, load_keras  # noqa: E402


def _save(model, path) -> str:
    model.save(path)
    return str(path)


def test_unsupported_layer_is_named(keras, tmp_path) -> None:
    L = keras.layers
    i = keras.Input((None, 4))
    x = L.LSTM(4, return_sequences=True)(i)
    a = L.Attention(name="attention_1")([x, x])
    m = keras.Model(i, L.Dense(1)(L.GlobalAveragePooling1D()(a)))
    for suffix in (".keras", ".h5"):
        with pytest.raises(UnsupportedModelError) as err:
            load_keras(_save(m, tmp_path / f"att{suffix}"))
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith("Keras layer 'attention_1' (Attention) is not supported")
        assert "supported:" in msg and "LSTM" in msg


@pytest.mark.parametrize(
    "layers, words",
    [
        (lambda L: [L.Embedding(10, 4, mask_zero=True), L.LSTM(3)], ["mask_zero", "embedding"]),
        (lambda L: [L.Embedding(10, 4), L.Masking(), L.LSTM(3)], ["(Masking)", "masking is not supported"]),
        (lambda L: [L.Embedding(10, 4), L.LSTM(3, activation="gelu")], ["activation='gelu'"]),
        (lambda L: [L.Embedding(10, 4), L.Bidirectional(L.LSTM(3), merge_mode=None)], ["merge_mode"]),
    ],
)
def test_refusals(keras, tmp_path, layers, words) -> None:
    L = keras.layers
    m = keras.Sequential([keras.Input((None,), dtype="int32")] + layers(L))
    with pytest.raises(UnsupportedModelError) as err:
        load_keras(_save(m, tmp_path / "m.keras"))
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_mask_zero_in_a_functional_model_names_the_embedding(keras, tmp_path, suffix) -> None:
    L = keras.layers
    i = keras.Input((None,), dtype="int32")
    m = keras.Model(i, L.Dense(2)(L.LSTM(8)(L.Embedding(30, 8, mask_zero=True, name="tokens")(i))))
    with pytest.raises(UnsupportedModelError) as err:
        load_keras(_save(m, tmp_path / f"mask{suffix}"))
    assert str(err.value).startswith("Keras layer 'tokens' (Embedding): mask_zero=True is not supported")
    assert "mask_zero=False" in str(err.value)


def test_masking_in_a_functional_model_names_the_masking_layer(keras, tmp_path) -> None:
    L = keras.layers
    i = keras.Input((None, 4))
    m = keras.Model(i, L.Dense(2)(L.LSTM(8)(L.Masking(0.0, name="pad_mask")(i))))
    with pytest.raises(UnsupportedModelError) as err:
        load_keras(_save(m, tmp_path / "masking.keras"))
    assert str(err.value).startswith("Keras layer 'pad_mask' (Masking): masking is not supported")


def test_stateful_is_refused(keras, tmp_path) -> None:
    L = keras.layers
    m = keras.Sequential([keras.Input(batch_shape=(2, None, 3)), L.LSTM(4, stateful=True), L.Dense(1)])
    with pytest.raises(UnsupportedModelError, match="stateful=True"):
        load_keras(_save(m, tmp_path / "s.keras"))


def test_two_inputs_refused(keras, tmp_path) -> None:
    L = keras.layers
    a, b = keras.Input((None, 3)), keras.Input((None, 3))
    m = keras.Model([a, b], L.Dense(1)(L.LSTM(2)(L.Add()([a, b]))))
    with pytest.raises(UnsupportedModelError, match="2 inputs"):
        load_keras(_save(m, tmp_path / "two.keras"))


def test_reset_after_false_refuses_dynamo_tracing(zoo, monkeypatch) -> None:
    """GRU(reset_after=False) is exact in eager mode; under torch.export it says to use dynamo=False."""
    import torch

    model = load_keras(zoo("reset_before").keras_path)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with pytest.raises(UnsupportedModelError, match="dynamo=False"):
        model(*model.example_inputs())


def test_missing_and_corrupt_files(tmp_path, keras) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_keras(tmp_path / "nope.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError):
        load_keras(junk)
    bad_zip = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("config.json", "{ this is not json")
        zf.writestr("model.weights.h5", b"junk")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_keras(bad_zip)
    m = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(2)])
    good = _save(m, tmp_path / "good.keras")
    with zipfile.ZipFile(good) as zf, zipfile.ZipFile(tmp_path / "broken.keras", "w") as out:
        out.writestr("config.json", zf.read("config.json"))
        out.writestr("model.weights.h5", zf.read("model.weights.h5")[:200])
    with pytest.raises(ModelLoadError):
        load_keras(tmp_path / "broken.keras")
    weights_only = tmp_path / "w.weights.h5"
    m.save_weights(weights_only)
    with pytest.raises(ModelLoadError, match="no model_config|only weights"):
        load_keras(weights_only)


def test_truncated_h5_is_a_load_error(zoo, tmp_path) -> None:
    data = zoo("gru").h5_path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        load_keras(cut)


def test_keras_reference_without_keras(monkeypatch, zoo) -> None:
    path = zoo("gru").keras_path
    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(MissingDependencyError, match="pip install keras"):
        keras_reference(path)


def test_unzipped_keras_folder(zoo, tmp_path) -> None:
    saved = zoo("gru")
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(saved.keras_path) as zf:
        zf.extractall(folder)
    import torch

    x = saved.inputs(5)
    with torch.no_grad():
        got = load_keras(folder)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, saved.keras_out(x), rtol=1e-5, atol=1e-5)


def test_a_backend_that_is_not_installed_is_named(tmp_path) -> None:
    import os
    import subprocess
    import sys

    pytest.importorskip("keras")
    code = ("from edgeseq.keras.reference import keras_reference\n"
            "try:\n    keras_reference('m.keras')\nexcept Exception as e:\n    print(e)\n")
    env = {**os.environ, "KERAS_BACKEND": "jax"}  # neither jax nor tensorflow is installed here
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "keras cannot start its 'jax' backend" in out and "KERAS_BACKEND=torch" in out
