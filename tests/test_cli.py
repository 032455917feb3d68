from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseq.cli import main

REF = "models/families.py:gru"


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def gru_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "gru.onnx"
    result = CliRunner().invoke(main, ["export", REF, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "exporter: torchscript" in result.output
    return out


def test_export_reports_exporter_and_parity(gru_file):
    assert gru_file.exists()


def test_check_prints_table_and_passes(runner, gru_file, tmp_path):
    report = tmp_path / "r.json"
    result = runner.invoke(main, ["check", str(gru_file), "--against", REF, "--batch-sizes", "1,3",
                                  "--lengths", "1,2,17,100", "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "max_abs" in result.output and "parity ok" in result.output
    data = json.loads(report.read_text())
    assert data["summary"]["passed"] is True
    assert 21 in data["summary"]["lengths"]  # a length longer than the export example is always added


def test_check_fails_against_a_different_model(runner, gru_file):
    result = runner.invoke(main, ["check", str(gru_file), "--against", "models/families.py:bigru",
                                  "--lengths", "1,5", "--batch-sizes", "1"])
    assert result.exit_code == 1


@pytest.mark.parametrize("suffix", [".npy", ".json", ".csv"])
def test_infer_writes_each_output_format(runner, gru_file, tmp_path, suffix):
    x = np.random.default_rng(0).standard_normal((4, 6, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / f"y{suffix}"
    result = runner.invoke(main, ["infer", str(gru_file), "--input", str(tmp_path / "x.npy"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()
    if suffix == ".npy":
        assert np.load(out).shape == (4, 9)


def test_infer_reads_csv_and_jsonl(runner, gru_file, tmp_path):
    csv = tmp_path / "seq.csv"
    csv.write_text("\n".join(",".join(["0.5"] * 12) for _ in range(5)))
    r = runner.invoke(main, ["infer", str(gru_file), "--input", str(csv)])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout.splitlines()[0])) == 9
    jl = tmp_path / "seqs.jsonl"
    jl.write_text(json.dumps([[0.1] * 12] * 3) + "\n" + json.dumps([[0.2] * 12] * 7) + "\n")
    r = runner.invoke(main, ["infer", str(gru_file), "--input", str(jl)])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) == 2


def test_csv_with_a_pandas_index_column_gets_a_hint(runner, gru_file, tmp_path):
    rows = np.random.default_rng(0).random((6, 12))
    indexed = tmp_path / "indexed.csv"
    indexed.write_text("," + ",".join(f"f{i}" for i in range(12)) + "\n"
                       + "\n".join(f"{t}," + ",".join(map(str, r)) for t, r in enumerate(rows)) + "\n")
    r = runner.invoke(main, ["infer", str(gru_file), "--input", str(indexed)])
    assert r.exit_code == 1
    assert "axis 2 must be 12, got 13" in r.stderr and "df.to_csv(path, index=False)" in r.stderr
    plain = tmp_path / "plain.csv"  # 13 real features whose first happens to be 0.5 everywhere: no hint
    plain.write_text("\n".join(",".join(["0.5"] * 13) for _ in range(5)))
    r = runner.invoke(main, ["infer", str(gru_file), "--input", str(plain)])
    assert r.exit_code == 1 and "pandas" not in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["infer", "missing.onnx", "--input", "x.npy"], "no such file"),
        (["infer", "GRU", "--input", "x.npy", "--device", "tpu"], "unknown device"),
        (["infer", "GRU", "--input", "wrong.npy"], "axis 2 must be 12"),
        (["export", "nope.py:build", "-o", "o.onnx"], "no such file"),
        (["export", "models/families.py:nothing", "-o", "o.onnx"], "has no attribute 'nothing'"),
        (["export", "not-a-ref", "-o", "o.onnx"], "must look like"),
    ],
)
def test_errors_are_one_line_exit_1_no_output(runner, gru_file, tmp_path, args, message):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 12), np.float32))
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 5), np.float32))
    args = [str(gru_file) if a == "GRU" else (str(tmp_path / a) if a.endswith((".npy", ".onnx")) else a) for a in args]
    result = runner.invoke(main, args + ["-o", str(tmp_path / "out.npy")] if args[0] == "infer" else args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.npy").exists() and not (tmp_path / "o.onnx").exists()


def test_inspect_shows_dynamic_dims_ops_and_card(runner, gru_file):
    r = runner.invoke(main, ["inspect", str(gru_file)])
    assert r.exit_code == 0, r.output
    assert "x: float32[batch, seq, 12]" in r.output
    assert "GRU x1" in r.output
    assert "exporter: torchscript" in r.output


def test_real_subprocess_export_then_infer(tmp_path):
    """The installed console script, end to end, as a user runs it."""
    exe = [sys.executable, "-m", "edgeseq.cli"]
    out = tmp_path / "m.onnx"
    r = subprocess.run(exe + ["export", "models/families.py:bilstm", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 6), np.float32))
    r = subprocess.run(exe + ["infer", str(out), "--input", str(tmp_path / "x.npy")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 2
    r = subprocess.run(exe + ["infer", str(out), "--input", str(tmp_path / "nope.npy")], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr


def test_infer_refuses_to_overwrite_its_input(runner, gru_file, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 4, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(main, ["infer", str(gru_file), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "." / "x.npy")])
    assert r.exit_code == 1 and "would overwrite the input" in r.stderr and "Traceback" not in r.output
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), x)  # the input is intact


def test_no_command_writes_over_what_it_reads(runner, gru_file, tmp_path):
    import shutil

    import torch

    from models.families import FAMILIES

    source = tmp_path / "net.py"
    source.write_text("from models.families import gru as build\n")
    weights = tmp_path / "w.onnx"  # named .onnx, so that only the overwrite rule can refuse it
    torch.save(FAMILIES["gru"]().state_dict(), weights)
    model = tmp_path / "m.onnx"
    shutil.copy(gru_file, model)
    before = {p: p.read_bytes() for p in (source, weights, model)}
    cases = [
        (["export", f"{source}:build", "-o", str(source)], "the output must be an .onnx file"),
        (["export", f"{source}:build", "--weights", str(weights), "-o", str(weights)], "-o would overwrite --weights"),
        (["check", str(model), "--against", REF, "--lengths", "1", "--json", str(model)],
         "--json would overwrite the model"),
        (["check", str(model), "--against", f"{source}:build", "--lengths", "1", "--json", str(source)],
         "--json would overwrite --against"),
        (["bench", str(model), "--json", str(model)], "--json would overwrite the model"),
        (["infer", str(model), "-i", str(tmp_path / "x.npy"), "-o", str(model)], "-o would overwrite the model"),
    ]
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 12), np.float32))
    for args, message in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.output)
    assert {p: p.read_bytes() for p in before} == before


