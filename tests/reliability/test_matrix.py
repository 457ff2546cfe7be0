"""The adversarial matrix of issue 16: bad inputs and faults over the public entry points.

Each case is one situation a user can get into.  It must end in the exact
error class of `astroclip.exceptions` (or the built-in file errors) with a
message naming the object and the fix -- or, for faults and interruptions,
with nothing lost and nothing mixed.  The item tests of the other files of
this folder are part of the matrix too.
"""

import os
import shutil
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import astropy.units as u
import h5py
import numpy as np
import pytest
import torch
from astropy.table import Table

import astroclip
from astroclip import api
from astroclip.cli import main
from astroclip.data.embeddings import read_embeddings
from astroclip.exceptions import DataFileError, InputError, ModelFormatError
from astroclip.inputs import grid

from ..test_api import fake_images, fake_spectra
from .conftest import desi_coadd

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning")]
WAVE = grid.wavelength_grid()


@pytest.fixture
def ctx(tmp_path, model_path, pairs_path, rng):
    return SimpleNamespace(tmp=tmp_path, model=model_path, pairs=pairs_path, rng=rng)


# ------------------------------------------------------------------ bad inputs
def _spectra_all_nan(c):
    flux = np.full((2, grid.N_PIXELS), np.nan)
    flux[0] = 1
    astroclip.prepare_spectra(flux * grid.FLUX_UNIT, wavelength=WAVE)


def _spectra_bad_mask(c):
    astroclip.prepare_spectra(np.ones((2, 100)) * grid.FLUX_UNIT, wavelength=WAVE[:100],
                              mask=np.zeros((2, 99), bool), min_coverage=0)


def _images_without_bands(c):
    astroclip.prepare_images(fake_images(1, c.rng), unit="nanomaggy")


def _images_far_pixel_scale(c):
    astroclip.prepare_images(fake_images(1, c.rng), bands="grz", unit="nanomaggy",
                             pixel_scale=1.0 * u.arcsec)


def _images_too_small(c):
    astroclip.prepare_images(np.zeros((1, 3, 40, 40)), bands="grz", unit="nanomaggy")


