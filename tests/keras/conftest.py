"""Keras models (Keras 3, torch backend) saved as .keras and legacy .h5, built once per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ["KERAS_BACKEND"] = "torch"  # before anything imports keras; no TensorFlow needed

LENGTHS = (1, 3, 17, 50)


@dataclass
class Saved:
    """One zoo model: the live Keras model and its two saved files."""

    name: str
    model: Any
    keras_path: Path
    h5_path: Path
    dynamic: bool  # the model accepts any sequence length
    rnn_ops: int  # native ONNX LSTM/GRU/RNN nodes expected
    _cache: dict[Any, np.ndarray] = field(default_factory=dict)

    def path(self, fmt: str) -> Path:
        return self.keras_path if fmt == "keras" else self.h5_path

    def inputs(self, length: int, batch: int = 2, seed: int = 0) -> np.ndarray:
        """Random inputs of the model's kind at sequence length ``length``."""
        rng = np.random.default_rng(seed + length)
        shape = (batch, length) + tuple(int(d) for d in self.model.input_shape[2:])
        if "int" in str(self.model.inputs[0].dtype):
            vocab = next(layer for layer in self.model.layers if type(layer).__name__ == "Embedding").input_dim
            return rng.integers(0, vocab, size=shape).astype(np.int64)
        return rng.standard_normal(shape).astype(np.float32)

    def lengths(self) -> tuple[int, ...]:
        saved = self.model.input_shape[1]
        return (saved,) if saved is not None else (8,) + LENGTHS

    def keras_out(self, x: np.ndarray) -> np.ndarray:
        """Keras's output for ``x`` (cached: several tests compare against the same inputs)."""
        import keras

        key = (x.shape, x.dtype.str, hash(x.tobytes()))
        if key not in self._cache:
            y = self.model(x, training=False)
            self._cache[key] = np.asarray(keras.ops.convert_to_numpy(y))
        return self._cache[key]


