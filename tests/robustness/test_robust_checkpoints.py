"""Untrusted checkpoints: a pickle payload in --weights is refused and never executed."""

from __future__ import annotations

import pathlib
import pickle

import pytest
from click.testing import CliRunner

from edgeseq.cli import main
from edgeseq.errors import ModelLoadError

REF = "models/families.py:gru"
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


class Payload:
    """Unpickling this object creates ``marker`` (stands in for arbitrary code)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _torch_checkpoint(folder: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    import torch

    from models.families import FAMILIES

    state = dict(FAMILIES["gru"]().state_dict())
    state["evil"] = Payload(marker)  # a real state dict with one poisoned entry
    path = folder / "evil.pt"
    torch.save(state, path)
    return path


def _plain_pickle(folder: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    path = folder / "evil.pkl"
    path.write_bytes(pickle.dumps({"weight": Payload(marker)}))
    return path


@pytest.fixture(params=[_torch_checkpoint, _plain_pickle], ids=["torch.save", "pickle"])
def payload(request, tmp_path):
    marker = tmp_path / "PWNED"
    path = request.param(tmp_path, marker)
    # Sanity: the payload really works when unpickled without protection.
    if path.suffix == ".pkl":
        pickle.loads(path.read_bytes())
        assert marker.exists()
        marker.unlink()
    return path, marker


def test_load_weights_refuses_pickle_payload(payload):
    from edgeseq.export.checkpoints import load_weights
    from models.families import FAMILIES

    path, marker = payload
    with pytest.raises(ModelLoadError, match=r"refused to load: the file holds pickled Python objects .*pathlib") as err:
        load_weights(FAMILIES["gru"](), path)
    assert "--allow-pickle" in str(err.value)  # naming the class is read from opcodes, never by unpickling
    assert not marker.exists()


def test_cli_export_refuses_pickle_payload(payload, tmp_path):
    path, marker = payload
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", REF, "--weights", str(path), "-o", str(out)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "refused to load" in lines[0], result.stderr
    assert "torch.save(model.state_dict(), path)" in lines[0]  # says how to fix it
    assert not marker.exists() and not out.exists()


def test_plain_state_dict_still_loads(tmp_path):
    import torch

    from edgeseq.export.loading import load_model
    from models.families import FAMILIES

    path = tmp_path / "ok.pt"
    torch.save(FAMILIES["gru"]().state_dict(), path)
    model = load_model(REF, path)
    assert set(model.state_dict()) == set(torch.load(path, weights_only=True))


def test_help_says_a_py_reference_runs_code():
    for command in ("export", "check"):
        result = CliRunner().invoke(main, [command, "--help"])
        text = " ".join(result.output.split())
        assert result.exit_code == 0
        assert "loading a .py file runs its code" in text.lower(), (command, text)
        assert "weights_only=True" in text
