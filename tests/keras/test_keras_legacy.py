"""Keras 2 (tf.keras) style HDF5 files: the config and weight-name conventions TensorFlow wrote.

No TensorFlow here, so the files are made by rewriting Keras 3's legacy .h5 the way Keras 2
spells it (``batch_input_shape``, list-style ``inbound_nodes``, ``:0`` weight names, no model
prefix, Bidirectional without ``backward_layer``, TimeDistributed weights under the wrapper).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

from edgeseq.keras import load_keras  # noqa: E402


def _refs(obj: Any) -> list[list[Any]]:
    if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
        return [list(obj["config"]["keras_history"]) + [{}]]
    if isinstance(obj, (list, tuple)):
        return [r for v in obj for r in _refs(v)]
    return []


def _k2_layer(layer: dict[str, Any], functional: bool) -> dict[str, Any]:
    cls, cfg = layer["class_name"], dict(layer["config"])
    if isinstance(cfg.get("dtype"), dict):
        cfg["dtype"] = "float32"
    if "batch_shape" in cfg:
        cfg["batch_input_shape"] = cfg.pop("batch_shape")
    for drop in ("optional", "quantization_config"):
        cfg.pop(drop, None)
    if cls == "Bidirectional":
        inner = _k2_layer(cfg.pop("layer"), False)
        inner["config"]["name"] = inner["config"]["name"].removeprefix("forward_")
        cfg["layer"] = inner
        cfg.pop("backward_layer", None)
    elif cls == "TimeDistributed":
        cfg["layer"] = _k2_layer(cfg["layer"], False)
    elif cls in ("Sequential", "Functional"):
        cfg = _k2_model(layer)["config"]
    out: dict[str, Any] = {"class_name": cls, "config": cfg}
    if functional:
        out["name"] = layer["name"]
        out["inbound_nodes"] = [_refs(node["args"]) for node in layer.get("inbound_nodes", [])]
    return out


def _k2_model(model: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(model["config"])
    functional = model["class_name"] == "Functional"
    cfg["layers"] = [_k2_layer(layer, functional) for layer in cfg["layers"]]
    cfg.pop("dtype", None)
    for key in ("input_layers", "output_layers"):
        if key in cfg and isinstance(cfg[key][0], str):
            cfg[key] = [cfg[key]]
    return {"class_name": model["class_name"], "config": cfg}


def _k2_weight_name(name: str, model_name: str, layer: str) -> str:
    parts = name.split("/")
    if parts[0] == model_name and len(parts) > 2:
        parts = parts[1:]
    if parts[0].startswith("time_distributed") and len(parts) == 3:
        parts = [parts[0], parts[2]]  # tf.keras created TimeDistributed weights in the wrapper's scope
    return "/".join(parts) + ":0"


def to_keras2(src: Path, dst: Path) -> None:
    """Rewrite a Keras 3 legacy .h5 the way tf.keras 2.x wrote it."""
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        config = json.loads(fin.attrs["model_config"])
        model_name = config["config"]["name"]
        fout.attrs["model_config"] = json.dumps(_k2_model(config))
        fout.attrs["keras_version"] = "2.12.0"
        fout.attrs["backend"] = "tensorflow"
        gin, gout = fin["model_weights"], fout.create_group("model_weights")
        gout.attrs["layer_names"] = gin.attrs["layer_names"]
        for layer in gin.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            names = [n.decode() if isinstance(n, bytes) else n for n in gin[layer].attrs["weight_names"]]
            new = [_k2_weight_name(n, model_name, layer) for n in names]
            lg = gout.create_group(layer)
            lg.attrs["weight_names"] = np.array([n.encode() for n in new], dtype="S")
            for old, nn_ in zip(names, new):
                lg.create_dataset(nn_, data=gin[layer][old][()])


@pytest.mark.parametrize("name", ["functional", "bidirectional", "cnn_lstm", "text", "reset_before"])
def test_keras2_style_h5(zoo, tmp_path, name: str) -> None:
    saved = zoo(name)
    k2 = tmp_path / f"{name}-k2.h5"
    to_keras2(saved.h5_path, k2)
    with h5py.File(k2, "r") as f:  # the rewrite really uses the Keras 2 spellings
        text = f.attrs["model_config"]
        assert "batch_shape" not in text and "batch_input_shape" in text
    model = load_keras(k2)
    for length in saved.lengths()[:3]:
        x = saved.inputs(length)
        with torch.no_grad():
            got = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, saved.keras_out(x), rtol=1e-5, atol=1e-5)


def test_keras2_hard_sigmoid_is_the_keras2_formula(zoo, tmp_path) -> None:
    """tf.keras's hard_sigmoid is clip(0.2x + 0.5); Keras 3's is relu6(x + 3) / 6."""
    from edgeseq.keras.onnx_rnn import OnnxRNN

    saved = zoo("odd_activations")
    k2 = tmp_path / "odd-k2.h5"
    to_keras2(saved.h5_path, k2)
    k2_lstm = next(m for m in load_keras(k2).modules() if isinstance(m, OnnxRNN) and m.kind == "LSTM")
    k3_lstm = next(m for m in load_keras(saved.h5_path).modules() if isinstance(m, OnnxRNN) and m.kind == "LSTM")
    assert k2_lstm.acts[0] == ("HardSigmoid", 0.2, 0.5)
    assert k3_lstm.acts[0] == ("HardSigmoid", pytest.approx(1 / 6), 0.5)
