"""The bad-input corpus, each case through the CLI (click runner), the Python API, and some as a real process.

Every case must end with one line ``Error: ...`` naming the problem, exit status 1 (2 for usage
errors), no traceback, and no output file (nor temporary file) left behind.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from robust_helpers import leftovers, run_cli, write_external_model

from edgeseq import EdgeseqError
from edgeseq.cli import main
from edgeseq.runtime.infer import infer_file

F = 12  # features of the 'gru' family


def npy(array: Any) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        np.save(folder / "in.npy", np.asarray(array))
        return folder / "in.npy"
    return make


def text(name: str, content: str | bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path
    return make


def truncated_npy(folder: Path) -> Path:
    np.save(folder / "full.npy", np.zeros((4, 5, F), np.float32))
    (folder / "in.npy").write_bytes((folder / "full.npy").read_bytes()[:300])
    return folder / "in.npy"


def pickled_npy(folder: Path) -> Path:
    np.save(folder / "in.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return folder / "in.npy"


def npz_bad_lengths(folder: Path) -> Path:
    np.savez(folder / "in.npz", x=np.zeros((2, 5, F), np.float32), lengths=np.array([3, 9]))
    return folder / "in.npz"


def corrupt_npz(folder: Path) -> Path:
    np.savez(folder / "full.npz", x=np.zeros((2, 5, F), np.float32))
    (folder / "in.npz").write_bytes((folder / "full.npz").read_bytes()[:150])
    return folder / "in.npz"


def nan_at(sample: int, step: int, value: float = np.nan) -> np.ndarray:
    x = np.zeros((3, 5, F), np.float32)
    x[sample, step, 4] = value
    return x


OK = npy(np.zeros((2, 5, F), np.float32))

# id, model ("gru" | "text" | a maker returning a model path), input maker, extra args, message regex
CASES: list[tuple[str, Any, Callable[[Path], Path], list[str], str]] = [
    ("wrong-rank", "gru", npy(np.zeros(5, np.float32)), [], r"expects rank 3 .*got shape \(5,\)"),
    ("wrong-features", "gru", npy(np.zeros((2, 5, 7), np.float32)), [], r"axis 2 must be 12, got 7"),
    ("empty-file", "gru", text("in.npy", b""), [], r"in\.npy: file is empty"),
    ("zero-length-npy", "gru", npy(np.zeros((2, 0, F), np.float32)), [], r"empty axis"),
    ("zero-length-jsonl", "gru", text("in.jsonl", "[[1,2,3,4,5,6,7,8,9,10,11,12]]\n[]\n"), [],
     r"line 2: empty sequence"),
    ("non-numeric-csv", "gru", text("in.csv", ",".join(["1"] * F) + "\n" + ",".join(["1"] * 5 + ["abc"] + ["1"] * 6)),
     [], r"row 2 column 6: 'abc' is not a number"),
    ("ragged-jsonl", "gru", text("in.jsonl", json.dumps([[0.0] * F, [0.0] * (F - 1)]) + "\n"), [], r"line 1: ragged"),
    ("jsonl-different-features", "gru", text("in.jsonl", json.dumps([[0.0] * F]) + "\n" + json.dumps([[0.0] * 3]) + "\n"),
     [], r"line 2: steps have shape \(3,\)"),
    ("nan", "gru", npy(nan_at(2, 3)), [], r"NaN/Inf at index \(2, 3, 4\) \(sample 2, step 3\).*--allow-nonfinite"),
    ("inf-csv", "gru", text("in.csv", "\n".join([",".join(["0"] * F)] * 2 + [",".join(["inf"] + ["0"] * (F - 1))])),
     [], r"NaN/Inf at index \(0, 2, 0\) \(sample 0, step 2\)"),
    ("float64-overflow", "gru", npy(np.full((1, 2, F), 1e300)), [], r"overflows float32"),
    ("int-too-big", "gru", npy(np.full((1, 2, F), 2**40, np.int64)), [], r"cannot be represented exactly as float32"),
    ("bool", "gru", npy(np.ones((1, 2, F), bool)), [], r"boolean data"),
    ("complex", "gru", npy(np.ones((1, 2, F), np.complex64)), [], r"dtype complex64, expected numbers"),
    ("token-id-too-big", "text", npy(np.array([[1, 2, 500]], np.int64)), [],
     r"token id 500 at index \(0, 2\) \(sample 0, step 2\) is outside the embedding's range 0\.\.499"),
    ("token-id-negative", "text", npy(np.array([[1, 2], [3, -1]], np.int64)), [],
     r"token id -1 .*sample 1, step 1.*range 0\.\.499"),
    ("token-id-fractional", "text", npy(np.array([[1.0, 2.5]])), [], r"non-integer float at index \(0, 1\)"),
    ("huge-length", "gru", npy(np.zeros((1, 100_001, F), np.float32)), [],
     r"sequences of 100001 steps, over the limit of 100000.*--max-length"),
    ("length-over-max-length", "gru", npy(np.zeros((1, 60, F), np.float32)), ["--max-length", "50"],
     r"over the limit of 50"),
    ("truncated-npy", "gru", truncated_npy, [], r"is truncated: its header says shape \(4, 5, 12\)"),
    ("not-npy", "gru", text("in.npy", b"just some text, not numpy"), [], r"is not a \.npy file"),
    ("pickled-npy", "gru", pickled_npy, [], r"pickled"),
    ("pickle-as-npy", "gru", text("in.npy", pickle.dumps([1, 2, 3])), [], r"is not a \.npy file"),
    ("corrupt-npz", "gru", corrupt_npz, [], r"not a valid \.npz file"),
    ("npz-bad-lengths", "gru", npz_bad_lengths, [], r"lengths'? must be between 1 and the padded length 5"),
    ("unknown-input-type", "gru", text("in.txt", "1,2"), [], r"unsupported input type '\.txt'"),
    ("missing-input", "gru", lambda folder: folder / "nope.npy", [], r"nope\.npy: no such file"),
    ("binary-jsonl", "gru", text("in.jsonl", b"\xff\xfe\x00garbage"), [], r"not a UTF-8 text file"),
    ("not-onnx", lambda folder: text("m.onnx", b"hello, not a model")(folder), OK, [], r"not a valid ONNX file"),
    ("truncated-onnx", "truncated", OK, [], r"not a valid ONNX file \(truncated or corrupt\)"),
    ("missing-model", lambda folder: folder / "missing.onnx", OK, [], r"missing\.onnx: no such file"),
    ("external-data-outside", lambda f: write_external_model(f / "m", "../secret.bin", data_file=None), OK, [],
     r"tensor 'w' keeps its data in '\.\./secret\.bin', outside the model's folder"),
    ("external-data-absolute", lambda f: write_external_model(f / "m", "/etc/passwd", data_file=None), OK, [],
     r"'/etc/passwd', an absolute path"),
    ("unknown-device", "gru", OK, ["--device", "tpu"], r"unknown device 'tpu'; use 'auto', 'cpu', 'cuda'"),
    ("output-folder-missing", "gru", OK, ["-o", "{tmp}/no/such/dir/out.npy"], r"output folder .* does not exist"),
    ("output-type", "gru", OK, ["-o", "{tmp}/out.txt"], r"unsupported output type '\.txt'"),
]


@pytest.fixture(scope="module")
def models(exported, tmp_path_factory) -> dict[str, Path]:
    gru = exported("gru")
    truncated = tmp_path_factory.mktemp("trunc") / "truncated.onnx"
    truncated.write_bytes(gru.read_bytes()[: gru.stat().st_size // 2])
    return {"gru": gru, "text": exported("text_bilstm"), "truncated": truncated}


def _setup(case: tuple, models: dict[str, Path], folder: Path) -> tuple[Path, Path, list[str]]:
    _, model, make_input, extra, _ = case
    model_path = model(folder) if callable(model) else models[model]
    input_path = make_input(folder)
    extra = [a.replace("{tmp}", str(folder)) for a in extra]
    return model_path, input_path, extra


def _api_kwargs(extra: list[str], folder: Path) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"device": "cpu", "output": folder / "out.npy"}
    for flag, value in zip(extra[::2], extra[1::2]):
        key = {"--device": "device", "--max-length": "max_length", "-o": "output"}[flag]
        kwargs[key] = int(value) if key == "max_length" else value
    return kwargs


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cli_one_line_exit_1_no_output(case, models, tmp_path):
    model, input_path, extra = _setup(case, models, tmp_path)
    args = ["infer", str(model), "--input", str(input_path)]
    args += extra if "-o" in extra else ["-o", str(tmp_path / "out.npy"), *extra]
    if "--device" not in extra:
        args += ["--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert re.search(case[4], lines[0]), lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_api_raises_edgeseq_error_no_output(case, models, tmp_path):
    model, input_path, extra = _setup(case, models, tmp_path)
    kwargs = _api_kwargs(extra, tmp_path)
    with pytest.raises(EdgeseqError, match=case[4]):
        infer_file(model, input_path, **kwargs)
    assert leftovers(tmp_path) == []


SUBPROCESS_CASES = ["truncated-npy", "nan", "token-id-too-big", "external-data-outside", "not-onnx", "unknown-device"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_real_process_one_line_exit_1(name, models, tmp_path):
    case = next(c for c in CASES if c[0] == name)
    model, input_path, extra = _setup(case, models, tmp_path)
    r = run_cli("infer", str(model), "--input", str(input_path), "-o", str(tmp_path / "out.json"),
                *(extra or ["--device", "cpu"]))
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), r.stderr
    assert re.search(case[4], r.stderr)
    assert r.stdout == "" and leftovers(tmp_path) == []


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["--max-length", "-3"], "Invalid value for '--max-length'"),
    (["--no-such-option"], "No such option"),
    (None, "give --input FILE"),
])
def test_usage_errors_exit_2(models, tmp_path, args, message):
    OK(tmp_path)
    base = ["infer", str(models["gru"]), "-o", str(tmp_path / "out.npy")]
    if args is not None:
        base += ["--input", str(tmp_path / "in.npy"), *args]
    result = CliRunner().invoke(main, base)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert "Traceback" not in result.output and leftovers(tmp_path) == []


# ---------------------------------------------------------------------- inputs that must work
@pytest.mark.parametrize("name, x, extra", [
    ("float64", np.random.default_rng(0).standard_normal((3, 4, F)), []),
    ("int32", np.arange(3 * 4 * F, dtype=np.int32).reshape(3, 4, F) % 7, []),
    ("float16", np.random.default_rng(1).standard_normal((3, 4, F)).astype(np.float16), []),
    ("nan-allowed", nan_at(1, 2), ["--allow-nonfinite"]),
])
def test_safe_casts_and_explicit_nonfinite_run(models, tmp_path, name, x, extra):
    from edgeseq import Session

    np.save(tmp_path / "in.npy", x)
    out = tmp_path / "out.npy"
    result = CliRunner().invoke(main, ["infer", str(models["gru"]), "-i", str(tmp_path / "in.npy"), "-o", str(out),
                                       "--device", "cpu", *extra])
    assert result.exit_code == 0, result.output
    session = Session(models["gru"], device="cpu", allow_nonfinite=bool(extra))
    np.testing.assert_array_equal(np.load(out), session.predict(x.astype(np.float32)))


def test_integral_float_token_ids_run(models, tmp_path):
    from edgeseq import Session

    ids = np.array([[1.0, 7.0, 499.0]])
    y = infer_file(models["text"], _save(tmp_path, ids), device="cpu").outputs
    assert y is not None
    np.testing.assert_array_equal(y, Session(models["text"], device="cpu").predict(ids.astype(np.int64)))


def test_error_numbers_samples_across_chunks(tmp_path, tiny_model):
    """A bad value far into a chunked job is named by its sample number in the whole file."""
    x = np.zeros((5000, 3, 4), np.float32)
    x[4321, 2, 1] = np.inf
    with pytest.raises(EdgeseqError, match=r"index \(4321, 2, 1\) \(sample 4321, step 2\)"):
        infer_file(tiny_model, _save(tmp_path, x), tmp_path / "out.csv", device="cpu", batch_size=64)
    assert leftovers(tmp_path) == []


def test_stdout_prints_nothing_when_a_late_sample_is_bad(tmp_path, tiny_model):
    x = np.zeros((3000, 3, 4), np.float32)
    x[-1, 0, 0] = np.nan
    result = CliRunner().invoke(main, ["infer", str(tiny_model), "-i", _save(tmp_path, x), "--device", "cpu",
                                       "--batch-size", "16"])
    assert result.exit_code == 1 and "sample 2999" in result.stderr
    assert result.stdout == ""


def _save(folder: Path, x: np.ndarray) -> str:
    np.save(folder / "in.npy", x)
    return str(folder / "in.npy")


def test_long_sequences_run_fewer_samples_at_a_time(models, monkeypatch):
    """Memory per run is bounded by samples x steps (STEP_BUDGET), not by batch_size alone."""
    import edgeseq.runtime.session as session_module
    from edgeseq import Session

    session = Session(models["gru"], device="cpu")
    x = np.random.default_rng(2).standard_normal((10, 30, F)).astype(np.float32)
    whole = session.predict(x, batch_size=256)
    runs: list[int] = []
    original = session._run_chunk
    monkeypatch.setattr(session, "_run_chunk", lambda spec, part, *a: runs.append(len(part)) or original(spec, part, *a))
    monkeypatch.setattr(session_module, "STEP_BUDGET", 100)  # 100 // 30 steps -> 3 samples per run
    np.testing.assert_allclose(session.predict(x, batch_size=256), whole, rtol=0, atol=1e-6)
    assert runs == [3, 3, 3, 1]
