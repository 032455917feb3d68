"""A sequence plus static per-sample data (two inputs): export, check, infer and quantize end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgeseq import Session
from edgeseq.cli import main
from edgeseq.errors import InputError
from edgeseq.export import export
from edgeseq.export.stateful import export_with_extras

REF = "tests/export/test_multi_input.py:build"


class SequenceWithMeta(nn.Module):
    """LSTM over (batch, seq, 6) and a Linear over static (batch, 3) metadata, joined for the head."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 32, batch_first=True)
        self.meta_proj = nn.Linear(3, 32)
        self.head = nn.Linear(64, 2)

    def forward(self, x, meta):
        return self.head(torch.cat([self.lstm(x)[0][:, -1], self.meta_proj(meta)], dim=-1))

    def example_inputs(self):
        return (torch.randn(2, 10, 6), torch.randn(2, 3))


def build() -> nn.Module:
    torch.manual_seed(0)
    return SequenceWithMeta().eval()


def _data(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 10, 6)).astype(np.float32),
            "meta": rng.standard_normal((n, 3)).astype(np.float32)}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("multi") / "m.onnx"
    export(build(), path)
    return path


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_static_input_keeps_its_size_and_its_name(exporter, tmp_path):
    path = tmp_path / "m.onnx"
    result = export(build(), path, exporter=exporter)
    assert result.report.passed
    shapes = {i.name: i.shape for i in Session(path, device="cpu").inputs}
    assert isinstance(shapes["x"][1], str) and shapes["x"][2] == 6  # x's sequence axis stays dynamic
    assert list(shapes) == ["x", "meta"] and shapes["meta"][1] == 3  # named after forward(x, meta), not "x1"
    assert result.card["inputs"][1]["seq_axis"] is None


