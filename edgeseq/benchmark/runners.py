"""Runtimes under test, each wrapped as a :class:`Runner`: a name and a call on input arrays.

``edgeseq`` (the tuned :class:`~edgeseq.Session`), ``onnxruntime-default`` (a plain
``InferenceSession`` with ONNX Runtime's default options), ``openvino`` (OpenVINO's CPU plugin,
optional) and ``pytorch`` (eager, for ``--against``; torch is imported only there).

>>> r = edgeseq_runner("model.onnx", threads=1)          # doctest: +SKIP
>>> r.call([np.zeros((1, 100, 6), np.float32)])         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelFileError
from ..inputs import InputSpec

RUNTIMES = ("edgeseq", "onnxruntime-default", "openvino", "openvino-f32", "pytorch")
OPENVINO_MISSING = "openvino is not installed; install it with: pip install 'edgeseq[openvino]'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


@dataclass
class Runner:
    """A runtime ready to run one batch: ``call(arrays)`` with arrays in the model's input order."""

    name: str
    call: Callable[[Sequence[np.ndarray]], Any]
    threads: int | None
    precision: str = "float32"
    notes: dict[str, Any] = field(default_factory=dict)


def input_spec_of(path: str | Path) -> InputSpec:
    """The file's input signature: from its model card, else guessed from the graph's inputs."""
    from ..export.parity import spec_of_session
    from ..runtime.session import Session

    return spec_of_session(Session(path, device="cpu", threads=1))


def make_inputs(spec: InputSpec, batch: int, length: int, sample: Sequence[np.ndarray] | None = None,
                seed: int = 0) -> list[np.ndarray]:
    """Inputs of ``batch`` x ``length``: ``sample`` (real data, batch first) tiled to size, or random.

    Tiling real data keeps values valid for models that need them (e.g. positive prices).
    """
    if sample is None:
        return spec.random(batch, length, seed=seed)
    arrays = []
    for info, data in zip(spec.inputs, sample):
        data = np.asarray(data)
        rows = np.arange(batch) % data.shape[info.batch_axis or 0]
        data = np.take(data, rows, axis=info.batch_axis or 0)
        if info.seq_axis is not None and info.seq_axis < data.ndim:
            steps = np.arange(length) % data.shape[info.seq_axis]
            data = np.take(data, steps, axis=info.seq_axis)
        arrays.append(np.ascontiguousarray(data.astype(info.dtype, copy=False)))
    return arrays


def _completer(path: str | Path, names: list[str]) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    """Map data arrays to every graph input in ``names`` order: zero state for streaming exports,
    full lengths for a ``lengths`` input (what Session does for its callers)."""
    from ..card import read_card

    card = read_card(path)
    from .streaming import _state_slots

    states = {name: shape for name, _out, shape, _axis in _state_slots(path)}
    lengths = card.get("lengths_input")
    data = [n for n in names if n not in states and n != lengths]
    spec = InputSpec.from_card(card["inputs"]) if card.get("inputs") else None
    seq_axis = spec.inputs[0].seq_axis if spec else 1
    batch_axis = spec.inputs[0].batch_axis if spec else 0

    def complete(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        given = dict(zip(data, arrays))
        x = arrays[0]
        n = x.shape[batch_axis or 0]
        out = []
        for name in names:
            if name in given:
                out.append(given[name])
            elif name in states:
                out.append(np.zeros([d if isinstance(d, int) else n for d in states[name]], np.float32))
            else:
                out.append(np.full(n, x.shape[seq_axis if seq_axis is not None else 1], np.int64))
        return out

    return complete


def edgeseq_runner(path: str | Path, threads: int | None = None) -> Runner:
    """edgeseq's own :class:`~edgeseq.Session` (input checks included, as users run it)."""
    from ..runtime.session import Session

    session = Session(path, device="cpu", threads=threads, batch_size=1 << 30)
    names = [i.name for i in session.data_inputs()]
    precision = session.card.get("precision", "float32")
    if len(names) == 1 and not session.lengths_input:
        def call(arrays: Sequence[np.ndarray]) -> Any:
            return session.predict(arrays[0])
    else:
        def call(arrays: Sequence[np.ndarray]) -> Any:
            return session.run(dict(zip(names, arrays)))
    opts = session._sess.get_session_options()
    return Runner("edgeseq", call, opts.intra_op_num_threads, precision,
                  {"spinning": opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"})


def ort_default_runner(path: str | Path) -> Runner:
    """A plain ``onnxruntime.InferenceSession`` with default options (all cores, spinning on); only
    the optimiser that crashes on some float16 files is off (``edgeseq.runtime.workarounds``)."""
    import onnxruntime as ort

    from ..runtime.workarounds import disabled_optimizers

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                    disabled_optimizers=disabled_optimizers(path))
    except Exception as exc:  # noqa: BLE001 - ORT's own exception types
        raise ModelFileError(f"{path}: ONNX Runtime cannot load this file: {str(exc).splitlines()[0][:200]}") from None
    names = [i.name for i in sess.get_inputs()]
    complete = _completer(path, names)

    def call(arrays: Sequence[np.ndarray]) -> Any:
        return sess.run(None, dict(zip(names, complete(arrays))))

    return Runner("onnxruntime-default", call, None, notes={"options": "ONNX Runtime defaults"})


def compile_openvino(path: str | Path, threads: int | None = None, precision: str | None = None) -> Any:
    """The file compiled by OpenVINO's CPU plugin for latency; MissingDependencyError if OpenVINO is absent."""
    try:
        import openvino as ov
    except ImportError:
        raise MissingDependencyError(OPENVINO_MISSING) from None
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    try:
        return ov.Core().compile_model(str(path), "CPU", config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with long texts
        raise ModelFileError(f"OpenVINO cannot compile {Path(path).name}: {_first_line(exc)}") from None


def openvino_runner(path: str | Path, threads: int | None = None, precision: str | None = None) -> Runner:
    """OpenVINO's CPU plugin on the same ONNX file; ``precision`` 'f32' pins the inference precision
    (OpenVINO's default on CPUs with bf16 support is bf16).  Raises MissingDependencyError if absent."""
    compiled = compile_openvino(path, threads, precision)  # MissingDependencyError first if OpenVINO is absent
    import openvino as ov

    request = compiled.create_infer_request()
    used = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    complete = _completer(path, [p.get_any_name() for p in compiled.inputs])

    def call(arrays: Sequence[np.ndarray]) -> Any:
        return request.infer(complete(arrays))

    name = "openvino-f32" if precision == "f32" else "openvino"
    return Runner(name, call, threads, notes={"inference_precision": used, "version": ov.__version__})


def torch_runner(model: Any, threads: int | None = None) -> Runner:
    """PyTorch eager on the same inputs, with ``threads`` intra-op threads (process-wide setting)."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    model = model.eval()

    def call(arrays: Sequence[np.ndarray]) -> Any:
        with torch.inference_mode():
            return model(*[torch.from_numpy(a) for a in arrays])

    return Runner("pytorch", call, torch.get_num_threads(), notes={"version": torch.__version__.split("+")[0]})
