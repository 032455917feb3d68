"""--weights accepts the checkpoint layouts training scripts write, and never loads a partial match."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from click.testing import CliRunner

from edgeseq.cli import main
from edgeseq.errors import ModelLoadError
from edgeseq.export.checkpoints import load_weights
from edgeseq.export.loading import load_model
from models.families import FAMILIES

REF = "models/families.py:gru"


def _trained(shift: float = 0.05) -> torch.nn.Module:
    model = FAMILIES["gru"]()
    with torch.no_grad():  # weights that differ from the factory's, so loading them is observable
        for p in model.parameters():
            p.add_(shift)
    return model


def _layouts(state: dict) -> dict[str, tuple[object, str]]:
    """name -> (what torch.save gets, what the log line says)."""
    optimizer = torch.optim.Adam(FAMILIES["gru"]().parameters()).state_dict()
    return {
        "plain": (state, ""),
        "training checkpoint": ({"epoch": 7, "model_state_dict": state, "optimizer_state_dict": optimizer,
                                 "loss": 0.25}, "using checkpoint['model_state_dict']"),
        "lightning-style": ({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 1},
                            "using checkpoint['state_dict'], keys without 'model.'"),
        "DataParallel": ({f"module.{k}": v for k, v in state.items()}, "keys without 'module.'"),
        "torch.compile": ({f"_orig_mod.{k}": v for k, v in state.items()}, "keys without '_orig_mod.'"),
        "compiled DataParallel": ({f"_orig_mod.module.{k}": v for k, v in state.items()},
                                  "keys without '_orig_mod.module.'"),
        "legacy format": ({"state": 1, "model": state}, "using checkpoint['model']"),
    }


@pytest.mark.parametrize("layout", list(_layouts({})))
def test_checkpoint_layouts_load_exactly(layout, tmp_path):
    trained = _trained()
    saved, said = _layouts(trained.state_dict())[layout]
    path = tmp_path / "ckpt.pt"
    torch.save(saved, path, _use_new_zipfile_serialization=layout != "legacy format")
    model, log = FAMILIES["gru"](), []
    load_weights(model, path, log.append)
    for k, v in trained.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert log == ([f"weights: {said}"] if said else [])


def test_wrong_architecture_names_keys_and_where_it_looked(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"epoch": 1, "model_state_dict": FAMILIES["stacked_lstm"]().state_dict()}, path)
    with pytest.raises(ModelLoadError) as info:
        load_weights(FAMILIES["gru"](), path)
    text = str(info.value)
    assert "(using checkpoint['model_state_dict'])" in text
    assert "the model's gru." in text and "not in the file" in text and "the file's lstm." in text
    assert "epoch" not in text  # compared against the nested state dict, not the wrapper


def test_wrong_sizes_are_named_with_both_shapes(tmp_path):
    path = tmp_path / "small.pt"
    state = {k: v[..., :1] if v.ndim == 2 else v for k, v in FAMILIES["gru"]().state_dict().items()}
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match=r"is \(\d+, 1\) in the file, \(\d+, \d+\) in the model"):
        load_weights(FAMILIES["gru"](), path)


def test_a_partial_match_is_refused_not_loaded(tmp_path):
    state = FAMILIES["gru"]().state_dict()
    state.pop(next(iter(state)))
    path = tmp_path / "partial.pt"
    torch.save({"module." + k: v for k, v in state.items()}, path)
    with pytest.raises(ModelLoadError, match="not in the file"):
        load_weights(FAMILIES["gru"](), path)


def test_cli_export_reports_how_it_found_the_weights(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "model_state_dict": _trained().state_dict()}, path)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", REF, "--weights", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "weights: using checkpoint['model_state_dict']" in result.stderr
    assert out.exists()


def test_large_outputs_get_a_rounding_hint_and_atol_lets_them_through(tmp_path):
    """Logits of ~50: float32 rounding alone misses atol 1e-5; the error says so, --atol accepts it."""
    path = tmp_path / "big.pt"
    torch.save(_trained(shift=1.0).state_dict(), path)
    out = tmp_path / "m.onnx"
    refused = CliRunner().invoke(main, ["export", REF, "--weights", str(path), "-o", str(out)])
    assert refused.exit_code == 1 and not out.exists()
    error = refused.stderr.strip().splitlines()[-1]
    assert "that is float32 rounding at this scale, not a wrong graph" in error
    assert error.count("float32 rounding") == 1 and "pass --atol 0.001" in error
    assert "frozen" not in error  # rounding is not mistaken for a baked-in length
    ok = CliRunner().invoke(main, ["export", REF, "--weights", str(path), "-o", str(out), "--atol", "1e-3"])
    assert ok.exit_code == 0, ok.output
    from edgeseq.card import read_card

    assert read_card(out)["parity"]["atol"] == 1e-3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_models_in_other_precisions_export_in_float32(dtype, tmp_path):
    model = FAMILIES["gru"]().to(dtype)
    out = tmp_path / "m.onnx"
    log: list[str] = []
    from edgeseq.export import export

    result = export(model, out, log=log.append)
    assert result.report.passed
    assert any(f"{str(dtype).replace('torch.', '')} weights converted to float32" in m for m in log)
    import numpy as np

    from edgeseq import Session

    assert np.dtype(Session(out, device="cpu").inputs[0].dtype) == np.float32


class _CellLoop(torch.nn.Module):
    """A Python loop over time with nn.LSTMCell: torch.jit.trace unrolls it at the traced length."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.LSTMCell(4, 8)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        h = torch.zeros(x.size(0), 8)
        c = torch.zeros(x.size(0), 8)
        for t in range(x.size(1)):
            h, c = self.cell(x[:, t], (h, c))
        return self.fc(h)


