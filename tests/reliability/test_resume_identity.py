"""Item 2 of issue 16: never resume into output made by another model, input or options."""

import os
import warnings

import numpy as np
import pytest
import torch

from astroclip import api
from astroclip.cli import main
from astroclip.data.embeddings import read_embeddings
from astroclip.exceptions import ResumeMismatchError
from astroclip.inputs import grid

from ..test_api import fake_spectra
from .conftest import desi_coadd, write_pairs

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]


def _interrupt_after(monkeypatch, n_calls):
    """Make embed_catalog die (like a kill) after ``n_calls`` batches; returns an undo."""
    real = api._run_batches
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_run_batches", dying)
    return lambda: monkeypatch.setattr(api, "_run_batches", real)


def _interrupted(monkeypatch, source, out, model, **kwargs):
    undo = _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        api.embed_catalog(source, out=out, model=model, progress=False, **kwargs)
    undo()
    assert any(p.name.startswith("chunk_") for p in (out.parent / (out.name + ".parts")).iterdir())


def _assert_refused(exc, *words):
    text = str(exc.value)
    assert "resume=False" in text and "--restart" in text
    for w in words:
        assert w in text


def test_catalog_refuses_another_file_at_the_same_path(tmp_path, model_path, monkeypatch):
    src = write_pairs(tmp_path / "cat.h5", seed=1)
    out = tmp_path / "emb.h5"
    _interrupted(monkeypatch, src, out, model_path, modality="spectrum", chunk_size=4)
    os.remove(src)
    write_pairs(src, seed=2)  # another catalogue, same path, same row count
    with pytest.raises(ResumeMismatchError, match="input") as info:
        api.embed_catalog(src, out=out, model=model_path, modality="spectrum", chunk_size=4,
                          progress=False)
    _assert_refused(info, str(src))


def test_catalog_refuses_changed_in_memory_input(tmp_path, model_path, monkeypatch, rng):
    flux = fake_spectra(6, rng) * grid.FLUX_UNIT
    out = tmp_path / "emb.fits"
    kw = dict(modality="spectrum", chunk_size=2, wavelength=grid.wavelength_grid())
    _interrupted(monkeypatch, flux, out, model_path, **kw)
    changed = flux.copy()
    changed[5] *= 2  # a row of a chunk not yet embedded
    with pytest.raises(ResumeMismatchError, match="in-memory input") as info:
        api.embed_catalog(changed, out=out, model=model_path, progress=False, **kw)
    _assert_refused(info)


def test_catalog_refuses_another_model_when_the_manifest_is_lost(tmp_path, model_path,
                                                                 other_model_path, pairs_path,
                                                                 monkeypatch):
    out = tmp_path / "emb.h5"
    _interrupted(monkeypatch, pairs_path, out, model_path, modality="spectrum", chunk_size=4)
    os.remove(tmp_path / "emb.h5.parts" / "manifest.json")
    with pytest.raises(ResumeMismatchError, match="chunk_0000000.npz") as info:
        api.embed_catalog(pairs_path, out=out, model=other_model_path, modality="spectrum",
                          chunk_size=4, progress=False)
    _assert_refused(info, "model")


def test_catalog_refuses_another_model(tmp_path, model_path, other_model_path, pairs_path,
                                       monkeypatch):
    out = tmp_path / "emb.h5"
    _interrupted(monkeypatch, pairs_path, out, model_path, modality="spectrum", chunk_size=4)
    with pytest.raises(ResumeMismatchError, match="weights") as info:
        api.embed_catalog(pairs_path, out=out, model=other_model_path, modality="spectrum",
                          chunk_size=4, progress=False)
    _assert_refused(info)


def test_catalog_refuses_other_input_options(tmp_path, model_path, monkeypatch):
    files = [desi_coadd(), desi_coadd("coadd-5-169-thru20210419.fits")]
    out = tmp_path / "emb.h5"
    _interrupted(monkeypatch, files, out, model_path, modality="spectrum")
    with pytest.raises(ResumeMismatchError, match="min_coverage") as info:
        api.embed_catalog(files, out=out, model=model_path, modality="spectrum",
                          min_coverage=0.9, progress=False)
    _assert_refused(info)


def test_catalog_resumes_a_moved_but_identical_input(tmp_path, model_path, monkeypatch):
    src = write_pairs(tmp_path / "cat.h5", seed=3)
    out = tmp_path / "emb.h5"
    reference = api.embed_catalog(src, out=tmp_path / "ref.h5", model=model_path,
                                  modality="spectrum", chunk_size=4, progress=False)
    _interrupted(monkeypatch, src, out, model_path, modality="spectrum", chunk_size=4)
    moved = tmp_path / "moved.h5"
    os.rename(src, moved)
    api.embed_catalog(moved, out=out, model=model_path, modality="spectrum", chunk_size=4,
                      progress=False)
    ids, emb, _ = read_embeddings(out)
    ref_ids, ref_emb, _ = read_embeddings(reference)
    assert np.array_equal(ids, ref_ids)
    assert np.array_equal(emb["spectrum"], ref_emb["spectrum"])