def test_infer_replaces_a_read_only_output_file(runner, gru_file, tmp_path):
    import os

    np.save(tmp_path / "x.npy", np.zeros((2, 4, 12), np.float32))
    out = tmp_path / "y.npy"
    out.write_bytes(b"old")
    os.chmod(out, 0o444)  # its mode is kept, and applied only after the new file is written
    r = runner.invoke(main, ["infer", str(gru_file), "-i", str(tmp_path / "x.npy"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert np.load(out).shape[0] == 2 and (out.stat().st_mode & 0o777) == 0o444


@pytest.mark.parametrize("extra, flag", [(["-o", "y.npy"], "-o/--output"), (["--input", "x.npy"], "--input"),
                                         (["--batch-size", "8"], "--batch-size")])
def test_stream_refuses_options_it_would_ignore(runner, gru_file, tmp_path, extra, flag):
    extra = [str(tmp_path / a) if a.endswith(".npy") else a for a in extra]
    r = runner.invoke(main, ["infer", str(gru_file), "--stream", *extra], input="1,2\n")
    assert r.exit_code == 2 and f"{flag} does not go with --stream" in r.output
    assert not (tmp_path / "y.npy").exists()


def test_reset_on_blank_needs_stream(runner, gru_file, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 12), np.float32))
    r = runner.invoke(main, ["infer", str(gru_file), "-i", str(tmp_path / "x.npy"), "--reset-on-blank"])
    assert r.exit_code == 2 and "--reset-on-blank goes with --stream" in r.output


def test_output_dash_is_stdout_and_input_dash_is_explained(runner, gru_file, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 12), np.float32))
    r = runner.invoke(main, ["infer", str(gru_file), "-i", str(tmp_path / "x.npy"), "-o", "-"])
    assert r.exit_code == 0 and len(r.stdout.strip().splitlines()) == 2 and not (tmp_path / "-").exists()
    r = runner.invoke(main, ["infer", str(gru_file), "-i", "-"])
    assert r.exit_code == 1 and "--stream" in r.stderr and "Traceback" not in r.output


