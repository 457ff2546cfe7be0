"""Item 1 of issue 16: never delete what astroclip did not create."""

import numpy as np
import pytest

import astroclip
from astroclip import api
from astroclip.exceptions import AstroclipWarning, DataFileError, InputError
from astroclip.models.factory import register_model


@pytest.mark.parametrize("name", ["", ".", "..", "../outside", "a/b", "/tmp/astroclip-abs",
                                  " spaced", ".hidden"])
def test_register_model_bad_name_touches_nothing(name, model_path, private_model_dir):
    keep = register_model(model_path, "keep")
    outside = private_model_dir.parent / "outside"
    outside.mkdir()
    (outside / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match="model name") as info:
        register_model(model_path, name, overwrite=True)
    assert "plain folder name" in str(info.value)
    assert (keep / "model.safetensors").is_file()
    assert (outside / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in private_model_dir.iterdir()) == ["keep"]


def test_register_model_refuses_to_replace_a_folder_it_did_not_write(model_path,
                                                                     private_model_dir):
    mine = private_model_dir / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    with pytest.raises(DataFileError, match="not a model folder") as info:
        register_model(model_path, "notes", overwrite=True)
    assert str(mine) in str(info.value) and "choose another name" in str(info.value)
    assert (mine / "todo.txt").read_text() == "keep me"


def test_register_model_onto_itself_keeps_the_model(model_path, private_model_dir):
    first = register_model(model_path, "self")
    again = register_model(first, "self", overwrite=True)
    assert again == first
    model = astroclip.load_model(again, device="cpu")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert [p.name for p in private_model_dir.iterdir()] == ["self"]


@pytest.mark.parametrize("resume", [True, False])
def test_embed_catalog_keeps_a_parts_folder_it_did_not_create(tmp_path, model_path, pairs_path,
                                                              resume):
    out = tmp_path / "emb.h5"
    parts = tmp_path / "emb.h5.parts"
    parts.mkdir()
    (parts / "results.csv").write_text("my own data")
    with pytest.raises(DataFileError, match="not made by astroclip") as info:
        api.embed_catalog(pairs_path, out=out, model=model_path, progress=False,
                          resume=resume)
    assert str(parts) in str(info.value) and "choose another out" in str(info.value)
    assert (parts / "results.csv").read_text() == "my own data"
    assert not out.exists()


def test_embed_catalog_cleanup_spares_files_added_to_its_parts(tmp_path, model_path, pairs_path,
                                                               monkeypatch):
    out = tmp_path / "emb.h5"
    calls = {"n": 0}
    real = api._run_batches

    def crash_second_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_run_batches", crash_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        api.embed_catalog(pairs_path, out=out, model=model_path, chunk_size=5, progress=False)
    monkeypatch.setattr(api, "_run_batches", real)
    parts = tmp_path / "emb.h5.parts"
    (parts / "note.txt").write_text("mine")
    with pytest.warns(AstroclipWarning, match="note.txt"):
        api.embed_catalog(pairs_path, out=out, model=model_path, chunk_size=5, progress=False)
    assert (parts / "note.txt").read_text() == "mine"
    assert sorted(p.name for p in parts.iterdir()) == ["note.txt"]
    ids, emb, _ = _read(out)
    assert np.array_equal(ids, np.arange(100, 112))


def _read(path):
    from astroclip.data.embeddings import read_embeddings
    return read_embeddings(path)