def test_infer_reads_every_input_from_one_npz(model_path, tmp_path):
    data = _data()
    src, out = tmp_path / "in.npz", tmp_path / "out.npy"
    np.savez(src, **data)
    result = CliRunner().invoke(main, ["infer", str(model_path), "-i", str(src), "-o", str(out), "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    with torch.inference_mode():
        want = build()(torch.from_numpy(data["x"]), torch.from_numpy(data["meta"])).numpy()
    np.testing.assert_allclose(np.load(out), want, atol=1e-5)


@pytest.mark.parametrize("arrays, message", [
    ({"x": _data()["x"]}, "has no array named 'meta' (found: x); the model's inputs are x, meta"),
    ({"x": _data()["x"], "meta": _data()["meta"][:5]}, "the inputs need the same number of samples"),
])
def test_infer_names_what_is_missing_or_inconsistent(model_path, tmp_path, arrays, message):
    src, out = tmp_path / "in.npz", tmp_path / "out.npy"
    np.savez(src, **arrays)
    result = CliRunner().invoke(main, ["infer", str(model_path), "-i", str(src), "-o", str(out)])
    assert result.exit_code == 1 and message in result.stderr and not out.exists()


def test_check_and_quantize_with_an_eval_set(model_path, tmp_path):
    evalset = tmp_path / "eval.npz"
    data = _data(64, seed=3)
    with torch.inference_mode():
        labels = build()(torch.from_numpy(data["x"]), torch.from_numpy(data["meta"])).argmax(-1).numpy()
    np.savez(evalset, y=labels, **data)
    checked = CliRunner().invoke(main, ["check", str(model_path), "--against", REF, "--eval", str(evalset),
                                        "--lengths", "1,17"])
    assert checked.exit_code == 0, checked.output
    assert "accuracy PyTorch 1.0000 vs ONNX 1.0000" in checked.output
    quant = tmp_path / "m.int8.onnx"
    done = CliRunner().invoke(main, ["quantize", str(model_path), "-o", str(quant), "--eval", str(evalset)])
    assert done.exit_code == 0, done.output
    static = CliRunner().invoke(main, ["quantize", str(model_path), "-o", str(tmp_path / "s.onnx"), "--mode", "static",
                                       "--calibration", str(evalset), "--eval", str(evalset)])
    assert static.exit_code == 0, static.output  # calibration feeds both inputs, from the same samples
    from edgeseq.card import read_card

    assert read_card(tmp_path / "s.onnx")["precision"] == "int8-static"
    no_meta = tmp_path / "no-meta.npz"
    np.savez(no_meta, x=data["x"])
    refused = CliRunner().invoke(main, ["quantize", str(model_path), "-o", str(tmp_path / "t.onnx"), "--mode",
                                        "static", "--calibration", str(no_meta)])
    assert refused.exit_code == 1 and "has no array named 'meta'" in refused.stderr


def test_streaming_with_static_data_at_every_step(tmp_path):
    from edgeseq import StreamingSession
    from edgeseq.errors import InputError
    from edgeseq.export.stateful import export_with_extras
    from edgeseq.runtime.pool import StreamPool

    path = tmp_path / "stream.onnx"
    export_with_extras(build(), path, streaming=True)
    data = _data(3, seed=5)
    s, t = StreamingSession(path, device="cpu"), 0
    for c in (1, 4, 2, 3):
        y = s.step(data["x"][:, t : t + c], meta=data["meta"])
        t += c
    with torch.inference_mode():
        want = build()(torch.from_numpy(data["x"]), torch.from_numpy(data["meta"])).numpy()
    np.testing.assert_allclose(y, want, atol=1e-5)
    with pytest.raises(InputError, match=r"takes meta besides the sequence at every step \(missing meta\)"):
        s.step(data["x"][:, :1])
    pool = StreamPool(path, device="cpu")  # each stream brings its own static data when it joins
    for i in range(3):
        pool.join(i, meta=data["meta"][i])
    with pytest.raises(InputError, match=r"join\(\) needs this stream's meta"):
        pool.join("no-meta")
    for t in range(5):
        ys = pool.step({i: data["x"][i, t] for i in (0, 2)})  # a partial tick: streams 0 and 2
    pool.leave(0)
    for t in range(10):
        last = pool.step_all(data["x"][1:, t : t + 1]) if t < 5 else pool.step({1: data["x"][1, t]})
    ys.update({1: last[1] if isinstance(last, dict) else last[0]})
    with torch.inference_mode():
        for i, steps in ((0, 5), (1, 10)):
            want = build()(torch.from_numpy(data["x"][i : i + 1, :steps]), torch.from_numpy(data["meta"][i : i + 1]))
            np.testing.assert_allclose(ys[i], want.numpy()[0], atol=1e-5)


@pytest.mark.parametrize("streaming", [False, True])
def test_lengths_beside_static_data(tmp_path, streaming):
    """--lengths on forward(x, meta): infer reads 'lengths' from the .npz; each sample as if alone."""
    path = tmp_path / "l.onnx"
    export_with_extras(build(), path, lengths=True, streaming=streaming)  # checked padded vs alone while exporting
    data = _data(4, seed=3)
    lengths = np.array([10, 2, 7, 1])
    np.savez(tmp_path / "in.npz", **data, lengths=lengths)
    r = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "in.npz"), "-o", str(tmp_path / "y.npy")])
    assert r.exit_code == 0, r.output
    with torch.inference_mode():
        want = np.concatenate([build()(torch.from_numpy(data["x"][i : i + 1, :n]), torch.from_numpy(data["meta"][i : i + 1]))
                               .numpy() for i, n in enumerate(lengths)])
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, atol=1e-5)


def test_lengths_in_the_npz_of_a_file_without_a_lengths_input_are_refused(model_path, tmp_path):
    np.savez(tmp_path / "in.npz", **_data(4), lengths=np.array([10, 2, 7, 1]))
    r = CliRunner().invoke(main, ["infer", str(model_path), "-i", str(tmp_path / "in.npz"), "-o", str(tmp_path / "y.npy")])
    assert r.exit_code == 1 and "holds 'lengths', but this model has no lengths input" in r.stderr
    assert not (tmp_path / "y.npy").exists()
    np.savez(tmp_path / "extra.npz", **_data(4), labels=np.zeros(4))
    r = CliRunner().invoke(main, ["infer", str(model_path), "-i", str(tmp_path / "extra.npz"), "-o", str(tmp_path / "y.npy")])
    assert r.exit_code == 0 and "ignored array(s) labels" in r.stderr


class _NoExample(SequenceWithMeta):
    example_inputs = None  # a two-input forward and nothing that says what its inputs look like


def test_two_inputs_without_example_inputs_say_how_to_declare_them(tmp_path):
    from edgeseq.errors import ExportError

    with pytest.raises(ExportError, match=r"forward takes 2 inputs \(x, meta\).*example_inputs\(\)"):
        export(_NoExample(), tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="example_inputs"):
        export(_NoExample(), tmp_path / "m.onnx", input_shape=(1, 10, 6))
    assert not (tmp_path / "m.onnx").exists()


