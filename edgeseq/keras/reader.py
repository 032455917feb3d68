"""Read a saved Keras model's architecture and weights with zipfile/json/h5py only.

Two on-disk formats are understood:

* ``.keras`` (Keras 3 native): a zip archive (or an unzipped folder) holding
  ``config.json``, ``metadata.json`` and ``model.weights.h5``.  Weights live at
  ``layers/<snake_case_class_name>[_N]/vars/<i>``, nested layers below their
  parent (``cell``, ``forward_layer``, ``layer``, ``layers/...``).
* legacy HDF5 (``.h5``/``.hdf5``; Keras 2 and Keras 3's ``model.save("x.h5")``):
  the config JSON is the ``model_config`` root attribute and weights are listed,
  per top-level layer, by the ``weight_names`` attribute of ``model_weights/<name>``.

Keras itself is never imported here.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError, require
from .weights import WeightBag

_CONTAINER_CLASSES = {"Sequential", "Functional", "Model"}
_RNN_CLASSES = {"LSTM", "GRU", "SimpleRNN", "RNN"}


@dataclass
class KerasFile:
    """A parsed Keras model file: its config, its format and its weights per top-level layer."""

    path: Path
    format: str  # "keras" or "h5"
    config: dict[str, Any]
    keras_version: str | None
    weights: dict[str, WeightBag] = field(default_factory=dict)

    @property
    def major_version(self) -> int:
        """Major Keras version that wrote the file (3 when unknown)."""
        try:
            return int(str(self.keras_version).split(".")[0])
        except ValueError:
            return 3


def read_keras_file(path: str | Path) -> KerasFile:
    """Open ``path`` (``.keras`` archive or folder, or legacy ``.h5``) and read config and weights."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"Keras model file not found: {p}")
    if p.is_dir():
        return _read_keras_dir(p)
    if zipfile.is_zipfile(p):
        return _read_keras_zip(p)
    with open(p, "rb") as fh:
        magic = fh.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        return _read_legacy_h5(p)
    raise ModelLoadError(
        f"{p} is neither a .keras archive nor an HDF5 (.h5) Keras file; "
        "save the model with model.save('model.keras')"
    )


# -- .keras -----------------------------------------------------------------------------------


def _read_keras_zip(p: Path) -> KerasFile:
    try:
        with zipfile.ZipFile(p) as zf:
            names = set(zf.namelist())
            if "config.json" not in names:
                raise ModelLoadError(f"{p} is a zip file but has no config.json; not a .keras model")
            config_text = zf.read("config.json")
            metadata = zf.read("metadata.json") if "metadata.json" in names else b"{}"
            if "model.weights.h5" not in names:
                raise ModelLoadError(
                    f"{p} has no model.weights.h5 (found: {', '.join(sorted(names))}); "
                    "only single-file HDF5 weights are supported; re-save with model.save()"
                )
            weights_blob = zf.read("model.weights.h5")
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise ModelLoadError(f"cannot read Keras archive {p}: {exc}") from exc
    return _parse_keras(p, config_text, metadata, io.BytesIO(weights_blob))


def _read_keras_dir(p: Path) -> KerasFile:
    cfg, wts = p / "config.json", p / "model.weights.h5"
    if not cfg.is_file() or not wts.is_file():
        raise ModelLoadError(
            f"{p} is a folder but not an unzipped .keras model (needs config.json and model.weights.h5)"
        )
    meta = p / "metadata.json"
    return _parse_keras(
        p, cfg.read_bytes(), meta.read_bytes() if meta.is_file() else b"{}", io.BytesIO(wts.read_bytes())
    )


def _parse_keras(p: Path, config_text: bytes, metadata: bytes, weights: io.BytesIO) -> KerasFile:
    h5py = require("h5py", "keras")
    config = _json(config_text, p, "config.json")
    meta = _json(metadata, p, "metadata.json")
    kf = KerasFile(p, "keras", _model_dict(config, p), meta.get("keras_version"))
    try:
        with h5py.File(weights, "r") as h5:  # type: ignore[attr-defined]
            for cfg, group in _keras_children(h5, model_layers(kf.config)):
                kf.weights[layer_name(cfg)] = WeightBag(_keras_entries(group, cfg, layer_name(cfg)))
    except ModelLoadError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot read the weights in {p}: {exc}") from exc
    return kf


