"""`edgeseq infer MODEL --stream`: one step per stdin line, one flushed output line per step."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from edgeseq import StreamingSession
from edgeseq.errors import InputError
from edgeseq.runtime.stdin import stream_stdin
from models.families import FAMILIES


@pytest.fixture(scope="module")
def gru_stream(extras):
    return extras("gru", FAMILIES["gru"], streaming=True)[0]


def lines_of(x: np.ndarray, json_rows: bool = False) -> list[str]:
    return [json.dumps(r.tolist()) if json_rows else ",".join(repr(float(v)) for v in r) for r in x]


def test_stdin_steps_match_streaming_session_and_reset_on_blank(gru_stream):
    x = np.random.default_rng(0).standard_normal((6, 12)).astype(np.float32)
    text = "\n".join(lines_of(x[:4]) + [""] + lines_of(x[4:], json_rows=True)) + "\n"
    out = io.StringIO()
    assert stream_stdin(gru_stream, io.StringIO(text), out, device="cpu", reset_on_blank=True) == 6
    rows = out.getvalue().split("\n")
    assert rows[4] == "" and len(rows) == 8  # the blank line is echoed; trailing newline
    s = StreamingSession(gru_stream, device="cpu")
    want = [s.step(x[None, i : i + 1])[0] for i in range(4)]
    s.reset()
    want += [s.step(x[None, i : i + 1])[0] for i in range(4, 6)]
    got = [json.loads(r) for r in rows[:4] + rows[5:7]]
    np.testing.assert_allclose(np.array(got), np.stack(want), atol=1e-6)


def test_without_reset_flag_blank_lines_are_skipped(gru_stream):
    x = np.random.default_rng(1).standard_normal((3, 12)).astype(np.float32)
    a, b = io.StringIO(), io.StringIO()
    stream_stdin(gru_stream, io.StringIO("\n".join(lines_of(x)) + "\n"), a, device="cpu")
    stream_stdin(gru_stream, io.StringIO("\n\n".join(lines_of(x)) + "\n"), b, device="cpu")
    assert a.getvalue() == b.getvalue() and a.getvalue().count("\n") == 3


@pytest.mark.parametrize("line, match", [
    ("1,2,3", r"line 1: expected 12 value\(s\) per step, got 3"),
    ("1,2,x" + ",1" * 9, r"line 1: 'x' is not a number"),
    ("[1, 2", r"line 1: invalid JSON array"),
    ("1,2,3,4,5,nan" + ",1" * 6, r"line 1: input 'x' has NaN/Inf in value 6"),
    ("1,," + ",".join(["1"] * 10), r"line 1: an empty cell"),  # was read as 11 values, shifting the features
    ("[true" + ",1" * 11 + "]", r"line 1: expected one flat JSON array of numbers"),  # was read as 1
    ("[[" + ",".join(["1"] * 12) + "]]", r"line 1: expected one flat JSON array of numbers"),
])
def test_bad_lines_name_the_line(gru_stream, line, match):
    with pytest.raises(InputError, match=match):
        stream_stdin(gru_stream, io.StringIO(line + "\n"), io.StringIO(), device="cpu")


def test_cli_stream_through_a_real_pipe(gru_stream):
    """The CLI in a subprocess: outputs arrive line by line, before stdin is closed."""
    x = np.random.default_rng(2).standard_normal((3, 12)).astype(np.float32)
    proc = subprocess.Popen([sys.executable, "-m", "edgeseq.cli", "infer", str(gru_stream), "--stream", "--device",
                             "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        got = []
        for line in lines_of(x):
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            got.append(json.loads(proc.stdout.readline()))  # would block forever if the CLI did not flush
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    s = StreamingSession(gru_stream, device="cpu")
    np.testing.assert_allclose(np.array(got), np.stack([s.step(x[None, i : i + 1])[0] for i in range(3)]), atol=1e-6)
    bad = subprocess.run([sys.executable, "-m", "edgeseq.cli", "infer", str(gru_stream), "--stream"],
                         input="1,2\n", capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.strip() == "Error: stdin line 1: expected 12 value(s) per step, got 2"


def test_stream_path_does_not_import_torch(gru_stream):
    code = ("import sys, io; from edgeseq.runtime.stdin import stream_stdin; "
            f"stream_stdin({str(gru_stream)!r}, io.StringIO('0' + ',0' * 11), io.StringIO(), device='cpu'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
