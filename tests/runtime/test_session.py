from __future__ import annotations

import numpy as np
import pytest

from edgeseq import EdgeseqError, Session
from edgeseq.errors import InputError, ModelFileError, ProviderError


@pytest.fixture(scope="module")
def lstm_path(exported):
    return exported("stacked_lstm")


def test_predict_batches_and_matches_run(lstm_path):
    s = Session(lstm_path, device="cpu")
    x = np.random.default_rng(0).standard_normal((10, 7, 28)).astype(np.float32)
    whole = s.run({"x": x})["y"]
    chunked = s.predict(x, batch_size=3)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert s.providers == ["CPUExecutionProvider"]
    assert s.inputs[0].shape == ("batch", "seq", 28)
    assert s.card["exporter"] == "torchscript"


def test_float64_and_int_inputs_are_cast_safely(lstm_path):
    s = Session(lstm_path, device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 5, 28))
    np.testing.assert_allclose(s.predict(x), s.predict(x.astype(np.float32)), atol=1e-6)
    assert s.predict(np.ones((1, 3, 28), dtype=np.int32)).shape == (1, 10)


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((5, 28), np.float32), r"expects rank 3.*add a batch axis"),
        (np.zeros((1, 5, 27), np.float32), r"axis 2 must be 28, got 27"),
        (np.zeros((1, 0, 28), np.float32), r"empty axis"),
        (np.full((1, 5, 28), np.nan, np.float32), r"NaN/Inf at index \(0, 0, 0\).*sample 0, step 0"),
        (np.array([[["a"] * 28]]), r"not numeric"),
        (np.ones((1, 2, 28), bool), r"boolean"),
    ],
)
def test_bad_inputs_raise_clear_errors(lstm_path, x, match):
    s = Session(lstm_path, device="cpu")
    with pytest.raises(InputError, match=match):
        s.predict(x)


def test_nonfinite_allowed_on_request(lstm_path):
    s = Session(lstm_path, device="cpu", allow_nonfinite=True)
    assert s.predict(np.full((1, 2, 28), np.nan, np.float32)).shape == (1, 10)


def test_token_ids_reject_fractional_floats(exported):
    s = Session(exported("text_bilstm"), device="cpu")
    assert s.predict(np.array([[1.0, 2.0, 3.0]])).shape == (1, 2)
    with pytest.raises(InputError, match="integer ids"):
        s.predict(np.array([[1.5, 2.0]]))


def test_lengths_without_lengths_input_runs_groups_unpadded(lstm_path):
    s = Session(lstm_path, device="cpu")
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((1, 4, 28)), rng.standard_normal((1, 9, 28))
    padded = np.zeros((2, 9, 28), np.float32)
    padded[0, :4], padded[1] = a[0], b[0]
    y = s.predict(padded, lengths=[4, 9])
    np.testing.assert_allclose(y[0], s.predict(a)[0], atol=1e-6)
    np.testing.assert_allclose(y[1], s.predict(b)[0], atol=1e-6)


