"""Rebuilt Keras models export to ONNX with native recurrent nodes and match Keras in ONNX Runtime."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("h5py")

from edgeseq.keras import load_keras  # noqa: E402

RECURRENT = {"LSTM", "GRU", "RNN"}


def export_bytes(model) -> bytes:
    """The export call edgeseq's TorchScript path makes (dynamic batch and sequence)."""
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, model.example_inputs(), f, dynamo=False, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch", 1: "seq"}, "y": {0: "batch"}}, opset_version=17,
        )  # fmt: skip
    return f.getvalue()


def test_onnx_matches_keras(zoo, zoo_name: str) -> None:
    saved = zoo(zoo_name)
    blob = export_bytes(load_keras(saved.keras_path))
    graph = onnx.load_from_string(blob).graph
    ops = [n.op_type for n in graph.node]
    assert sum(op in RECURRENT for op in ops) == saved.rnn_ops, ops
    assert not {"Loop", "Scan"} & set(ops), "recurrence was unrolled or looped"
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    for length in saved.lengths():
        # batch 3 once (the export example has batch 2); batch 2 elsewhere reuses Keras's outputs
        x = saved.inputs(length, batch=3 if length == saved.lengths()[-1] else 2)
        (got,) = sess.run(None, {"x": x})
        np.testing.assert_allclose(got, saved.keras_out(x), rtol=1e-5, atol=1e-5)


def test_reset_before_gru_is_native_linear_before_reset_0(zoo) -> None:
    graph = onnx.load_from_string(export_bytes(load_keras(zoo("reset_before").h5_path))).graph
    grus = [n for n in graph.node if n.op_type == "GRU"]
    assert len(grus) == 2
    for node in grus:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["linear_before_reset"] == 0
    assert {onnx.helper.get_attribute_value(a) for n in grus for a in n.attribute if a.name == "direction"} == {
        b"forward", b"bidirectional"
    }


def test_standard_layers_use_torch_rnn_modules(zoo) -> None:
    """Standard settings map to nn.LSTM/nn.GRU/nn.RNN (which both torch exporters handle)."""
    from edgeseq.keras.onnx_rnn import OnnxRNN

    for name in ("mnist_lstm", "gru", "bidirectional", "text", "functional"):
        model = load_keras(zoo(name).keras_path)
        assert not any(isinstance(m, OnnxRNN) for m in model.modules()), name
        assert any(isinstance(m, (torch.nn.LSTM, torch.nn.GRU)) for m in model.modules())


def test_keras_causal_conv_lstm_streams_like_keras(keras, tmp_path) -> None:
    """Conv1D(padding="causal", dilation 2) + LSTM(return_sequences): stepped in chunks == Keras on the whole."""
    from edgeseq import StreamingSession
    from edgeseq.export.stateful import export_with_extras

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 6)), L.Conv1D(8, 3, padding="causal", dilation_rate=2,
                                                                 activation="relu"),
                              L.LSTM(8, return_sequences=True), L.Dense(2)])
    model.save(tmp_path / "causal.keras")
    path = tmp_path / "causal-stream.onnx"
    export_with_extras(str(tmp_path / "causal.keras"), path, streaming=True)
    x = np.random.default_rng(0).standard_normal((2, 20, 6)).astype(np.float32)
    s, outs, t = StreamingSession(path, device="cpu"), [], 0
    for c in (1, 3, 1, 8, 7):
        outs.append(s.step(x[:, t : t + c]))
        t += c
    want = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    np.testing.assert_allclose(np.concatenate(outs, axis=1), want, atol=1e-5, rtol=1e-5)