# torch.jit is deprecated in torch 2.13, but many deployed models are TorchScript files
TORCHSCRIPT_WARNINGS = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
                        pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]


@pytest.mark.parametrize("how", ["script", "trace"])
@TORCHSCRIPT_WARNINGS[0]
@TORCHSCRIPT_WARNINGS[1]
def test_torchscript_files_export_with_dynamic_lengths(how, tmp_path):
    model = FAMILIES["stacked_lstm"]()
    saved = tmp_path / "model.pt"
    example = torch.randn(2, 10, 28)
    torch.jit.save(torch.jit.script(model) if how == "script" else torch.jit.trace(model, example), saved)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", str(saved), "-o", str(out)])
    assert result.exit_code == 0, result.output
    checked = CliRunner().invoke(main, ["check", str(out), "--against", str(saved), "--lengths", "1,7,300"])
    assert checked.exit_code == 0, checked.output


@TORCHSCRIPT_WARNINGS[0]
@TORCHSCRIPT_WARNINGS[1]
def test_a_length_frozen_by_tracing_is_refused(tmp_path):
    torch.manual_seed(0)
    saved = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(_CellLoop().eval(), torch.randn(2, 10, 4)), saved)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", str(saved), "-o", str(out), "--input-shape", "2,10,4"])
    assert result.exit_code == 1 and not out.exists()
    assert "frozen in PyTorch itself" in result.stderr and "torch.jit.script" in result.stderr


