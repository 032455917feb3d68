"""CUDA: stepping a streaming file with its state kept on the GPU between steps (needs a GPU).

This is the I/O-binding pattern StreamingSession should use on CUDA: state outputs are bound to
device memory and fed back as the next step's inputs, so only the step's input and output cross
the bus.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.card import read_card
from edgeseq.runtime.ort import session_options
from edgeseq.runtime.providers import resolve_device

pytestmark = pytest.mark.gpu


def step_on_device(path, x: np.ndarray, device_id: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Run ``x`` [batch, time, features] one step at a time; return per-step outputs and state devices."""
    import onnxruntime as ort

    card = read_card(path)
    sess = ort.InferenceSession(str(path), session_options(), providers=resolve_device(f"cuda:{device_id}").providers)
    state_in, state_out = card["state_inputs"], card["state_outputs"]
    data = next(i.name for i in sess.get_inputs() if i.name not in state_in)
    first_out = sess.get_outputs()[0].name
    shapes = {i.name: [x.shape[0] if isinstance(d, str) else d for d in i.shape] for i in sess.get_inputs()}
    state = [ort.OrtValue.ortvalue_from_numpy(np.zeros(shapes[n], np.float32), "cuda", device_id) for n in state_in]
    ys, devices = [], []
    for t in range(x.shape[1]):
        binding = sess.io_binding()
        binding.bind_cpu_input(data, np.ascontiguousarray(x[:, t : t + 1]))
        for name, value in zip(state_in, state):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(first_out, "cpu")
        for name in state_out:
            binding.bind_output(name, "cuda", device_id)
        sess.run_with_iobinding(binding)
        out = binding.get_outputs()
        ys.append(out[0].numpy())
        state = list(out[1:])
        devices.append(",".join(v.device_name().lower() for v in state))
    return ys, devices


def test_state_stays_on_gpu_and_steps_match_pytorch(families, tmp_path):
    import torch

    from edgeseq.export.stateful import export_with_extras

    model = families["stacked_lstm"]()
    path = tmp_path / "stream.onnx"
    export_with_extras(model, path, streaming=True)
    x = np.random.default_rng(0).standard_normal((3, 23, 28)).astype(np.float32)
    ys, devices = step_on_device(path, x)
    assert set(devices) == {"cuda,cuda"}
    with torch.no_grad():
        for t in (0, 11, 22):  # the output after step t equals the model on the prefix x[:, :t+1]
            ref = model(torch.from_numpy(x[:, : t + 1])).numpy()
            np.testing.assert_allclose(ys[t], ref, atol=1e-5, rtol=1e-5)