# ------------------------------------------------------------------ training runs
TINY_SPEC = dict(embed_dim=16, num_layers=1, num_heads=2)
RUN = dict(max_steps=1, batch_size=3, lr=1e-3, seed=0, progress=False, accelerator="cpu",
           model_config=TINY_SPEC, val_every=None)


@pytest.fixture(scope="module")
def spectra_run(tmp_path_factory):
    from astroclip.training.spectra import pretrain_spectra

    root = tmp_path_factory.mktemp("spectra-run")
    data = write_pairs(root / "train.h5", n=8, seed=4, labels=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrain_spectra(data, out=root / "run", **RUN)
    return root


@pytest.mark.parametrize("change", ["data", "lr", "batch_size", "seed"])
def test_pretrain_spectra_refuses_to_resume_with_other_settings(spectra_run, change):
    from astroclip.training.spectra import pretrain_spectra

    data = spectra_run / "train.h5"
    kwargs = dict(RUN)
    if change == "data":
        data = spectra_run / "other.h5"
        if not data.exists():
            write_pairs(data, n=8, seed=5, labels=False)
    else:
        kwargs[change] = {"lr": 5e-4, "batch_size": 4, "seed": 1}[change]
    with pytest.raises(ResumeMismatchError, match=change.replace("batch_size", "batch size")
                       if change != "data" else "data") as info:
        pretrain_spectra(data, out=spectra_run / "run", **kwargs)
    assert "overwrite=True" in str(info.value) and str(spectra_run / "run") in str(info.value)


def test_pretrain_spectra_resumes_with_the_same_settings(spectra_run):
    from astroclip.models.weights import read_model_config
    from astroclip.training.spectra import pretrain_spectra

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrain_spectra(spectra_run / "train.h5", out=spectra_run / "run", **RUN)
    meta = read_model_config(spectra_run / "run")["metadata"]
    assert meta["data"] == str(spectra_run / "train.h5") and meta["lr"] == RUN["lr"]


def test_pretrain_images_refuses_another_data_file(tmp_path):
    from astroclip.training.images import pretrain_images

    tiny = dict(backbone="resnet", embed_dim=16, crop_size=32,
                backbone_kwargs=dict(layers=(1, 1, 1, 1), width=4, mlp_hidden=16))
    first = write_pairs(tmp_path / "a.h5", n=8, seed=6, labels=False)
    second = write_pairs(tmp_path / "b.h5", n=8, seed=7, labels=False)
    kw = dict(preset="resnet-small", model_config=tiny, max_steps=1, batch_size=4,
              queue_size=8, progress=False, accelerator="cpu", val_every=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrain_images(first, out=tmp_path / "run", **kw)
    with pytest.raises(ResumeMismatchError, match="data"):
        pretrain_images(second, out=tmp_path / "run", **kw)


def test_align_refuses_another_seed(tmp_path):
    from astroclip.models.image import ImageEncoder
    from astroclip.models.spectrum import SpectrumEncoder
    from astroclip.training.align import align

    torch.manual_seed(0)
    data = write_pairs(tmp_path / "pairs.h5", n=8, seed=8, labels=False)
    image = ImageEncoder(backbone="resnet", embed_dim=16, crop_size=32,
                         backbone_kwargs=dict(layers=(1, 1, 1, 1), width=4, mlp_hidden=16))
    spectrum = SpectrumEncoder(embed_dim=16, num_layers=1, num_heads=2, window=40, stride=40)
    kw = dict(image_model=image, spectrum_model=spectrum, freeze="none", batch_size=4,
              max_steps=1, progress=False, accelerator="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        align(data, out=tmp_path / "run", seed=0, **kw)
    with pytest.raises(ResumeMismatchError, match="seed"):
        align(data, out=tmp_path / "run", seed=3, **kw)


# ------------------------------------------------------------------ search
def test_search_refuses_queries_of_another_model(tmp_path, model_path, other_model_path,
                                                 pairs_path, capsys):
    db, queries = tmp_path / "db.h5", tmp_path / "q.h5"
    api.embed_catalog(pairs_path, out=db, model=model_path, progress=False)
    api.embed_catalog(pairs_path, out=queries, model=other_model_path, progress=False)
    assert main(["search", "--embeddings", str(db), "--queries", str(queries), "--k", "2",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    _, _, m1 = read_embeddings(db)
    _, _, m2 = read_embeddings(queries)
    assert m1["weights_sha256"] in err and m2["weights_sha256"] in err
    assert "astroclip embed" in err and len(err.strip().splitlines()) == 1