def snake_case(name: str) -> str:
    """Keras's ``to_snake_case`` (``MaxPooling1D`` -> ``max_pooling1d``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _keras_children(parent: Any, layer_cfgs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Any]]:
    """Pair each layer config with its weights group below ``parent/layers`` (None when absent)."""
    layers = parent.get("layers")
    by_name: dict[str, Any] = {}
    if layers is not None:
        for key in layers:
            vars_group = layers[key].get("vars")
            name = vars_group.attrs.get("name") if vars_group is not None else None
            if isinstance(name, bytes):
                name = name.decode()
            if isinstance(name, str):
                by_name.setdefault(name, layers[key])
    used: dict[str, int] = {}
    out = []
    for cfg in layer_cfgs:
        key = snake_case(cfg.get("class_name", ""))
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        group = by_name.get(layer_name(cfg))
        if group is None and layers is not None and key in layers:
            group = layers[key]
        out.append((cfg, group))
    return out


def _vars(group: Any, where: str) -> list[tuple[str, np.ndarray]]:
    if group is None or "vars" not in group:
        return []
    v = group["vars"]
    keys = sorted(v.keys(), key=lambda k: int(k) if str(k).isdigit() else 1 << 30)
    return [(f"{where}/{k}", np.asarray(v[k][()])) for k in keys]


def _keras_entries(group: Any, cfg: dict[str, Any], where: str) -> list[tuple[str, np.ndarray]]:
    """Weights of one layer in Keras ``layer.weights`` order, named ``outer/inner/.../index``."""
    if group is None:
        return []
    cls = cfg.get("class_name")
    inner = cfg.get("config", {})
    if cls in _RNN_CLASSES:
        return _vars(group.get("cell"), where) + _vars(group, where)
    if cls == "Bidirectional":
        fwd = inner.get("layer", {})
        bwd = inner.get("backward_layer") or fwd
        return _keras_entries(
            group.get("forward_layer"), fwd, f"{where}/{layer_name(fwd, 'forward')}"
        ) + _keras_entries(group.get("backward_layer"), bwd, f"{where}/{layer_name(bwd, 'backward')}")
    if cls == "TimeDistributed":
        sub = inner.get("layer", {})
        return _keras_entries(group.get("layer"), sub, f"{where}/{layer_name(sub, 'layer')}")
    if cls in _CONTAINER_CLASSES:
        out: list[tuple[str, np.ndarray]] = []
        for sub, sub_group in _keras_children(group, model_layers(cfg)):
            out += _keras_entries(sub_group, sub, f"{where}/{layer_name(sub)}")
        return out
    return _vars(group, where)


# -- legacy .h5 -------------------------------------------------------------------------------


def _read_legacy_h5(p: Path) -> KerasFile:
    h5py = require("h5py", "keras")
    try:
        with h5py.File(p, "r") as h5:  # type: ignore[attr-defined]
            raw = h5.attrs.get("model_config")
            if raw is None:
                raise ModelLoadError(
                    f"{p} holds only weights (no model_config); save the whole model with "
                    "model.save('model.keras') or model.save('model.h5')"
                )
            config = _model_dict(_json(raw, p, "model_config"), p)
            version = h5.attrs.get("keras_version")
            group = h5["model_weights"] if "model_weights" in h5 else h5
            kf = KerasFile(p, "h5", config, _text(version) if version is not None else None)
            for name in group.attrs.get("layer_names", []):
                name = _text(name)
                lg = group[name]
                entries = []
                for wn in lg.attrs.get("weight_names", []):
                    wn = _text(wn)
                    entries.append((wn, np.asarray(lg[wn][()])))
                kf.weights[name] = WeightBag(entries)
            return kf
    except ModelLoadError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot read Keras HDF5 file {p}: {exc}") from exc


# -- config helpers ---------------------------------------------------------------------------


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _json(raw: Any, p: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(_text(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{p}: {what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{p}: {what} is not a JSON object")
    return data


def _model_dict(config: dict[str, Any], p: Path) -> dict[str, Any]:
    if config.get("class_name") not in _CONTAINER_CLASSES or "config" not in config:
        raise ModelLoadError(
            f"{p}: top-level object is {config.get('class_name')!r}, expected a Keras "
            "Sequential or functional Model"
        )
    return config


def layer_name(cfg: dict[str, Any], default: str = "?") -> str:
    """The ``name`` of a serialized layer (``cfg['config']['name']``, or ``cfg['name']``)."""
    inner = cfg.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("name"), str):
        return inner["name"]
    return str(cfg.get("name", default))


def model_layers(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Layer configs of a Sequential/functional model config (Keras 2 lists them directly)."""
    inner = cfg.get("config")
    if isinstance(inner, list):  # very old Keras 2 Sequential
        return inner
    if not isinstance(inner, dict):
        return []
    layers = inner.get("layers", [])
    return layers if isinstance(layers, list) else []