def test_missing_and_corrupt_files(tmp_path, lstm_path):
    with pytest.raises(ModelFileError, match="no such file"):
        Session(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not onnx at all")
    with pytest.raises(ModelFileError):
        Session(bad)
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(lstm_path.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="truncated|corrupt|cannot load"):
        Session(truncated)


def test_device_errors_are_precise(lstm_path):
    with pytest.raises(ProviderError, match="unknown device 'tpu'"):
        Session(lstm_path, device="tpu")
    s = Session(lstm_path, device="auto")
    assert s.providers[0] in ("CPUExecutionProvider", "CUDAExecutionProvider")


def test_cuda_without_cuda_says_why(lstm_path):
    from edgeseq.runtime.providers import cuda_unusable_reason

    reason = cuda_unusable_reason()
    if reason is None:
        pytest.skip("CUDA is usable here")
    with pytest.raises(ProviderError, match="cannot be used: " + reason.split(" ")[0]):
        Session(lstm_path, device="cuda")


def test_errors_share_one_root():
    assert issubclass(InputError, EdgeseqError) and issubclass(ProviderError, EdgeseqError)


def test_one_run_path_keeps_every_check(lstm_path, exported):
    # predict() runs a matching array in one call without the chunking machinery; same results, same refusals
    s = Session(lstm_path, device="cpu")
    x = np.random.default_rng(2).standard_normal((3, 5, 28)).astype(np.float32)
    np.testing.assert_allclose(s.predict(x), s.predict(x, batch_size=1), atol=1e-6)
    np.testing.assert_allclose(s.predict(np.asfortranarray(x)), s.predict(x), atol=1e-6)
    x[1, 2, 3] = np.inf
    with pytest.raises(InputError, match=r"NaN/Inf at index \(1, 2, 3\) \(sample 1, step 2\)"):
        s.predict(x)
    with pytest.raises(InputError, match="over the limit of 4"):
        Session(lstm_path, device="cpu", max_length=4).predict(np.zeros((1, 5, 28), np.float32))
    text = Session(exported("text_bilstm"), device="cpu")
    with pytest.raises(InputError, match=r"token id 500 at index \(0, 1\)"):
        text.predict(np.array([[1, 500]], np.int64))
    with pytest.raises(InputError, match=r"token id -1"):
        text.predict(np.array([[-1, 2]], np.int64))


@pytest.mark.parametrize("kwargs", [{"threads": "2"}, {"threads": 1.5}, {"threads": 0}, {"threads": True},
                                    {"batch_size": 0}, {"max_length": -1}])
def test_bad_settings_name_the_setting(lstm_path, kwargs):
    name = next(iter(kwargs))
    with pytest.raises(InputError, match=f"{name} must be a positive whole number"):
        Session(lstm_path, device="cpu", **kwargs)


def test_predict_batch_size_must_be_positive(lstm_path):
    with pytest.raises(InputError, match="batch_size must be a positive whole number, got -1"):
        Session(lstm_path, device="cpu").predict(np.zeros((2, 3, 28), np.float32), batch_size=-1)


def test_a_session_pickles_as_its_arguments(lstm_path):
    import copy
    import pickle

    s = Session(lstm_path, device="cpu", batch_size=7)
    x = np.random.default_rng(0).standard_normal((3, 5, 28)).astype(np.float32)
    for other in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert other.batch_size == 7 and other is not s
        np.testing.assert_array_equal(other.predict(x), s.predict(x))


def test_lengths_with_a_ragged_list_is_explained(lstm_path):
    s = Session(lstm_path, device="cpu")
    seqs = [np.zeros((5, 28), np.float32), np.zeros((3, 28), np.float32)]
    with pytest.raises(InputError, match="carries its own lengths: drop lengths="):
        s.predict(seqs, lengths=[5, 3])


def test_a_pickled_session_keeps_its_current_settings_and_finds_its_file_from_elsewhere(lstm_path, tmp_path,
                                                                                          monkeypatch):
    import os
    import pickle
    import shutil

    shutil.copy(lstm_path, tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    s = Session("m.onnx", device="cpu")  # a relative path
    s.allow_nonfinite, s.batch_size = True, 8
    monkeypatch.chdir(os.path.dirname(os.path.abspath(os.sep)))
    copy = pickle.loads(pickle.dumps(s))
    assert copy.allow_nonfinite and copy.batch_size == 8
    x = np.full((1, 5, 28), np.nan, np.float32)
    assert copy.predict(x).shape == (1, 10)  # allowed, as in the original (which would refuse it by default)


def test_an_empty_batch_gives_an_empty_result(lstm_path):
    s = Session(lstm_path, device="cpu")
    y = s.predict(np.zeros((0, 9, 28), np.float32))
    assert y.shape == (0,) + s.predict(np.zeros((1, 9, 28), np.float32)).shape[1:] and y.dtype == np.float32
    with pytest.raises(InputError, match=r"axis 2 must be 28, got 5 \(shape \(0, 9, 5\)"):
        s.predict(np.zeros((0, 9, 5), np.float32))
    with pytest.raises(InputError, match="no sequences given"):
        s.predict([])
    with pytest.raises(InputError, match="has no samples"):
        s.run({"x": np.zeros((0, 9, 28), np.float32)})


def test_out_of_memory_is_its_own_error_with_the_fix():
    from edgeseq.errors import OutOfMemoryError
    from edgeseq.runtime.ort import run_failure

    ort_text = ("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running LSTM node. Name:'/lstm/LSTM' "
                "Status Message: .../bfc_arena.cc:359 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, "
                "onnxruntime::Stream*, bool, onnxruntime::WaitNotificationFn) Failed to allocate memory for requested "
                "buffer of size 327680000")
    error = run_failure(RuntimeError(ort_text), "ONNX Runtime failed on samples 0..7")
    assert isinstance(error, OutOfMemoryError) and isinstance(error, MemoryError) and isinstance(error, EdgeseqError)
    assert not isinstance(error, ValueError)  # a service must not answer "bad request" for it
    assert str(error) == ("ONNX Runtime failed on samples 0..7: out of memory (312 MiB more); run fewer samples at a "
                          "time (batch_size=, --batch-size) or split long sequences")
    other = run_failure(RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions\nmore"), "run")
    assert isinstance(other, InputError) and str(other) == "run: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions"


def test_long_sequences_run_few_samples_at_a_time_on_the_cpu(exported):
    """The run size follows the memory ONNX Runtime keeps per sample and step, read from the LSTM nodes."""
    from edgeseq.card import recurrent_bytes_per_step
    from edgeseq.runtime.session import CPU_RUN_BYTES

    path = exported("stacked_lstm")  # two LSTM layers of 64: (4 gates + output) x 64 x 4 bytes each
    assert recurrent_bytes_per_step(path) == 2 * 5 * 64 * 4
    assert recurrent_bytes_per_step(exported("bigru")) == 2 * 2 * (3 + 1) * 32 * 4  # 2 layers x 2 directions of 32
    s = Session(path, device="cpu")
    filled = CPU_RUN_BYTES // (2 * 5 * 64 * 4)  # sample-steps that fill the budget
    assert s._rows(None, filled // 3) == 3 and s._rows(None, filled * 2) == 1
    assert s._rows(None, 28) == 73  # short sequences: the cache rule (2048 sample-steps, at least 64 samples)
    x = np.random.default_rng(0).standard_normal((3, filled // 2, 28)).astype(np.float32)
    np.testing.assert_allclose(s.predict(x), np.concatenate([s.predict(x[i : i + 1]) for i in range(3)]), atol=1e-6)


def test_api_misuse_is_an_edgeseq_error_not_a_type_error(lstm_path):
    with pytest.raises(ModelFileError, match="must be a path to an .onnx file, got NoneType"):
        Session(None)
    s = Session(lstm_path, device="cpu")
    x = np.zeros((1, 5, 28), np.float32)
    with pytest.raises(InputError, match=r"run\(\) takes a dict of inputs by name"):
        s.run(x)
    with pytest.raises(InputError, match="unknown output.*'nope'; the model gives"):
        s.run({"x": x}, outputs=["nope"])