class _MaxOverTime(torch.nn.Module):
    """Max-pooling over time: most single late steps leave the output unchanged, and that is correct."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.GRU(4, 16, num_layers=2, batch_first=True)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out.max(dim=1).values)


def test_max_pooling_over_time_is_not_mistaken_for_a_frozen_length(tmp_path):
    from edgeseq.export.signature import check_not_frozen, infer_signature

    torch.manual_seed(7)  # with these weights the last step of a 45-step input is no channel's maximum
    model = _MaxOverTime().eval()
    spec, _ = infer_signature(model, input_shape=(1, 20, 4))

    def last_step_matters(length: int) -> bool:
        x = torch.from_numpy(spec.random(2, length, seed=11)[0])
        changed = x.clone()
        changed[:, -1] += 1.0
        with torch.inference_mode():
            return not torch.equal(model(x), model(changed))

    assert last_step_matters(20) and not last_step_matters(45)  # what fooled the one-step check (1 model in 3)
    check_not_frozen(model, spec)


def test_a_weights_file_given_as_the_model_says_how_to_pass_it(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(FAMILIES["gru"]().state_dict(), path)
    result = CliRunner().invoke(main, ["export", str(path), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert "a checkpoint of weights, not a model; give the model as path/to/file.py:factory --weights weights.pt" \
        in result.stderr


# ------------------------------------------------------------------ pickled models and checkpoints (--allow-pickle)
@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy-format"])
def test_a_whole_pickled_model_is_refused_naming_its_class_then_exported_with_allow_pickle(tmp_path, zipped):
    saved = tmp_path / "whole.pt"
    # torch.save(model): the class is models.families.GRUClassifier; legacy: PyTorch < 1.6's format, still writable
    torch.save(FAMILIES["gru"](), saved, _use_new_zipfile_serialization=zipped)
    out = tmp_path / "m.onnx"
    refused = CliRunner().invoke(main, ["export", str(saved), "-o", str(out)])
    assert refused.exit_code == 1 and not out.exists()
    assert "models.families.GRUClassifier" in refused.stderr and "--allow-pickle" in refused.stderr
    assert "Traceback" not in refused.output
    exported = CliRunner().invoke(main, ["export", str(saved), "-o", str(out), "--allow-pickle"])
    assert exported.exit_code == 0, exported.output
    checked = CliRunner().invoke(main, ["check", str(out), "--against", str(saved), "--allow-pickle", "--lengths", "1,30"])
    assert checked.exit_code == 0, checked.output


def test_a_checkpoint_with_python_objects_names_them_and_loads_with_allow_pickle(tmp_path):
    import argparse

    trained = _trained()
    path = tmp_path / "ckpt.pt"
    torch.save({"args": argparse.Namespace(hidden=48), "epoch": 3, "model_state_dict": trained.state_dict()}, path)
    with pytest.raises(ModelLoadError, match=r"argparse\.Namespace.*--allow-pickle"):
        load_weights(FAMILIES["gru"](), path)
    model = FAMILIES["gru"]()
    load_weights(model, path, allow_pickle=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))


def test_a_model_pickled_from_a_training_script_loads_through_its_class(tmp_path, monkeypatch):
    """torch.save(model) in train.py records the class as __main__.Net; given train.py:Net, it is found there."""
    import sys

    net = type("Net", (FAMILIES["gru"]().__class__,), {"__module__": "__main__"})
    monkeypatch.setattr(sys.modules["__main__"], "Net", net, raising=False)
    trained = net()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.05)
    path = tmp_path / "model.pt"
    torch.save(trained, path)
    monkeypatch.delattr(sys.modules["__main__"], "Net")  # a later process: __main__ is edgeseq, not train.py
    with pytest.raises(ModelLoadError, match=r"class Net was defined in the script that saved it.*train\.py:Net"):
        load_model(str(path), allow_pickle=True)
    script = tmp_path / "train.py"
    script.write_text("from models.families import GRUClassifier\n\nclass Net(GRUClassifier):\n    pass\n")
    model = load_model(f"{script}:Net", weights=path, allow_pickle=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))


def test_a_class_that_needs_arguments_saved_whole_from_a_script_is_used_as_saved(tmp_path, monkeypatch):
    """train.py's Net(features, hidden), torch.save(model) as __main__.Net: train.py:Net --weights it --allow-pickle."""
    import sys

    script = tmp_path / "train.py"
    script.write_text("import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, features, hidden):\n"
                      "        super().__init__()\n        self.gru = nn.GRU(features, hidden, batch_first=True)\n"
                      "        self.fc = nn.Linear(hidden, 3)\n\n    def forward(self, x):\n"
                      "        return self.fc(self.gru(x)[0][:, -1])\n")
    spec = importlib.util.spec_from_file_location("__main__", script)
    main_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main_module)
    monkeypatch.setattr(sys.modules["__main__"], "Net", main_module.Net, raising=False)
    trained = main_module.Net(5, 7)
    path = tmp_path / "model.pt"
    torch.save({"epoch": 2, "model": trained}, path)
    monkeypatch.delattr(sys.modules["__main__"], "Net")
    with pytest.raises(ModelLoadError, match=r"Net\(features=\.\.\., hidden=\.\.\.\)', or, if you trust model\.pt, "
                       r"add --allow-pickle"):
        load_model(f"{script}:Net", weights=path)
    log: list[str] = []
    model = load_model(f"{script}:Net", weights=path, allow_pickle=True, log=log.append)
    assert type(model).__name__ == "Net" and not model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    assert log == ["model: the Net pickled whole in model.pt, as saved"]