def _desi_truncated(c):
    path = c.tmp / "coadd-cut.fits"
    data = open(desi_coadd(), "rb").read()
    path.write_bytes(data[:len(data) // 2])
    astroclip.read_desi_coadd(path)


def _desi_not_a_coadd(c):
    from astropy.io import fits
    path = c.tmp / "image.fits"
    fits.PrimaryHDU(np.zeros((3, 8, 8))).writeto(path)
    astroclip.read_desi_coadd(path)


def _desi_missing_targetids(c):
    astroclip.read_desi_coadd(desi_coadd(), targetids=[1, 2, 3])


def _zcat_duplicates(c):
    from astroclip.inputs.desi import join_redshifts
    join_redshifts(Table({"TARGETID": [1, 2]}),
                   Table({"TARGETID": [1, 1], "Z": [0.1, 0.2], "ZWARN": [0, 0],
                          "SPECTYPE": ["GALAXY", "GALAXY"]}))


def _catalog_modality(c):
    api.embed_catalog(c.pairs, out=c.tmp / "e.h5", model=c.model, modality="radio")


def _catalog_suffix(c):
    api.embed_catalog(c.pairs, out=c.tmp / "e.txt", model=c.model)


def _catalog_desi_images(c):
    api.embed_catalog(desi_coadd(), out=c.tmp / "e.h5", model=c.model, modality="image")


def _catalog_exists(c):
    (c.tmp / "e.h5").write_bytes(b"precious")
    api.embed_catalog(c.pairs, out=c.tmp / "e.h5", model=c.model)


def _catalog_chunk_size(c):
    api.embed_catalog(c.pairs, out=c.tmp / "e.h5", model=c.model, chunk_size=0)


def _table_without_image(c):
    astroclip.embed_image(Table({"ID": [1, 2]}), model=c.model, progress=False)


def _table_flux_without_unit(c):
    astroclip.embed_spectrum(Table({"flux": fake_spectra(2, c.rng)}), model=c.model,
                             progress=False)


def _batch_size_zero(c):
    astroclip.embed_image(fake_images(2, c.rng), bands="grz", unit="nanomaggy", model=c.model,
                          batch_size=0)


def _paired_unknown_field(c):
    astroclip.read_paired_dataset(c.pairs, fields=["photometry"])


def _paired_foreign_h5(c):
    path = c.tmp / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    astroclip.read_paired_dataset(path)


def _paired_empty_file(c):
    path = c.tmp / "empty.h5"
    path.write_bytes(b"")
    astroclip.read_paired_dataset(path)


def _writer_nan_flux(c):
    from astroclip.data.paired import PairedDatasetWriter
    flux = np.full((1, grid.N_PIXELS), np.nan)
    with PairedDatasetWriter(c.tmp / "w.h5", image_size=8) as w:
        w.append(targetid=[1], ra=[0.0], dec=[0.0], flux=flux, ivar=np.ones_like(flux),
                 image=np.zeros((1, 3, 8, 8)), split="train")


def _writer_exists(c):
    from astroclip.data.paired import PairedDatasetWriter
    PairedDatasetWriter(c.pairs).open()


def _index_dimension(c):
    from astroclip.search import SimilarityIndex
    SimilarityIndex(np.ones((5, 4)) + np.eye(5, 4)).search(np.ones((1, 6)), k=1)


def _index_save_nonempty(c):
    from astroclip.search import SimilarityIndex
    (c.tmp / "idx").mkdir()
    (c.tmp / "idx" / "mine.txt").write_text("keep")
    SimilarityIndex(np.eye(4)).save(c.tmp / "idx")


def _knn_k_too_large(c):
    from astroclip.evaluation import knn_regression
    knn_regression(np.eye(5), np.arange(5.0), np.eye(5), k=10)


def _fewshot_nan_targets(c):
    from astroclip.evaluation import fewshot_regression
    y = np.arange(20.0)
    y[3] = np.nan
    fewshot_regression(np.eye(20), y, np.eye(20), device="cpu", progress=False)


def _retrieval_unpaired(c):
    from astroclip.evaluation import retrieval_accuracy
    retrieval_accuracy(np.eye(4), np.eye(5, 4))


def _evaluate_no_test_rows(c):
    from astroclip.evaluation import evaluate_embeddings
    evaluate_embeddings((np.arange(100, 112), {"image": np.eye(12)}), c.pairs,
                        test_split="val", progress=False)


def _register_not_a_model(c):
    from astroclip.models.factory import register_model
    (c.tmp / "folder").mkdir()
    register_model(c.tmp / "folder", "x")


def _resolve_folder_not_model(c):
    (c.tmp / "folder").mkdir()
    astroclip.load_model(c.tmp / "folder", device="cpu")


def _released_offline(c):
    from astroclip.models.factory import model_path
    model_path("specformer-released", download=False)


def _training_data_missing(c):
    from astroclip.training.spectra import pretrain_spectra
    pretrain_spectra(c.tmp / "none.h5", out=c.tmp / "run")


def _simulate_impossible_limits(c):
    from astroclip.simulate import simulate_survey
    simulate_survey(10, out=c.tmp / "mock.h5", zmin=0.5, zmax=0.2)


def _model_config_wrong_class(c):
    folder = shutil.copytree(c.model, c.tmp / "m")
    text = (folder / "config.json").read_text().replace('"class": "AstroCLIP"',
                                                        '"class": "os:system"')
    (folder / "config.json").write_text(text)
    astroclip.load_model(folder, device="cpu")


def _model_weights_shape(c):
    from safetensors.torch import load_file, save_file
    folder = shutil.copytree(c.model, c.tmp / "m")
    state = load_file(folder / "model.safetensors")
    key = sorted(state)[0]
    state[key] = torch.zeros(3, 3)
    save_file(state, folder / "model.safetensors")
    astroclip.load_model(folder, device="cpu")


BAD_INPUTS = [
    ("prepare_spectra: all-NaN spectrum", _spectra_all_nan, InputError, ["row 1", "on_invalid"]),
    ("prepare_spectra: mask of another shape", _spectra_bad_mask, InputError, ["mask", "shape"]),
    ("prepare_images: array without bands", _images_without_bands, InputError, ["bands="]),
    ("prepare_images: far pixel scale", _images_far_pixel_scale, InputError,
     ["pixel scale", "max_scale_ratio"]),
    ("prepare_images: smaller than size", _images_too_small, InputError, ["40x40", "size="]),
    ("read_desi_coadd: truncated file", _desi_truncated, DataFileError,
     ["coadd-cut.fits", "download it again"]),
    ("read_desi_coadd: not a coadd", _desi_not_a_coadd, InputError,
     ["image.fits", "FIBERMAP"]),
    ("read_desi_coadd: missing targetids", _desi_missing_targetids, InputError,
     ["TARGETIDs", "missing='ignore'"]),
    ("join_redshifts: duplicate targetids", _zcat_duplicates, InputError,
     ["more than once", "ZCAT_PRIMARY"]),
    ("embed_catalog: unknown modality", _catalog_modality, InputError, ["'radio'", "both"]),
    ("embed_catalog: unknown suffix", _catalog_suffix, InputError, ["e.txt", "format="]),
    ("embed_catalog: images of DESI files", _catalog_desi_images, InputError,
     ["modality='spectrum'"]),
    ("embed_catalog: output exists", _catalog_exists, FileExistsError,
     ["e.h5", "overwrite=True"]),
    ("embed_catalog: chunk_size 0", _catalog_chunk_size, InputError, ["chunk_size", "positive"]),
    ("embed_image: Table without image", _table_without_image, InputError,
     ["image column", "['ID']"]),
    ("embed_spectrum: flux column without unit", _table_flux_without_unit, InputError,
     ["no unit", ".unit ="]),
    ("embed_image: batch_size 0", _batch_size_zero, InputError, ["batch_size", "positive"]),
    ("read_paired_dataset: unknown field", _paired_unknown_field, InputError,
     ["'photometry'", "'flux'"]),
    ("read_paired_dataset: foreign HDF5", _paired_foreign_h5, InputError,
     ["other.h5", "PairedDatasetWriter"]),
    ("read_paired_dataset: empty file", _paired_empty_file, DataFileError,
     ["empty.h5", "it is empty", "rebuild"]),
    ("PairedDatasetWriter: NaN flux", _writer_nan_flux, InputError, ["flux", "ivar=0"]),
    ("PairedDatasetWriter: file exists", _writer_exists, FileExistsError,
     ["pairs.h5", "overwrite=True"]),
    ("SimilarityIndex: other dimension", _index_dimension, InputError,
     ["dimension 6", "same model"]),
    ("SimilarityIndex.save: non-empty folder", _index_save_nonempty, FileExistsError,
     ["idx", "overwrite=True"]),
    ("knn_regression: k too large", _knn_k_too_large, InputError, ["k=10", "k <= 5"]),
    ("fewshot_regression: NaN labels", _fewshot_nan_targets, InputError, ["NaN", "rows 3"]),
    ("retrieval_accuracy: unpaired", _retrieval_unpaired, InputError,
     ["same objects in the same order"]),
    ("evaluate_embeddings: no test rows", _evaluate_no_test_rows, InputError,
     ["0 test", "non-empty"]),
    ("register_model: not a model", _register_not_a_model, ModelFormatError,
     ["folder", "save_model"]),
    ("load_model: folder without a model", _resolve_folder_not_model, ModelFormatError,
     ["folder", "config.json", "save_model"]),
    ("model_path: released, offline", _released_offline, DataFileError,
     ["specformer-released", "convert-weights"]),
    ("pretrain_spectra: no data file", _training_data_missing, FileNotFoundError,
     ["none.h5", "astroclip simulate"]),
    ("simulate_survey: impossible limits", _simulate_impossible_limits, InputError,
     ["zmin=0.5", "zmax"]),
    ("load_model: config naming os:system", _model_config_wrong_class, ModelFormatError,
     ["os:system", "config.json"]),
    ("load_model: weights of another shape", _model_weights_shape, ModelFormatError,
     ["do not match", "save_model"]),
]


@pytest.mark.parametrize("case, trigger, error, words", BAD_INPUTS,
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(ctx, case, trigger, error, words):
    with pytest.raises(error) as info:
        trigger(ctx)
    assert type(info.value) is error, type(info.value)
    for w in words:
        assert w in str(info.value), (case, str(info.value))
    if error in (FileExistsError,) and "e.h5" in words:
        assert (ctx.tmp / "e.h5").read_bytes() == b"precious"


# ------------------------------------------------------------------ faults
def test_a_damaged_chunk_is_named(ctx, monkeypatch):
    from .test_resume_identity import _interrupted
    out = ctx.tmp / "e.h5"
    _interrupted(monkeypatch, ctx.pairs, out, ctx.model, modality="spectrum", chunk_size=4)
    chunk = ctx.tmp / "e.h5.parts" / "chunk_0000000.npz"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(DataFileError, match="chunk_0000000.npz is unreadable") as info:
        api.embed_catalog(ctx.pairs, out=out, model=ctx.model, modality="spectrum",
                          chunk_size=4, progress=False)
    assert "delete it" in str(info.value)


def test_a_damaged_manifest_is_named(ctx, monkeypatch):
    from .test_resume_identity import _interrupted
    out = ctx.tmp / "e.h5"
    _interrupted(monkeypatch, ctx.pairs, out, ctx.model, modality="spectrum", chunk_size=4)
    (ctx.tmp / "e.h5.parts" / "manifest.json").write_text("{broken")
    with pytest.raises(DataFileError, match="manifest.json is not readable JSON") as info:
        api.embed_catalog(ctx.pairs, out=out, model=ctx.model, modality="spectrum",
                          chunk_size=4, progress=False)
    assert "--restart" in str(info.value)


def test_a_damaged_run_record_is_named(ctx):
    from astroclip.training.runs import check_resume_run
    (ctx.tmp / "run").mkdir()
    (ctx.tmp / "run" / "run.json").write_text("[")
    (ctx.tmp / "run" / "last.ckpt").write_bytes(b"")
    with pytest.raises(DataFileError, match="run.json is not readable JSON") as info:
        check_resume_run(ctx.tmp / "run", ctx.tmp / "run" / "last.ckpt", data=ctx.pairs, lr=1.0)
    assert "overwrite=True" in str(info.value)


def test_a_finished_run_is_not_clobbered(ctx):
    from astroclip.models.weights import save_model
    from astroclip.training.runs import check_run_folder

    from ..test_api import tiny_model
    save_model(tiny_model(), ctx.tmp / "run")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        check_run_folder(ctx.tmp / "run", resume=False, overwrite=False)
    assert (ctx.tmp / "run" / "model.safetensors").exists()


def test_a_corrupt_embeddings_file_on_the_command_line(ctx, capsys):
    (ctx.tmp / "e.fits").write_bytes(b"SIMPLE  = T" + b" " * 100)
    assert main(["search", "--embeddings", str(ctx.tmp / "e.fits"), "--query-ids", "1"]) == 1
    err = capsys.readouterr().err
    assert "e.fits" in err and "astroclip embed" in err and len(err.strip().splitlines()) == 1


def test_convert_weights_on_a_truncated_checkpoint(ctx, capsys):
    path = ctx.tmp / "specformer.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:2000])
    assert main(["convert-weights", str(path), "--out", str(ctx.tmp / "m")]) == 1
    err = capsys.readouterr().err
    assert "specformer.ckpt" in err and "not a readable PyTorch checkpoint" in err
    assert len(err.strip().splitlines()) == 1 and not (ctx.tmp / "m").exists()


def test_evaluate_with_a_missing_label_on_the_command_line(ctx, capsys):
    api.embed_catalog(ctx.pairs, out=ctx.tmp / "e.h5", model=ctx.model, progress=False)
    assert main(["evaluate", "--embeddings", str(ctx.tmp / "e.h5"), "--labels", str(ctx.pairs),
                 "--properties", "SFR", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "SFR" in err and "LOG_MSTAR" in err


# ------------------------------------------------------------------ interrupted runs
def test_interrupted_register_keeps_the_old_model(ctx, private_model_dir, monkeypatch,
                                                  other_model_path):
    from astroclip.models.factory import register_model
    old = register_model(ctx.model, "m")
    digest = api.model_info(astroclip.load_model(old, device="cpu"))["weights_sha256"]

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copytree", dies)
    with pytest.raises(KeyboardInterrupt):
        register_model(other_model_path, "m", overwrite=True)
    monkeypatch.undo()
    assert api.model_info(astroclip.load_model(old, device="cpu"))["weights_sha256"] == digest
    assert [p.name for p in private_model_dir.iterdir()] == ["m"]


def test_interrupted_writer_leaves_nothing_half_written(ctx):
    from astroclip.data.paired import PairedDatasetWriter
    n = 2
    with pytest.raises(KeyboardInterrupt):
        with PairedDatasetWriter(ctx.tmp / "w.h5", image_size=8) as w:
            w.append(targetid=[1, 2], ra=np.zeros(n), dec=np.zeros(n),
                     flux=np.zeros((n, grid.N_PIXELS)), ivar=np.ones((n, grid.N_PIXELS)),
                     image=np.zeros((n, 3, 8, 8)), split="train")
            raise KeyboardInterrupt
    assert os.listdir(ctx.tmp) == []


def test_interrupted_index_add_leaves_the_index_as_it_was(ctx):
    from astroclip.search import SimilarityIndex
    index = SimilarityIndex(np.eye(6, 4) + 0.1, ids=np.arange(6), chunk_size=2)
    bad = np.ones((6, 4))
    bad[5] = np.nan  # the third chunk fails
    with pytest.raises(InputError, match="row"):
        index.add(bad, ids=np.arange(10, 16))
    assert index.ntotal() == 6 and index.ids().tolist() == list(range(6))


def test_interrupted_index_save_is_detected(ctx):
    import faiss

    from astroclip.search import SimilarityIndex
    folder = SimilarityIndex(np.eye(6, 4) + 0.1, modality="image").save(ctx.tmp / "idx")
    bigger = SimilarityIndex(np.vstack([np.eye(6, 4)] * 2) + 0.1, modality="image")
    # a save killed after writing the new index file but before the new manifest
    faiss.write_index(bigger._store("image").index, str(next(folder.glob("*.faiss"))))
    with pytest.raises(DataFileError, match="inconsistent with the manifest") as info:
        SimilarityIndex.load(folder)
    assert "save the index again" in str(info.value)


def test_killed_catalog_process_resumes_bit_identical(ctx):
    out = ctx.tmp / "e.h5"
    script = (f"import torch; torch.set_num_threads(1)\n"
              f"from astroclip import api\n"
              f"real = api._run_batches\n"
              f"calls = []\n"
              f"def slow(*a, **k):\n"
              f"    calls.append(1)\n"
              f"    if len(calls) > 2:\n"
              f"        import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
              f"    return real(*a, **k)\n"
              f"api._run_batches = slow\n"
              f"api.embed_catalog({str(ctx.pairs)!r}, out={str(out)!r}, model={str(ctx.model)!r},"
              f" chunk_size=4, progress=False)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -9
    assert len(list((ctx.tmp / "e.h5.parts").glob("chunk_*.npz"))) == 1
    api.embed_catalog(ctx.pairs, out=out, model=ctx.model, chunk_size=4, progress=False)
    ref = api.embed_catalog(ctx.pairs, out=ctx.tmp / "ref.h5", model=ctx.model, chunk_size=4,
                            progress=False)
    (ids, emb, _), (rids, remb, _) = read_embeddings(out), read_embeddings(ref)
    assert np.array_equal(ids, rids) and all(np.array_equal(emb[m], remb[m]) for m in remb)


# ------------------------------------------------------------------ concurrency
def test_two_catalog_runs_on_one_output_do_not_mix(ctx, monkeypatch):
    out = ctx.tmp / "e.h5"
    started, release = threading.Event(), threading.Event()
    real = api._run_batches

    def paused(*args, **kwargs):
        started.set()
        release.wait(60)
        return real(*args, **kwargs)

    errors = []

    def first():
        try:
            api.embed_catalog(ctx.pairs, out=out, model=ctx.model, chunk_size=4, progress=False)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    monkeypatch.setattr(api, "_run_batches", paused)
    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(60)
    monkeypatch.setattr(api, "_run_batches", real)
    try:
        with pytest.raises(DataFileError, match="in use by another embed_catalog run") as info:
            api.embed_catalog(ctx.pairs, out=out, model=ctx.model, chunk_size=4, progress=False)
        assert str(out) in str(info.value) and "wait" in str(info.value)
    finally:
        release.set()
        thread.join(120)
    assert not errors
    ids, emb, _ = read_embeddings(out)
    assert np.array_equal(ids, np.arange(100, 112))


def test_a_reader_never_sees_a_half_written_output(ctx):
    out = ctx.tmp / "e.fits"
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            if out.exists():
                seen.append(len(read_embeddings(out)[0]))
            time.sleep(0.001)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        api.embed_catalog(ctx.pairs, out=out, model=ctx.model, chunk_size=4, progress=False)
    finally:
        done.set()
        thread.join(30)
    seen.append(len(read_embeddings(out)[0]))
    assert set(seen) == {12}


def test_readers_of_a_training_file_in_worker_processes(ctx):
    from astroclip.data.datasets import PairedDataset
    loader = torch.utils.data.DataLoader(PairedDataset(ctx.pairs), batch_size=4, num_workers=2)
    ids = torch.cat([b["targetid"] for b in loader]).tolist()
    assert ids == list(range(100, 112))


def test_resume_after_changing_the_model_on_the_command_line(ctx, other_model_path, capsys,
                                                             monkeypatch):
    from .test_resume_identity import _interrupted
    out = ctx.tmp / "e.h5"
    _interrupted(monkeypatch, ctx.pairs, out, ctx.model, modality="spectrum", chunk_size=4)
    assert main(["embed", str(ctx.pairs), "--out", str(out), "--model", str(other_model_path),
                 "--modality", "spectrum", "--chunk-size", "4", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "model weights" in err and "--restart" in err
    assert main(["embed", str(ctx.pairs), "--out", str(out), "--model", str(other_model_path),
                 "--modality", "spectrum", "--chunk-size", "4", "--no-progress",
                 "--restart"]) == 0
    assert read_embeddings(out)[2]["weights_sha256"] == api.model_info(
        astroclip.load_model(other_model_path, device="cpu"))["weights_sha256"]