def test_infer_stream_takes_the_static_data_from_a_flag_or_a_json_line(tmp_path):
    from edgeseq.export.stateful import export_with_extras

    path = tmp_path / "stream.onnx"
    export_with_extras(build(), path, streaming=True)
    data = _data(2, seed=7)
    steps = "\n".join(",".join(map(str, row)) for row in data["x"][0, :4].tolist())
    meta = ",".join(map(str, data["meta"][0].tolist()))
    flag = CliRunner().invoke(main, ["infer", str(path), "--stream", "--static", f"meta={meta}"], input=steps + "\n")
    assert flag.exit_code == 0, flag.output
    with torch.inference_mode():
        want = build()(torch.from_numpy(data["x"][:1, :4]), torch.from_numpy(data["meta"][:1])).numpy()[0]
    np.testing.assert_allclose(json.loads(flag.stdout.splitlines()[-1]), want, atol=1e-5)
    other = json.dumps({"meta": data["meta"][1].tolist()})
    lined = CliRunner().invoke(main, ["infer", str(path), "--stream", "--reset-on-blank", "--static", f"meta={meta}"],
                               input=f"{steps}\n\n{other}\n{steps}\n")
    assert lined.exit_code == 0, lined.output
    with torch.inference_mode():
        again = build()(torch.from_numpy(data["x"][:1, :4]), torch.from_numpy(data["meta"][1:2])).numpy()[0]
    np.testing.assert_allclose(json.loads(lined.stdout.splitlines()[-1]), again, atol=1e-5)
    missing = CliRunner().invoke(main, ["infer", str(path), "--stream"], input=steps + "\n")
    assert missing.exit_code == 1 and "pass --static meta=v1,v2,..." in missing.stderr and not missing.stdout
    wrong = CliRunner().invoke(main, ["infer", str(path), "--stream", "--static", "meta=1,2"], input=steps + "\n")
    assert wrong.exit_code == 1 and "meta takes 3 value(s) per sequence" in wrong.stderr


# ---------------------------------------------------------------------- output names
class NamedOutputs(nn.Module):
    """Returns a dict, as multi-task heads and Hugging Face-style models do."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 16, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        out, (h, _) = self.lstm(x)
        return {"logits": self.fc(out[:, -1]), "features": out}


def test_outputs_take_the_names_of_a_returned_dict(tmp_path):
    torch.manual_seed(0)
    model = NamedOutputs().eval()
    export(model, tmp_path / "m.onnx")
    s = Session(tmp_path / "m.onnx", device="cpu")
    assert [o.name for o in s.outputs] == ["logits", "features"]
    x = np.random.default_rng(0).standard_normal((2, 9, 6)).astype(np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(x))
    got = s.run({"x": x})
    np.testing.assert_allclose(got["features"], want["features"].numpy(), atol=1e-5, rtol=1e-4)
    export_with_extras(model, tmp_path / "s.onnx", streaming=True)
    assert [o.name for o in Session(tmp_path / "s.onnx", device="cpu").data_outputs()] == ["logits", "features"]


def test_unusable_names_fall_back_to_numbered_outputs():
    from collections import namedtuple

    from edgeseq.export.parity import output_names

    t = torch.zeros(1)
    assert output_names(namedtuple("Out", "logits hidden")(t, t)) == ["logits", "hidden"]
    assert output_names({"x": t, "y": t}, taken=["x"]) == ["y0", "y1"]  # would clash with the input
    assert output_names({"a b": t, "c": t}) == ["y0", "y1"]
    assert output_names({"a": t, "b": (t, t)}) == ["y0", "y1", "y2"]  # nested: no name per tensor
    assert output_names((t, t)) == ["y0", "y1"] and output_names(t) == ["y"]


def test_a_lightning_style_example_input_array_is_the_example(tmp_path):
    """PyTorch Lightning modules declare ``self.example_input_array``; edgeseq takes it like example_inputs()."""

    class Tagged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(6, 16, batch_first=True)
            self.example_input_array = (torch.zeros(2, 30, 6), torch.zeros(2, 3))

        def forward(self, x, meta):
            return self.lstm(x)[0][:, -1] + meta.sum(-1, keepdim=True)

    torch.manual_seed(0)
    export(Tagged().eval(), tmp_path / "m.onnx")
    s = Session(tmp_path / "m.onnx", device="cpu")
    assert [list(i.shape) for i in s.inputs] == [["batch", "seq", 6], ["batch", 3]]


class LastOfEach(nn.Module):
    """forward(x, lengths, meta): each sample's last real step (out[range(b), lengths - 1]) plus static data."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(5, 16, batch_first=True)
        self.fc = nn.Linear(18, 3)

    def forward(self, x, lengths, meta):
        out, _ = self.gru(x)
        return self.fc(torch.cat([out[torch.arange(x.size(0)), lengths - 1], meta], -1))

    def example_inputs(self):
        return torch.randn(2, 10, 5), torch.tensor([10, 7]), torch.randn(2, 2)