def _randomize(model: Any, scale: float, seed: int) -> None:
    """Non-trivial weights everywhere (biases too); positive variances for BatchNormalization."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        fan_in = shape[0] if len(shape) > 1 else 1
        v = rng.standard_normal(shape) * scale / np.sqrt(max(fan_in, 1) / 4)
        if "variance" in w.path:
            v = np.abs(v) + 0.5
        w.assign(v.astype(np.float32))


def _zoo(keras: Any) -> dict[str, tuple[Callable[[], Any], int]]:
    L = keras.layers

    def mnist_lstm() -> Any:  # the LSTM guide's row-by-row MNIST classifier
        return keras.Sequential([
            keras.Input((28, 28)),
            L.LSTM(128, return_sequences=True),
            L.Dropout(0.2),
            L.LSTM(128),
            L.Dense(32, activation="relu"),
            L.Dense(10, activation="softmax"),
        ])  # fmt: skip

    def cnn_lstm() -> Any:  # the guide's CNN-LSTM: TimeDistributed layers, relu LSTM
        return keras.Sequential([
            keras.Input((None, 4, 1)),
            L.TimeDistributed(L.Conv1D(filters=64, kernel_size=1, activation="relu")),
            L.TimeDistributed(L.MaxPooling1D(pool_size=2)),
            L.TimeDistributed(L.Flatten()),
            L.LSTM(50, activation="relu"),
            L.Dense(1),
        ])  # fmt: skip

    def cnn_lstm_nested() -> Any:  # TimeDistributed over a whole Sequential CNN
        cnn = keras.Sequential([
            keras.Input((4, 1)),
            L.Conv1D(8, 2, padding="same", activation="relu"),
            L.MaxPooling1D(2),
            L.Flatten(),
        ])  # fmt: skip
        return keras.Sequential([
            keras.Input((None, 4, 1)), L.TimeDistributed(cnn), L.LSTM(16), L.Dense(1),
        ])  # fmt: skip

    def gru() -> Any:
        return keras.Sequential([
            keras.Input((None, 5)), L.GRU(12, return_sequences=True), L.GRU(8), L.Dense(3),
        ])  # fmt: skip

    def bidirectional() -> Any:
        return keras.Sequential([
            keras.Input((None, 5)),
            L.Bidirectional(L.LSTM(8, return_sequences=True)),
            L.Bidirectional(L.GRU(6, return_sequences=True), merge_mode="ave"),
            L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="mul"),
            L.Bidirectional(L.GRU(5), merge_mode="sum"),
            L.Dense(2),
        ])  # fmt: skip

    def simple_rnn() -> Any:
        return keras.Sequential([
            keras.Input((None, 4)),
            L.SimpleRNN(8, return_sequences=True, go_backwards=True),
            L.SimpleRNN(6, activation="relu", return_sequences=True),
            L.LSTM(5, go_backwards=True),
            L.Dense(2, activation="tanh"),
        ])  # fmt: skip

    def text() -> Any:  # Embedding + LSTM text classifier
        return keras.Sequential([
            keras.Input((None,), dtype="int32"),
            L.Embedding(50, 8),
            L.LSTM(16),
            L.Dense(4, activation="softmax"),
        ])  # fmt: skip

    def functional() -> Any:  # a small DAG: causal conv, two RNN branches, merges, nested model
        head = keras.Sequential([keras.Input((24,)), L.Dense(5, activation="elu")], name="head")
        i = keras.Input((None, 6))
        x = L.Conv1D(8, 3, padding="causal", activation="relu")(i)
        x = L.BatchNormalization()(x)
        y = L.LSTM(8, return_sequences=True)(x)
        z = L.GRU(8, return_sequences=True)(x)
        m = L.LayerNormalization()(L.Add()([y, z]))
        m = L.Concatenate()([m, L.Activation("tanh")(x), L.Multiply()([y, z])])
        o = L.GlobalAveragePooling1D()(m)
        return keras.Model(i, head(o))

    def reset_before() -> Any:  # GRU(reset_after=False), which nn.GRU cannot express
        return keras.Sequential([
            keras.Input((None, 3)),
            L.GRU(6, reset_after=False, return_sequences=True),
            L.Bidirectional(L.GRU(4, reset_after=False)),
            L.Dense(2),
        ])  # fmt: skip

    def odd_activations() -> Any:
        return keras.Sequential([
            keras.Input((None, 3)),
            L.LSTM(6, recurrent_activation="hard_sigmoid", return_sequences=True),
            L.GRU(5, activation="softsign", return_sequences=True, go_backwards=True),
            L.SimpleRNN(4, activation="sigmoid"),
            L.Dense(2),
        ])  # fmt: skip

    def autoencoder() -> Any:  # seq2seq with RepeatVector; any input length, 5 output steps
        return keras.Sequential([
            keras.Input((None, 3)),
            L.LSTM(8),
            L.RepeatVector(5),
            L.LSTM(8, return_sequences=True),
            L.TimeDistributed(L.Dense(3)),
        ])  # fmt: skip

    def conv_fixed() -> Any:  # fixed length: strided 'same' conv and pooling, Flatten after
        return keras.Sequential([
            keras.Input((20, 3)),
            L.Conv1D(8, 4, strides=2, padding="same", dilation_rate=1),
            L.MaxPooling1D(3, strides=2, padding="same"),
            L.Conv1D(6, 2, dilation_rate=2, activation="selu"),
            L.AveragePooling1D(2),
            L.LSTM(6, return_sequences=True),
            L.Permute((2, 1)),
            L.Reshape((-1,)),
            L.Dense(3, activation="sigmoid"),
        ])  # fmt: skip

    def misc() -> Any:  # activation layers, strided 'same' conv of window 2 on any length
        return keras.Sequential([
            keras.Input((None, 5)),
            L.Conv1D(6, 2, strides=2, padding="same"),
            L.ReLU(max_value=1.5, negative_slope=0.1),
            L.SpatialDropout1D(0.3),
            L.GRU(6, return_sequences=True),
            L.LeakyReLU(negative_slope=0.3),
            L.ELU(alpha=0.7),
            L.Softmax(),
            L.GlobalMaxPooling1D(),
            L.Dense(3, activation="gelu"),
        ])  # fmt: skip

    return {
        "misc": (misc, 1),
        "mnist_lstm": (mnist_lstm, 2),
        "cnn_lstm": (cnn_lstm, 1),
        "cnn_lstm_nested": (cnn_lstm_nested, 1),
        "gru": (gru, 2),
        "bidirectional": (bidirectional, 4),
        "simple_rnn": (simple_rnn, 3),
        "text": (text, 1),
        "functional": (functional, 2),
        "reset_before": (reset_before, 2),
        "odd_activations": (odd_activations, 3),
        "autoencoder": (autoencoder, 2),
        "conv_fixed": (conv_fixed, 1),
    }


ZOO_NAMES = (
    "mnist_lstm", "cnn_lstm", "cnn_lstm_nested", "gru", "bidirectional", "simple_rnn", "text",
    "functional", "reset_before", "odd_activations", "autoencoder", "conv_fixed", "misc",
)  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keras 3 on numpy 2 warns inside its own tensor conversion; not ours to fix."""
    here = Path(__file__).parent
    mark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(mark)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking ``zoo_name`` run once per zoo model."""
    if "zoo_name" in metafunc.fixturenames:
        metafunc.parametrize("zoo_name", ZOO_NAMES)


@pytest.fixture(scope="session")
def keras() -> Any:
    return pytest.importorskip("keras")


@pytest.fixture(scope="session")
def zoo(keras: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Saved]:
    """``zoo(name)`` builds, randomizes and saves a model once, then returns it."""
    import warnings

    folder = tmp_path_factory.mktemp("keras_zoo")
    builders = _zoo(keras)
    cache: dict[str, Saved] = {}

    def get(name: str) -> Saved:
        if name not in cache:
            make, rnn_ops = builders[name]
            keras.utils.set_random_seed(0)
            model = make()
            _randomize(model, scale=0.5, seed=ZOO_NAMES.index(name))
            kpath, hpath = folder / f"{name}.keras", folder / f"{name}.h5"
            model.save(kpath)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.save(hpath)  # Keras 3 writes the legacy HDF5 format for .h5
            cache[name] = Saved(name, model, kpath, hpath, model.input_shape[1] is None, rnn_ops)
        return cache[name]

    return get
