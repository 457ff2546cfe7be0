import json

import pytest
import torch

from astroclip import registry
from astroclip.models.spectrum import SpectrumEncoder
from astroclip.models.weights import load_model as load_folder
from astroclip.registry import ReleasedModel


@pytest.fixture
def model_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROCLIP_MODEL_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def _fake_specformer_ckpt(path):
    """A checkpoint with the released specformer.ckpt layout, tiny sizes."""
    enc = SpectrumEncoder(embed_dim=16, num_layers=1, num_heads=2)
    torch.save({"state_dict": enc.state_dict(),
                "hyper_parameters": {"num_heads": 2, "slice_section_length": 20,
                                     "slice_overlap": 10}}, path)
    return enc


def _entry(tmp_path, monkeypatch, *, sha256=None, exists=True):
    ckpt = tmp_path / "specformer.ckpt"
    enc = _fake_specformer_ckpt(ckpt) if exists else None
    entry = ReleasedModel(name="tiny-released", repo_id="x/y", filename="specformer.ckpt",
                          part="specformer", description="test", sha256=sha256,
                          url=ckpt.as_uri())
    monkeypatch.setitem(registry.RELEASED_MODELS, "tiny-released", entry)
    return entry, enc, ckpt


def test_released_model_fetched_verified_converted_once(tmp_path, monkeypatch, model_home):
    entry, enc, ckpt = _entry(tmp_path, monkeypatch)
    path = registry.resolve_model_path("tiny-released")
    assert path == model_home / "tiny-released"
    source = json.loads((path / "source.json").read_text())
    assert source["checkpoint_sha256"] == registry.sha256_file(ckpt)
    model = load_folder(path)
    for name, tensor in enc.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    # converted once: a second resolve does not convert again
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert registry.resolve_model_path("tiny-released") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    table = registry.list_models()
    row = table[table["name"] == "tiny-released"][0]
    assert row["available"] and row["source"] == "released"


def test_checksum_mismatch_refused(tmp_path, monkeypatch, model_home):
    _entry(tmp_path, monkeypatch, sha256="0" * 64)
    with pytest.raises(ValueError, match="checksum mismatch"):
        registry.resolve_model_path("tiny-released")
    assert not (model_home / "tiny-released" / "config.json").exists()


def test_offline_error_says_what_to_do(tmp_path, monkeypatch, model_home):
    entry, _, _ = _entry(tmp_path, monkeypatch, exists=False)
    with pytest.raises(OSError, match="convert-weights") as info:
        registry.resolve_model_path("tiny-released")
    assert entry.download_url in str(info.value)


def test_unknown_name_lists_known(model_home):
    with pytest.raises(ValueError, match="astroclip-released"):
        registry.resolve_model_path("no-such-model")


def test_register_model_and_list(tmp_path, model_home):
    from astroclip.models.weights import save_model
    enc = SpectrumEncoder(embed_dim=16, num_layers=1, num_heads=2)
    save_model(enc, tmp_path / "run")
    dst = registry.register_model(tmp_path / "run", "mine")
    assert registry.resolve_model_path("mine") == dst
    with pytest.raises(FileExistsError):
        registry.register_model(tmp_path / "run", "mine")
    with pytest.raises(ValueError, match="released"):
        registry.register_model(tmp_path / "run", "astroclip-released")
    table = registry.list_models()
    assert "mine" in list(table["name"])
