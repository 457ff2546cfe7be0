"""Item 4 of issue 16, the command line: one line naming the problem and the fix; --debug."""

import shutil
import sys

import pytest
import torch

from astroclip import api
from astroclip.cli import main

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


def _one_line(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("astroclip ") and "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


def _embed(pairs_path, tmp_path, *extra):
    return main(["embed", str(pairs_path), "--out", str(tmp_path / "emb.h5"), "--no-progress",
                 *extra])


def test_unavailable_device(pairs_path, model_path, tmp_path, capsys):
    assert _embed(pairs_path, tmp_path, "--model", str(model_path), "--device", "cuda:99") == 1
    _one_line(capsys, "cuda:99", "not available", "--device auto")


def test_unknown_device_name(pairs_path, model_path, tmp_path, capsys):
    assert _embed(pairs_path, tmp_path, "--model", str(model_path), "--device", "gpu0") == 1
    _one_line(capsys, "gpu0", "'cpu'")


def test_corrupt_weights(pairs_path, model_path, tmp_path, capsys):
    broken = shutil.copytree(model_path, tmp_path / "broken")
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:len(data) // 2])
    assert _embed(pairs_path, tmp_path, "--model", str(broken)) == 1
    _one_line(capsys, str(broken / "model.safetensors"), "truncated or corrupt", "copy")


def test_broken_config(pairs_path, model_path, tmp_path, capsys):
    broken = shutil.copytree(model_path, tmp_path / "broken")
    (broken / "config.json").write_text('{"format": "astroclip-weights",\n "class": ')
    assert _embed(pairs_path, tmp_path, "--model", str(broken)) == 1
    _one_line(capsys, str(broken / "config.json"), "not valid JSON")


def test_unknown_model_name(pairs_path, tmp_path, capsys, private_model_dir):
    assert _embed(pairs_path, tmp_path, "--model", "no-such-model") == 1
    _one_line(capsys, "unknown model 'no-such-model'", "list_models()")


def test_missing_optional_package(pairs_path, model_path, tmp_path, capsys, monkeypatch):
    api.embed_catalog(pairs_path, out=tmp_path / "emb.h5", model=model_path, progress=False)
    monkeypatch.setitem(sys.modules, "faiss", None)  # "import faiss" now fails
    monkeypatch.delitem(sys.modules, "astroclip.search", raising=False)
    assert main(["search", "--embeddings", str(tmp_path / "emb.h5"), "--query-ids", "100"]) == 1
    _one_line(capsys, "faiss-cpu", 'pip install "astroclip[search]"')


def test_missing_input_file(tmp_path, model_path, capsys):
    assert _embed(tmp_path / "nothing.h5", tmp_path, "--model", str(model_path)) == 1
    _one_line(capsys, "nothing.h5", "does not exist")


def test_k_larger_than_the_catalogue(pairs_path, model_path, tmp_path, capsys):
    api.embed_catalog(pairs_path, out=tmp_path / "emb.h5", model=model_path, progress=False)
    assert main(["search", "--embeddings", str(tmp_path / "emb.h5"), "--query-ids", "100",
                 "--k", "500", "--no-progress"]) == 1
    _one_line(capsys, "k=500", "k <= 12")


def test_training_config_error(pairs_path, tmp_path, capsys):
    assert main(["align", "--data", str(pairs_path), "--out", str(tmp_path / "run"),
                 "--batch-size", "3", "--accumulate", "2", "--no-progress",
                 "--accelerator", "cpu"]) == 1
    _one_line(capsys, "batch_size=3", "multiple of 2")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_training_on_an_absent_gpu(pairs_path, tmp_path, capsys):
    assert main(["pretrain-spectra", "--data", str(pairs_path), "--out", str(tmp_path / "run"),
                 "--max-steps", "1", "--accelerator", "gpu", "--no-progress"]) == 1
    _one_line(capsys, "accelerator='gpu'", "--device cpu")


def test_training_on_zero_devices(pairs_path, tmp_path, capsys):
    assert main(["align", "--data", str(pairs_path), "--out", str(tmp_path / "run"),
                 "--max-steps", "1", "--accelerator", "cpu", "--devices", "0",
                 "--no-progress"]) == 1
    _one_line(capsys, "devices=0", "--devices")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(pairs_path, model_path, tmp_path, capsys, where):
    args = ["embed", str(pairs_path), "--out", str(tmp_path / "e.h5"), "--model",
            str(model_path), "--device", "cuda:99"]
    args = ["--debug"] + args if where == "before" else args + ["--debug"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "DeviceUnavailableError" in err


@pytest.mark.parametrize("bug", [KeyError, ZeroDivisionError, OSError])
def test_internal_bugs_are_not_hidden(pairs_path, model_path, tmp_path, monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug("internal")

    monkeypatch.setattr(api, "embed_catalog", broken)
    with pytest.raises(bug):
        _embed(pairs_path, tmp_path, "--model", str(model_path))


def test_the_hint_points_to_debug(pairs_path, model_path, tmp_path, capsys):
    assert _embed(pairs_path, tmp_path, "--model", str(model_path), "--device", "cuda:99") == 1
    assert "--debug" in _one_line(capsys)
