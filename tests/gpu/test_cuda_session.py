"""CUDA: provider verification, node placement, float and FP16 parity, I/O binding (needs a GPU)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

# Imported first on purpose: edgeseq.quantize.modes.fp16 trims sys.path after importing
# onnxruntime.transformers, which breaks a later first import of onnxruntime.quantization.
from onnxruntime.quantization import QuantType, quantize_dynamic

from edgeseq import Session
from edgeseq.errors import ProviderError, ProviderFallbackWarning
from edgeseq.export.parity import measure
from edgeseq.runtime.providers import CUDA_EP, RECURRENT_OPS, probe_cuda, resolve_device

pytestmark = pytest.mark.gpu
SWEEP = {"batch_sizes": (1, 16), "lengths": (1, 17, 300)}


@pytest.mark.parametrize("family", ["stacked_lstm", "gru", "bilstm", "cnn_lstm", "text_bilstm"])
def test_recurrent_nodes_are_placed_on_cuda(exported, family):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProviderFallbackWarning)
        s = Session(exported(family), device="cuda")
    assert s.device == "cuda:0" and s.providers[0] == CUDA_EP
    assert s.placement is not None, "onnxruntime did not record node placement"
    assert s.placement.recurrent_not_on(CUDA_EP) == []
    assert set(s.placement.counts()[CUDA_EP]) & RECURRENT_OPS


def test_auto_chooses_cuda_and_says_so(exported):
    s = Session(exported("gru"), device="auto")
    assert s.device == "cuda:0" and s.device_reason.startswith("auto chose cuda:0")


def test_device_index_beyond_the_visible_devices():
    n = len(probe_cuda().devices)
    assert n >= 1
    with pytest.raises(ProviderError, match=rf"'cuda:{n}' does not exist: {n} CUDA device"):
        resolve_device(f"cuda:{n}")


@pytest.mark.parametrize("family", ["stacked_lstm", "bigru", "cnn_lstm"])
def test_float32_parity_on_cuda(exported, families, family):
    report = measure(exported(family), families[family](), device="cuda", **SWEEP)
    assert report.provider == CUDA_EP
    assert report.passed, report.summary()


@pytest.mark.parametrize("family", ["stacked_lstm", "bigru"])
def test_fp16_parity_on_cuda(exported, families, fp16_of, family):
    report = measure(fp16_of(exported(family)), families[family](), device="cuda", **SWEEP)
    assert report.provider == CUDA_EP and report.precision == "float16"
    assert report.passed, report.summary()


def test_predict_with_io_binding_matches_plain_run_and_cpu(exported):
    path = exported("stacked_lstm")
    x = np.random.default_rng(0).standard_normal((37, 50, 28)).astype(np.float32)
    lengths = np.random.default_rng(1).integers(1, 51, size=37)
    bound, plain = Session(path, device="cuda"), Session(path, device="cuda", io_binding=False)
    assert bound.io_binding and not plain.io_binding
    got = bound.predict(x, lengths=lengths, batch_size=16)
    np.testing.assert_allclose(got, plain.predict(x, lengths=lengths, batch_size=16), atol=1e-6)
    np.testing.assert_allclose(got, Session(path, device="cpu").predict(x, lengths=lengths), atol=1e-5)


def test_int8_recurrent_nodes_fall_back_to_cpu_visibly(exported, tmp_path):
    dst = tmp_path / "int8.onnx"
    quantize_dynamic(str(exported("stacked_lstm")), str(dst), weight_type=QuantType.QInt8)
    with pytest.warns(ProviderFallbackWarning, match="DynamicQuantizeLSTM"):
        Session(dst, device="cuda")
    auto = Session(dst, device="auto")
    assert auto.device == "cpu" and "no CUDA kernel" in auto.device_reason


def test_a_scripted_loop_over_time_matches_pytorch_on_cuda(tmp_path):
    import torch

    from edgeseq.export import export
    from tests.export.test_scripted_loops import CellLoop

    torch.manual_seed(0)
    model, path = CellLoop().eval(), tmp_path / "loop.onnx"
    export(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProviderFallbackWarning)  # where the Loop runs is ONNX Runtime's choice
        report = measure(path, model, device="cuda", **SWEEP)
    assert report.provider == CUDA_EP
    assert report.passed, report.summary()


def test_a_packed_model_gives_per_sample_answers_on_cuda(tmp_path):
    import torch

    from edgeseq.export import export
    from tests.export.test_packed import Sentiment

    torch.manual_seed(0)
    path = tmp_path / "packed.onnx"
    export(Sentiment().eval(), path, time_first=True)
    sentences = [np.random.default_rng(i).integers(1, 50, n) for i, n in enumerate((7, 2, 15))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProviderFallbackWarning)
        got = Session(path, device="cuda").predict(sentences)
    np.testing.assert_allclose(got, Session(path, device="cpu").predict(sentences), atol=1e-5)