def test_infer_reads_a_csv_of_token_ids_one_per_row(runner, exported, tmp_path):
    from edgeseq import Session

    text = exported("text_bilstm")
    (tmp_path / "tok.csv").write_text("5\n6\n7\n")
    r = runner.invoke(main, ["infer", str(text), "-i", str(tmp_path / "tok.csv")])
    assert r.exit_code == 0, r.output
    want = Session(text, device="cpu").predict(np.array([[5, 6, 7]]))
    np.testing.assert_allclose(json.loads(r.stdout.splitlines()[0]), want[0], rtol=1e-6)
    (tmp_path / "row.csv").write_text("5,6,7\n")
    r = runner.invoke(main, ["infer", str(text), "-i", str(tmp_path / "row.csv")])
    assert r.exit_code == 1 and "one value per row" in r.stderr


def test_an_output_that_is_a_pipe_or_device_is_refused_not_replaced(runner, gru_file, tmp_path):
    import os
    import stat

    np.save(tmp_path / "x.npy", np.zeros((1, 3, 12), np.float32))
    os.mkfifo(tmp_path / "pipe.npy")  # like /dev/null: renaming the finished file over it would replace the device
    r = runner.invoke(main, ["infer", str(gru_file), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "pipe.npy")])
    assert r.exit_code == 1 and "not a regular file" in r.stderr
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe.npy").st_mode)


def test_check_against_a_model_with_other_inputs_says_so(runner, gru_file):
    r = runner.invoke(main, ["check", str(gru_file), "--against", "tests/export/test_multi_input.py:build",
                             "--batch-sizes", "1", "--lengths", "3"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "Error: no case could be compared: PyTorch's forward does not take these inputs" in r.stderr
    assert "FAILED in 0 case(s)" not in r.output


def test_check_holds_a_file_to_the_tolerance_it_was_exported_with(runner, tmp_path):
    out = tmp_path / "loose.onnx"
    assert runner.invoke(main, ["export", REF, "-o", str(out), "--atol", "0.01"]).exit_code == 0
    r = runner.invoke(main, ["check", str(out), "--against", REF, "--batch-sizes", "1", "--lengths", "3"])
    assert r.exit_code == 0 and "(atol 0.01, rtol 1e-05)" in r.stdout
    r = runner.invoke(main, ["check", str(out), "--against", REF, "--batch-sizes", "1", "--lengths", "3", "--atol", "1e-4"])
    assert "(atol 0.0001, rtol 1e-05)" in r.output  # an explicit --atol still wins


@pytest.mark.parametrize("args, message", [
    (["check", "{model}", "--against", REF, "--atol", "nan"], "'nan' must be a finite number >= 0"),
    (["check", "{model}", "--against", REF, "--rtol", "inf"], "'inf' must be a finite number >= 0"),
    (["check", "{model}", "--against", REF, "--atol", "-1"], "'-1' must be a finite number >= 0"),
    (["export", REF, "-o", "{tmp}/m.onnx", "--atol", "nan"], "'nan' must be a finite number >= 0"),
    (["export", REF, "-o", "{tmp}/m.onnx", "--opset", "99"], "99 is not in the range 14<=x<=21"),
    (["bench", "{model}", "--runtimes", ""], "--runtimes names none"),
    (["bench", "{model}", "--weights", "{tmp}/w.pt"], "--weights goes with --against"),
])
def test_options_that_would_switch_a_gate_off_or_do_nothing_are_refused(runner, gru_file, tmp_path, args, message):
    args = [a.format(model=gru_file, tmp=tmp_path) for a in args]
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "m.onnx").exists()


def test_far_too_many_threads_are_refused_before_onnx_runtime_hangs(runner, gru_file, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 12), np.float32))
    for args in (["infer", str(gru_file), "-i", str(tmp_path / "x.npy"), "--threads", "100000"],
                 ["bench", str(gru_file), "--threads", "100000", "--seconds", "0.01"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and "threads=100000 is far more than this machine's" in result.stderr


def test_a_bom_from_excel_is_not_data(runner, gru_file, tmp_path):
    rows = np.random.default_rng(0).standard_normal((4, 12)).astype(np.float32)
    text = "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "plain.csv").write_text(text)
    outs = [runner.invoke(main, ["infer", str(gru_file), "-i", str(tmp_path / n)]) for n in ("bom.csv", "plain.csv")]
    assert outs[0].exit_code == 0, outs[0].output
    assert outs[0].stdout == outs[1].stdout


def test_write_errors_of_the_machine_are_one_line(gru_file, tmp_path):
    """/dev/full: every write fails with ENOSPC, as on a full disk."""
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 12), np.float32))
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "edgeseq", "infer", str(gru_file), "-i", str(tmp_path / "x.npy")],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "could not write (No space left on device)" in done.stderr
