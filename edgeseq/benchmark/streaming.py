"""Per-step streaming latency: one chunk of one step with the recurrent state carried over.

Runners for a ``--streaming`` export (state as graph inputs/outputs): edgeseq's
:class:`~edgeseq.StreamingSession` (I/O binding), plain ONNX Runtime with default options
(state round-trips through numpy), OpenVINO, and a PyTorch module stepped with its state carried
in Python (:class:`TorchStepper`; torch is imported only there).

>>> runner = streaming_runner("edgeseq", "motion-stream.onnx", threads=1)   # doctest: +SKIP
>>> runner.call([np.zeros((1, 1, 6), np.float32)])                         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..card import read_card
from ..errors import InputError, ModelFileError
from .runners import Runner, compile_openvino


def is_streaming_file(path: str | Path) -> bool:
    """Whether ``path`` was exported with ``--streaming`` (its card lists state inputs)."""
    return bool(read_card(path).get("state_inputs"))


def _state_slots(path: str | Path) -> list[tuple[str, str, list[Any], int]]:
    """(input, output, shape with 'batch', batch axis) for each carried state tensor of the graph, from
    the model card (a state split per layer is one tensor per layer)."""
    card = read_card(path)
    slots = []
    for layer in card.get("streaming", {}).get("layers", []):
        for s in layer["states"]:
            parts = s.get("parts") or [s]
            shape = s["shape"] if len(parts) == 1 else [1, *s["shape"][1:]]
            slots.extend((p["input"], p["output"], shape, int(s.get("batch_axis", 1))) for p in parts)
    return slots


def _zeros(shape: list[Any], batch: int) -> np.ndarray:
    return np.zeros([batch if not isinstance(d, int) else d for d in shape], np.float32)


def streaming_runner(name: str, path: str | Path, threads: int | None = None, data_input: str = "x") -> Runner:
    """A runner whose ``call([chunk])`` runs one chunk and carries the state to the next call."""
    if name == "edgeseq":
        from ..runtime.streaming import StreamingSession

        session = StreamingSession(path, device="cpu", threads=threads)
        opts = session.session._sess.get_session_options()
        return Runner("edgeseq", lambda arrays: session.step(arrays[0]), opts.intra_op_num_threads)
    slots = _state_slots(path)
    if not slots:
        raise ModelFileError(f"{path}: not a streaming export; export it with 'edgeseq export REF --streaming'")
    card = read_card(path)
    outputs = list(card.get("outputs") or ["y"])
    if name == "onnxruntime-default":
        import onnxruntime as ort

        from ..runtime.workarounds import disabled_optimizers

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                    disabled_optimizers=disabled_optimizers(path))
        names = outputs + [s[1] for s in slots]
        state: dict[str, np.ndarray] = {}

        def call(arrays: Sequence[np.ndarray]) -> Any:
            batch = arrays[0].shape[0]
            feed = {data_input: arrays[0]}
            for (inp, _out, shape, _ax) in slots:
                feed[inp] = state.get(inp) if inp in state else _zeros(shape, batch)
            values = sess.run(names, feed)
            for (inp, _out, _shape, _ax), v in zip(slots, values[len(outputs):]):
                state[inp] = v
            return values[0]

        return Runner(name, call, None, notes={"options": "ONNX Runtime defaults; state through numpy"})
    if name in ("openvino", "openvino-f32"):
        compiled = compile_openvino(path, threads, "f32" if name == "openvino-f32" else None)
        request = compiled.create_infer_request()
        in_names = [p.get_any_name() for p in compiled.inputs]
        out_index = {p.get_any_name(): i for i, p in enumerate(compiled.outputs)}
        ov_state: dict[str, np.ndarray] = {}

        def ov_call(arrays: Sequence[np.ndarray]) -> Any:
            batch = arrays[0].shape[0]
            feed = {data_input: arrays[0]}
            for (inp, _out, shape, _ax) in slots:
                feed[inp] = ov_state[inp] if inp in ov_state else _zeros(shape, batch)
            result = request.infer([feed[n] for n in in_names])
            for (inp, out, _shape, _ax) in slots:
                ov_state[inp] = np.array(result[out_index[out]])
            return result[out_index[outputs[0]]]

        return Runner(name, ov_call, threads,
                      notes={"inference_precision": str(compiled.get_property("INFERENCE_PRECISION_HINT"))})
    raise InputError(f"unknown streaming runtime {name!r}; choose edgeseq, onnxruntime-default, openvino, openvino-f32")


class TorchStepper:
    """Run a PyTorch model one chunk at a time, carrying every nn.LSTM/nn.GRU state in Python,
    the way an application without edgeseq would stream with PyTorch.

    >>> step = TorchStepper(model)          # doctest: +SKIP
    >>> y = step(torch.zeros(1, 1, 6))     # doctest: +SKIP
    """

    def __init__(self, model: Any) -> None:
        import torch.nn as nn

        self.model = model.eval()
        self.state: dict[str, Any] = {}
        for name, module in model.named_modules():
            if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
                if module.bidirectional:
                    raise InputError(f"layer {name!r} is bidirectional and cannot run step by step")
                module.forward = self._carrying(name, type(module).forward.__get__(module))

    def _carrying(self, name: str, original: Any) -> Any:
        def forward(input: Any, hx: Any = None) -> Any:
            out, new_state = original(input, self.state.get(name, hx))
            self.state[name] = new_state
            return out, new_state

        return forward

    def __call__(self, *inputs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model(*inputs)


def torch_streaming_runner(model: Any, threads: int | None = None) -> Runner:
    """PyTorch eager stepped chunk by chunk with carried state (same thread count)."""
    import copy

    import torch

    if threads:
        torch.set_num_threads(int(threads))
    stepper = TorchStepper(copy.deepcopy(model))  # the stepper patches its modules; keep the caller's intact
    return Runner("pytorch", lambda arrays: stepper(*[torch.from_numpy(a) for a in arrays]), torch.get_num_threads())
