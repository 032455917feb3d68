"""Reading input files the way tools write them."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.errors import InputError
from edgeseq.runtime.io import read_input


def test_pandas_integer_column_names_are_a_header_not_a_step(tmp_path):
    data = np.array([[0.5, -1.25, 2.0], [1.5, 0.25, -3.0]])
    body = "\n".join(",".join(str(v) for v in row) for row in data)
    (tmp_path / "h.csv").write_text("0,1,2\n" + body + "\n")  # pd.DataFrame(a).to_csv(path, index=False)
    np.testing.assert_array_equal(read_input(tmp_path / "h.csv").x[0], data)
    indexed = "\n".join(f"{i}," + ",".join(str(v) for v in row) for i, row in enumerate(data))
    (tmp_path / "p.csv").write_text(",0,1,2\n" + indexed + "\n")  # pd.DataFrame(a).to_csv(path)
    batch = read_input(tmp_path / "p.csv")
    assert batch.x.shape == (1, 2, 4) and "pandas index" in batch.hint
    (tmp_path / "ids.csv").write_text("0,1,2\n3,4,5\n")  # whole numbers throughout: the first row is data
    assert read_input(tmp_path / "ids.csv").x.shape == (1, 2, 3)


def test_jsonl_booleans_are_refused_and_nested_lines_explained(tmp_path):
    (tmp_path / "b.jsonl").write_text("[1, true, 3]\n")
    with pytest.raises(InputError, match="line 1: true/false is not a number; write 1/0"):
        read_input(tmp_path / "b.jsonl")
    (tmp_path / "n.jsonl").write_text("[[1, 2, 3], [3, 4, 5]]\n")
    assert "a .jsonl line is one sequence: [id, id, ...] of token ids" in read_input(tmp_path / "n.jsonl").hint


def test_a_missing_channel_axis_gets_the_channel_hint_not_the_batch_one():
    from edgeseq.runtime.checks import TensorSpec, check_shape

    spec = TensorSpec("x", np.float32, ("batch", 1, 40, "seq"))
    with pytest.raises(InputError, match=r"add the axis of 1, e.g. np.expand_dims\(x, 1\)"):
        check_shape(np.zeros((32, 40, 101), np.float32), spec)
    with pytest.raises(InputError, match=r"add a batch axis, e.g. x\[None\]"):
        check_shape(np.zeros((40, 101), np.float32), TensorSpec("x", np.float32, ("batch", 40, "seq")))