# ---------------------------------------------------------------------- torch.export programs (.pt2)
class _ConvHead(torch.nn.Module):
    """No recurrent layer: torch.export can keep its batch and length dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.conv(x.transpose(1, 2)).mean(-1))


def test_a_torch_export_program_with_dynamic_shapes_exports_and_checks(tmp_path):
    from torch.export import Dim

    torch.manual_seed(0)
    program = torch.export.export(_ConvHead().eval(), (torch.randn(2, 10, 4),),
                                  dynamic_shapes=({0: Dim("batch"), 1: Dim("seq")},))
    saved, out = tmp_path / "conv.pt2", tmp_path / "m.onnx"
    torch.export.save(program, saved)
    result = CliRunner().invoke(main, ["export", str(saved), "-o", str(out)])
    assert result.exit_code == 0, result.output
    checked = CliRunner().invoke(main, ["check", str(out), "--against", str(saved), "--lengths", "1,37"])
    assert checked.exit_code == 0, checked.output


@pytest.mark.filterwarnings("ignore:The tensor attributes self.gru._flat_weights")  # torch.export's own, on GRUs
def test_a_torch_export_program_of_a_recurrent_model_is_refused_with_the_way_that_works(tmp_path):
    program = torch.export.export(FAMILIES["gru"](), (torch.randn(2, 10, 12),))  # unrolled: static shape
    saved = tmp_path / "gru.pt2"
    torch.export.save(program, saved)
    result = CliRunner().invoke(main, ["export", str(saved), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "fixed input shape (2, 10, 12)" in result.stderr and "path/to/file.py:factory --weights" in result.stderr


# ---------------------------------------------------------------------- constructor arguments in the REF
def test_a_class_that_needs_its_sizes_is_named_with_them(tmp_path):
    from edgeseq.export.loading import split_call

    assert split_call("net.py:Net(6, hidden=64, dims=[1, 2])") == ("net.py:Net", [6], {"hidden": 64, "dims": [1, 2]})
    assert split_call("pkg.mod:build") == ("pkg.mod:build", [], {})
    with pytest.raises(ModelLoadError, match="must be literals"):
        split_call("net.py:Net(6, size)")
    net = tmp_path / "net.py"
    net.write_text("import torch\n\nclass Net(torch.nn.Module):\n"
                   "    def __init__(self, features, hidden, classes=3):\n        super().__init__()\n"
                   "        self.gru = torch.nn.GRU(features, hidden, batch_first=True)\n"
                   "        self.fc = torch.nn.Linear(hidden, classes)\n\n"
                   "    def forward(self, x):\n        return self.fc(self.gru(x)[0][:, -1])\n")
    out = tmp_path / "m.onnx"
    missing = CliRunner().invoke(main, ["export", f"{net}:Net", "-o", str(out)])
    assert missing.exit_code == 1 and f"'{net}:Net(features=..., hidden=...)'" in missing.stderr
    given = CliRunner().invoke(main, ["export", f"{net}:Net(4, hidden=8)", "-o", str(out)])
    assert given.exit_code == 0, given.output
    from edgeseq.card import read_card

    assert read_card(out)["features"] == 4


# ---------------------------------------------------------------------- wrappers and PyTorch-quantized models
WRAPPED = ("import torch\nfrom models.families import FAMILIES\n\n"
           "def data_parallel():\n    return torch.nn.DataParallel(FAMILIES['gru']())\n\n"
           "def compiled():\n    return torch.compile(FAMILIES['gru']())\n\n"
           "def quantized():\n    return torch.ao.quantization.quantize_dynamic(FAMILIES['gru']().eval(), {torch.nn.GRU})\n")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's wrapper warns about torch.jit
@pytest.mark.parametrize("factory, wrapper", [("data_parallel", "DataParallel"), ("compiled", "torch.compile")])
def test_data_parallel_and_compiled_models_export_the_module_inside(tmp_path, factory, wrapper):
    (tmp_path / "wrapped.py").write_text(WRAPPED)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", f"{tmp_path / 'wrapped.py'}:{factory}", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"exporting the module inside {wrapper}" in result.stderr


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")  # torch.ao deprecating itself
def test_a_model_quantized_in_pytorch_is_refused_with_the_float_route(tmp_path):
    (tmp_path / "wrapped.py").write_text(WRAPPED)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", f"{tmp_path / 'wrapped.py'}:quantized", "-o", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "already quantized in PyTorch" in result.stderr and "edgeseq quantize" in result.stderr
    assert not out.exists()


@TORCHSCRIPT_WARNINGS[0]
@TORCHSCRIPT_WARNINGS[1]
def test_weights_files_that_are_not_weights_say_what_they_are(tmp_path):
    model = FAMILIES["gru"]()
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty.pt: the file is empty"):
        load_weights(model, tmp_path / "empty.pt")
    torch.jit.script(model).save(str(tmp_path / "scripted.pt"))
    with pytest.raises(ModelLoadError, match="is a TorchScript model, not weights; export it directly"):
        load_weights(model, tmp_path / "scripted.pt")


def test_model_files_that_parse_argv_exit_or_raise_at_load(tmp_path):
    net = "import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n" \
          "        self.rnn = torch.nn.GRU(4, 8, batch_first=True)\n    def forward(self, x):\n" \
          "        return self.rnn(x)[0][:, -1]\n"
    (tmp_path / "argv.py").write_text("import argparse\nargs = argparse.ArgumentParser().parse_args()\n" + net)
    assert isinstance(load_model(f"{tmp_path}/argv.py:Net"), torch.nn.Module)  # it sees no arguments of ours
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(0)\n" + net)
    with pytest.raises(ModelLoadError, match=r"exited while being imported \(sys.exit\(0\)"):
        load_model(f"{tmp_path}/exits.py:Net")
    (tmp_path / "raises.py").write_text(net + "def build():\n    raise ValueError('hidden must be > 0')\n")
    with pytest.raises(ModelLoadError, match="the factory raised ValueError: hidden must be > 0"):
        load_model(f"{tmp_path}/raises.py:build")


@TORCHSCRIPT_WARNINGS[0]
@TORCHSCRIPT_WARNINGS[1]
def test_torchscript_files_traced_from_token_or_fixed_batch_models(tmp_path):
    class Tokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(30, 4)
            self.rnn = torch.nn.GRU(4, 8, batch_first=True)

        def forward(self, x):
            return self.rnn(self.emb(x))[0][:, -1]

    class FixedBatch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.LSTM(4, 8, batch_first=True)

        def forward(self, x):
            return self.rnn(x, (torch.zeros(1, 2, 8), torch.zeros(1, 2, 8)))[0][:, -1]

    from edgeseq.errors import UnsupportedModelError
    from edgeseq.export import export

    torch.jit.trace(Tokens().eval(), torch.randint(0, 30, (2, 6))).save(str(tmp_path / "tok.pt"))
    assert export(str(tmp_path / "tok.pt"), tmp_path / "tok.onnx").card["inputs"][0]["vocab_size"] == 30
    torch.jit.trace(FixedBatch().eval(), torch.randn(2, 6, 4)).save(str(tmp_path / "fixed.pt"))
    # running it at batch 3 would crash the process inside PyTorch: refused from its graph, before any run
    with pytest.raises(UnsupportedModelError, match="runs at batch 2 only: its TorchScript graph builds"):
        load_model(str(tmp_path / "fixed.pt"))


def test_a_pickled_dataparallel_model_is_unwrapped(tmp_path):
    torch.save(torch.nn.DataParallel(FAMILIES["gru"]()), tmp_path / "dp.pt")
    model = load_model(str(tmp_path / "dp.pt"), allow_pickle=True)
    assert not isinstance(model, torch.nn.DataParallel)