def test_a_lengths_input_among_several_is_swept_with_lengths_that_fit(tmp_path):
    torch.manual_seed(0)
    result = export(LastOfEach().eval(), tmp_path / "m.onnx")
    # every parity case runs: lengths drawn in 1..steps (arbitrary ids made PyTorch fail, and those cases were skipped)
    assert result.report.summary()["cases"] == 8
    s = Session(tmp_path / "m.onnx", device="cpu")
    assert [i.name for i in s.inputs] == ["x", "lengths", "meta"]
    x, meta = np.zeros((2, 6, 5), np.float32), np.zeros((2, 2), np.float32)
    assert s.run({"x": x, "lengths": np.array([6, 1]), "meta": meta})["y"].shape == (2, 3)
    with pytest.raises(InputError, match=r"input 'lengths' holds each sample's length of 'x', 1 to its 6 steps; got 1..7"):
        s.run({"x": x, "lengths": np.array([7, 1]), "meta": meta})


def test_input_shape_on_a_two_input_model_points_to_example_inputs(tmp_path):
    from edgeseq.errors import ExportError

    with pytest.raises(ExportError, match=r"--input-shape describes one input: give the model an example_inputs\(\)"):
        export(build(), tmp_path / "m.onnx", input_shape=(1, 20, 6))


def test_a_nan_in_static_data_is_named_by_sample_only(model_path):
    data = _data(2)
    data["meta"][1, 2] = np.nan
    with pytest.raises(InputError, match=r"input 'meta' has NaN/Inf at index \(1, 2\) \(sample 1\);"):
        Session(model_path, device="cpu").run(data)


class _TimeFirstWithMeta(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 32)
        self.meta = nn.Linear(3, 32)
        self.head = nn.Linear(32, 1)

    def forward(self, x, meta):  # x: (seq, batch, 4), meta: (batch, 3)
        return self.head(self.lstm(x)[0][-1] + self.meta(meta))

    def example_inputs(self):
        return torch.zeros(100, 2, 4), torch.zeros(2, 3)


class _MetaAsLongAsTheExample(nn.Module):
    """meta has 3 features and the example 3 steps: meta is not a sequence for all that."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 32, batch_first=True)
        self.meta = nn.Linear(3, 32)
        self.head = nn.Linear(32, 1)

    def forward(self, x, meta):
        return self.head(self.gru(x)[0][:, -1] + self.meta(meta))

    def example_inputs(self):
        return torch.zeros(2, 3, 4), torch.zeros(2, 3)


class _EncDecSameLengths(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.GRU(4, 16, batch_first=True)
        self.dec = nn.GRU(1, 16, batch_first=True)
        self.out = nn.Linear(16, 1)

    def forward(self, x, tgt):
        _, h = self.enc(x)
        return self.out(self.dec(tgt, h)[0])

    def example_inputs(self):
        return torch.zeros(2, 24, 4), torch.zeros(2, 24, 1)


@pytest.mark.parametrize("model, shapes", [
    (_TimeFirstWithMeta, {"x": ["seq", "batch", 4], "meta": ["batch", 3]}),
    (_MetaAsLongAsTheExample, {"x": ["batch", "seq", 4], "meta": ["batch", 3]}),
    (_EncDecSameLengths, {"x": ["batch", "seq", 4], "tgt": ["batch", "tgt_seq", 1]}),
])
def test_each_input_gets_its_own_axes(tmp_path, model, shapes):
    torch.manual_seed(0)
    net = model().eval()
    path = tmp_path / "m.onnx"
    export(net, path)
    s = Session(path, device="cpu")
    assert {i.name: list(i.shape) for i in s.inputs} == shapes
    rng = np.random.default_rng(0)
    feed = {i.name: rng.standard_normal([{"batch": 7, "seq": 33, "tgt_seq": 5}.get(d, d) for d in i.shape])
            .astype(np.float32) for i in s.inputs}
    with torch.inference_mode():
        want = net(*[torch.from_numpy(feed[i.name]) for i in s.inputs]).numpy()
    np.testing.assert_allclose(s.run(feed)[s.outputs[0].name], want, atol=1e-5)
