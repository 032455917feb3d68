"""Model zoo: committed checkpoints load, export to ONNX, meet their metric in ONNX Runtime and
agree with PyTorch on the committed eval sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from models.common import checkpoint_path  # noqa: E402
from models.zoo import (  # noqa: E402
    ZOO,
    agreement,
    export_onnx,
    load_eval_set,
    onnx_outputs,
    onnx_session,
    score,
    torch_outputs,
)

pytestmark = [
    # noise from the TorchScript-based exporter; the dynamic batch/sequence test covers its concern
    pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size other than 1"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]

IDS = [r.name for r in ZOO]
# samples of the committed eval set used per test: a fixed subsample of the big ones, all of the
# small ones (reviews: all 2551)
LIMIT = {"fashion_lstm": 300}


@pytest.fixture(scope="module", params=ZOO, ids=IDS)
def recipe(request):
    return request.param


@pytest.fixture(scope="module")
def model(recipe):
    return recipe.build(pretrained=True)


def test_checkpoint_is_plain_small_state_dict(recipe):
    path = checkpoint_path(recipe.name)
    assert path.is_file()
    assert path.stat().st_size < 4 * 1024 * 1024
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())


def test_build_eval_mode_and_example_inputs(recipe, model):
    assert isinstance(model, torch.nn.Module)
    assert not model.training
    example = model.example_inputs()
    assert isinstance(example, tuple) and example[0].shape[0] == 2
    with torch.no_grad():
        y = model(*example)
    if recipe.metric == "accuracy":
        assert y.ndim == 2 and y.shape[0] == 2
    else:
        assert y.shape == (2, 1)
    assert torch.isfinite(y).all()


def test_untrained_build_has_same_structure(recipe):
    fresh = recipe.build(pretrained=False)
    trained = recipe.build(pretrained=True)
    assert fresh.state_dict().keys() == trained.state_dict().keys()


def test_eval_set_layout(recipe, model):
    data = load_eval_set(recipe)
    x, y = data["x"], data["y"]
    example = model.example_inputs()[0]
    assert x.dtype == example.numpy().dtype
    assert x.ndim == example.ndim and x.shape[2:] == tuple(example.shape[2:])
    assert len(x) == len(y)
    assert y.dtype == (np.int64 if recipe.metric == "accuracy" else np.float32)
    if recipe.variable_length:
        lengths = data["lengths"]
        assert lengths.dtype == np.int64 and lengths.min() >= 1 and lengths.max() == x.shape[1]
        assert len(np.unique(lengths)) > 1
    if recipe.metric == "mae":
        assert "naive" in data


def test_onnx_metric_and_parity(recipe, model, tmp_path):
    data = load_eval_set(recipe, limit=LIMIT.get(recipe.name))
    lengths = data.get("lengths")
    out_t = torch_outputs(model, data["x"], lengths)
    # variable-length recipes get a lengths input: padded batches run as they are
    path = export_onnx(model, tmp_path / f"{recipe.name}.onnx", lengths=recipe.variable_length)
    out_o = onnx_outputs(onnx_session(path), data["x"], lengths)
    assert out_o.shape == out_t.shape
    m_t, m_o = score(recipe, out_t, data), score(recipe, out_o, data)
    if recipe.minimum is not None:
        assert m_t >= recipe.minimum, f"PyTorch {recipe.metric} {m_t:.4f} < {recipe.minimum}"
        assert m_o >= recipe.minimum, f"ONNX {recipe.metric} {m_o:.4f} < {recipe.minimum}"
    else:
        naive = float(np.abs(data["naive"] - data["y"]).mean())
        # honest regression check: in dollars, and not far off the naive last-value forecast
        assert m_o < 1.5 * naive
    assert agreement(recipe, out_t, out_o) >= 0.999
    np.testing.assert_allclose(out_o, out_t, rtol=1e-5, atol=1e-4)


def test_onnx_dynamic_batch_and_sequence(recipe, model, tmp_path):
    path = export_onnx(model, tmp_path / f"{recipe.name}.onnx")
    session = onnx_session(path)
    x = model.example_inputs()[0]
    # other batch size, longer and shorter sequences than the example
    for batch, seq in [(1, x.shape[1]), (3, x.shape[1] + 3), (5, max(1, x.shape[1] // 2))]:
        reps = [batch // 2 + 1, seq // x.shape[1] + 1] + [1] * (x.ndim - 2)
        xi = x.repeat(*reps)[:batch, :seq].contiguous()
        with torch.no_grad():
            expected = model(xi).numpy()
        got = session.run({"x": xi.numpy()})["y"]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [r.name for r in ZOO if r.variable_length])
def test_variable_length_padding_is_ignored_with_lengths(name):
    recipe = next(r for r in ZOO if r.name == name)
    model = recipe.build()
    data = load_eval_set(recipe, limit=16)
    x, lengths = torch.from_numpy(data["x"]), torch.from_numpy(data["lengths"])
    with torch.no_grad():
        batched = model(x, lengths=lengths)
        one_by_one = torch.cat([model(x[i: i + 1, : lengths[i]]) for i in range(len(x))])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-5)


def test_msft_factories_share_architecture():
    from models.msft_cnnlstm import build, build_per_layer

    a, b = build(), build_per_layer()
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    # the same weights give the same forecast whichever TimeDistributed style holds them
    b2 = build_per_layer(pretrained=False)
    keys = b2.state_dict().keys()
    b2.load_state_dict(dict(zip(keys, a.state_dict().values())))
    x = a.example_inputs()[0]
    with torch.no_grad():
        torch.testing.assert_close(a(x), b2(x))
        y = a(x)
    # raw dollars in, raw dollars out: the forecast is near the last observed price
    last = x[:, -1, -1, :]
    assert torch.all((y / last - 1).abs() < 0.2)


def test_reviews_encode_contract():
    from models.reviews_bilstm import MAX_LEN, VOCAB_PATH, encode, load_vocab, tokenize

    vocab = load_vocab()
    with open(VOCAB_PATH, encoding="utf-8") as f:
        assert len(json.load(f)["tokens"]) == len(vocab)
    assert min(vocab.values()) == 2
    ids, lengths = encode(["A gripping, funny film!", "", "zzqxv " * 200])
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    assert ids.shape == (3, MAX_LEN)
    assert lengths.tolist() == [len(tokenize("A gripping, funny film!")), 1, MAX_LEN]
    assert ids[0, lengths[0]:].sum() == 0 and (ids[0, : lengths[0]] >= 2).all()
    assert ids[1, 0] == 1 and ids[2].tolist() == [1] * MAX_LEN
    from models.reviews_bilstm import build

    assert build().embed.num_embeddings == len(vocab) + 2


def test_recipes_import_only_torch_and_numpy():
    import ast
    from pathlib import Path

    allowed = {"torch", "numpy", "models", "__future__", "json", "re", "functools", "pathlib",
               "math", "typing", "dataclasses"}
    root = Path(__file__).resolve().parents[2] / "models"
    for name in ["common", "fashion_lstm", "vowels_bigru", "motion_lstm", "msft_cnnlstm",
                 "reviews_bilstm"]:
        tree = ast.parse((root / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                assert mod.split(".")[0] in allowed, f"{name}.py imports {mod}"
