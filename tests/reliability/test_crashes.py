"""Item 4 of issue 16: clear errors (named object, the fix) instead of crashes and riddles."""

import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

import astroclip
from astroclip import api
from astroclip.exceptions import AstroclipWarning, DataFileError, InputError, ModelFormatError
from astroclip.models.weights import save_model

from ..test_api import fake_images, tiny_model
from .conftest import write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model_copy(tmp_path, model_path):
    import shutil
    return shutil.copytree(model_path, tmp_path / "copy")


# ------------------------------------------------------------------ weights and configs
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.bfloat16])
def test_weights_of_another_float_dtype_are_cast_with_a_warning(tmp_path, dtype):
    model = tiny_model().to(dtype)
    folder = save_model(model, tmp_path / "m")
    with pytest.warns(AstroclipWarning, match="float32") as record:
        loaded = astroclip.load_model(folder, device="cpu")
    assert str(dtype).split(".")[-1] in str(record[0].message)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    emb = astroclip.embed_image(fake_images(2, np.random.default_rng(0)), bands="grz",
                                unit="nanomaggy", model=folder, progress=False)
    assert np.isfinite(emb).all()


def test_truncated_weights_name_the_file_and_the_fix(model_copy):
    path = model_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFormatError, match="truncated or corrupt") as info:
        astroclip.load_model(model_copy, device="cpu")
    assert str(path) in str(info.value) and "copy" in str(info.value)


@pytest.mark.parametrize("text, problem", [("{not json", "not valid JSON"),
                                           ("[1, 2, 3]", "not a JSON object"),
                                           ('{"format": "astroclip-weights"}', "no 'class'")])
def test_broken_config_names_the_file_and_the_fix(model_copy, text, problem):
    (model_copy / "config.json").write_text(text)
    with pytest.raises(ModelFormatError, match=problem) as info:
        astroclip.load_model(model_copy, device="cpu")
    assert str(model_copy / "config.json") in str(info.value)
    assert "save_model" in str(info.value)


def test_one_broken_folder_does_not_break_list_models(model_path, private_model_dir):
    from astroclip.models.factory import register_model
    register_model(model_path, "good")
    bad = register_model(model_path, "bad")
    (bad / "config.json").write_text("{oops")
    table = astroclip.list_models()
    rows = {name: row for name, row in zip(table["name"], table)}
    assert rows["good"]["available"] and not rows["bad"]["available"]
    assert "not valid JSON" in rows["bad"]["description"]


# ------------------------------------------------------------------ full disk
def _little_space(monkeypatch, free=1000):
    """Make astroclip's free-space checks see an almost full disk."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - free, free))


def test_catalog_on_a_full_disk_keeps_finished_chunks_and_resumes(tmp_path, model_path,
                                                                  pairs_path, monkeypatch):
    from astroclip.data.embeddings import read_embeddings

    reference = api.embed_catalog(pairs_path, out=tmp_path / "ref.h5", model=model_path,
                                  chunk_size=5, progress=False)
    out = tmp_path / "emb.h5"
    real = api._run_batches
    calls = {"n": 0}

    def fill_disk_after_first_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # second chunk (two modalities per chunk)
            _little_space(monkeypatch)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_run_batches", fill_disk_after_first_chunk)
    with pytest.raises(DataFileError, match="free") as info:
        api.embed_catalog(pairs_path, out=out, model=model_path, chunk_size=5, progress=False)
    assert "chunk_0000001.npz" in str(info.value) and "run again" in str(info.value)
    parts = tmp_path / "emb.h5.parts"
    assert sorted(p.name for p in parts.glob("chunk_*")) == ["chunk_0000000.npz"]
    monkeypatch.undo()
    api.embed_catalog(pairs_path, out=out, model=model_path, chunk_size=5, progress=False)
    (ids, emb, _), (ref_ids, ref_emb, _) = read_embeddings(out), read_embeddings(reference)
    assert np.array_equal(ids, ref_ids)
    assert all(np.array_equal(emb[m], ref_emb[m]) for m in ref_emb)


@pytest.mark.parametrize("fmt", ["h5", "fits"])
def test_catalog_output_on_a_full_disk_keeps_the_parts(tmp_path, model_path, pairs_path,
                                                       monkeypatch, fmt):
    out = tmp_path / f"emb.{fmt}"
    real = api._write_output

    def full(*args, **kwargs):
        _little_space(monkeypatch)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_write_output", full)
    with pytest.raises(DataFileError, match="free") as info:
        api.embed_catalog(pairs_path, out=out, model=model_path, chunk_size=5, progress=False)
    assert str(out) in str(info.value)
    assert not out.exists() and len(list((tmp_path / f"emb.{fmt}.parts").glob("chunk_*"))) == 3
    monkeypatch.undo()
    api.embed_catalog(pairs_path, out=out, model=model_path, chunk_size=5, progress=False)
    assert out.exists() and not (tmp_path / f"emb.{fmt}.parts").exists()


def test_catalog_write_error_mid_file_is_a_data_file_error(tmp_path, model_path, pairs_path,
                                                           monkeypatch):
    import errno

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Dataset, "__setitem__", no_space)
    out = tmp_path / "emb.h5"
    with pytest.raises(DataFileError, match="No space left") as info:
        api.embed_catalog(pairs_path, out=out, model=model_path, chunk_size=5, progress=False)
    assert str(out) in str(info.value)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".emb")] == []
    assert len(list((tmp_path / "emb.h5.parts").glob("chunk_*"))) == 3


def test_writer_on_a_full_disk_writes_nothing_and_can_go_on(tmp_path, rng, monkeypatch):
    from astroclip.data.paired import PairedDatasetWriter, read_paired_dataset
    from astroclip.inputs import grid

    n = 3
    rows = dict(ra=np.zeros(n), dec=np.zeros(n), flux=np.zeros((n, grid.N_PIXELS)),
                ivar=np.ones((n, grid.N_PIXELS)), image=np.zeros((n, 3, 8, 8)), split="train")
    path = tmp_path / "pairs.h5"
    with PairedDatasetWriter(path, image_size=8) as w:
        w.append(targetid=[1, 2, 3], **rows)
        _little_space(monkeypatch)
        with pytest.raises(DataFileError, match="free") as info:
            w.append(targetid=[4, 5, 6], **rows)
        assert str(path) in str(info.value)
        monkeypatch.undo()
        w.append(targetid=[4, 5, 6], **rows)
    table, _ = read_paired_dataset(path, fields=())
    assert table["targetid"].tolist() == [1, 2, 3, 4, 5, 6]


_FSIZE = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
import numpy as np
from astroclip.exceptions import DataFileError
{body}
"""


def _run_limited(body, limit, tmp_path):
    script = _FSIZE.format(limit=limit, body=textwrap.dedent(body))
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_writer_past_the_file_size_limit_fails_cleanly(tmp_path):
    proc = _run_limited("""
        from astroclip.data.paired import PairedDatasetWriter
        n = 8
        try:
            with PairedDatasetWriter("pairs.h5", image_size=64) as w:
                for i in range(40):
                    w.append(targetid=np.arange(n) + i * n, ra=np.zeros(n), dec=np.zeros(n),
                             flux=np.random.rand(n, 7781), ivar=np.ones((n, 7781)),
                             image=np.random.rand(n, 3, 64, 64), split="train")
        except DataFileError as exc:
            print("DataFileError:", exc)
    """, 3_000_000, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DataFileError:" in proc.stdout and "pairs.h5" in proc.stdout
    assert "ulimit" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == []  # the unfinished file is discarded, nothing else


def test_catalog_past_the_file_size_limit_resumes(tmp_path, model_path, pairs_path):
    from astroclip.data.embeddings import read_embeddings

    proc = _run_limited(f"""
        import torch
        torch.set_num_threads(1)
        from astroclip import embed_catalog
        try:
            embed_catalog({str(pairs_path)!r}, out="emb.fits", model={str(model_path)!r},
                          chunk_size=4, progress=False)
        except DataFileError as exc:
            print("DataFileError:", exc)
    """, 40_000, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DataFileError:" in proc.stdout and "emb.fits" in proc.stdout
    out = api.embed_catalog(pairs_path, out=tmp_path / "emb.fits", model=model_path,
                            chunk_size=4, progress=False)
    ids, emb, _ = read_embeddings(out)
    assert np.array_equal(ids, np.arange(100, 112)) and emb["image"].shape == (12, 16)


# ------------------------------------------------------------------ byte order
def test_big_endian_inputs_are_embedded(model_path, rng):
    from astroclip.inputs.images import PreparedImages
    from astroclip.inputs.spectra import PreparedSpectra

    from ..test_api import fake_spectra

    images = fake_images(3, rng)
    native = astroclip.embed_image(PreparedImages(images), model=model_path, progress=False)
    swapped = astroclip.embed_image(PreparedImages(images.astype(">f4")), model=model_path,
                                    progress=False)
    assert np.array_equal(native, swapped)
    flux = fake_spectra(2, rng)
    spec = astroclip.embed_spectrum(PreparedSpectra(flux.astype(">f8"), np.ones_like(flux)),
                                    model=model_path, progress=False)
    assert np.allclose(spec, astroclip.embed_spectrum(PreparedSpectra(flux, np.ones_like(flux)),
                                                      model=model_path, progress=False))


# ------------------------------------------------------------------ HDF5 files
def test_a_file_locked_by_a_writer_says_so(tmp_path, pairs_path):
    import shutil

    from astroclip.data.paired import read_paired_dataset

    path = shutil.copy(pairs_path, tmp_path / "busy.h5")
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time; "
                               f"f = h5py.File({str(path)!r}, 'a'); print('open', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(DataFileError, match="open for writing by another process") as info:
            read_paired_dataset(path)
        assert str(path) in str(info.value) and "wait" in str(info.value)
        assert "corrupt" not in str(info.value)
    finally:
        holder.kill()
        holder.wait()


def test_concurrent_readers_are_fine(tmp_path, pairs_path):
    from astroclip.data.paired import read_paired_dataset

    holder = subprocess.Popen([sys.executable, "-c", "import h5py, time; "
                               f"f = h5py.File({str(pairs_path)!r}, 'r'); print('open', "
                               "flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        table, arrays = read_paired_dataset(pairs_path)
        assert len(table) == 12 and arrays["image"].shape[0] == 12
    finally:
        holder.kill()
        holder.wait()


def test_a_label_column_shorter_than_targetid_is_named(tmp_path):
    from astroclip.data.datasets import PairedDataset
    from astroclip.data.paired import read_paired_dataset

    path = write_pairs(tmp_path / "p.h5", n=6)
    with h5py.File(path, "a") as f:
        values = f["labels/Z"][:4]
        del f["labels/Z"]
        f["labels/Z"] = values
    for reader in (read_paired_dataset, PairedDataset):
        with pytest.raises(InputError, match="labels/Z") as info:
            reader(path)
        assert str(path) in str(info.value) and "rebuild" in str(info.value)


@pytest.mark.parametrize("empty", [np.zeros((0, 3, 152, 152)), []])
def test_zero_images_are_an_input_error(empty):
    from astroclip.inputs.images import prepare_images

    with pytest.raises(InputError, match="no images"):
        prepare_images(empty, bands="grz", unit="nanomaggy")


# ------------------------------------------------------------------ saved FAISS indexes
@pytest.fixture
def saved_indexes(tmp_path):
    from astroclip.search import SimilarityIndex

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype("float32")
    paths = {}
    for name, kwargs in {"cosine": {}, "l2": dict(metric="l2"),
                         "ivf": dict(kind="ivf", nlist=4)}.items():
        paths[name] = SimilarityIndex(x, modality="image", **kwargs).save(tmp_path / name)
    return paths


def _index_file(folder):
    return json.loads((folder / "index.json").read_text())["stores"]["image"]["index_file"]


@pytest.mark.parametrize("swap, problem", [("l2", "metric"), ("ivf", "kind")])
def test_an_index_file_of_another_metric_or_kind_is_refused(saved_indexes, swap, problem):
    import shutil

    from astroclip.search import SimilarityIndex

    target = saved_indexes["cosine"]
    shutil.copy(saved_indexes[swap] / _index_file(saved_indexes[swap]),
                target / _index_file(target))
    with pytest.raises(DataFileError, match=problem) as info:
        SimilarityIndex.load(target)
    assert _index_file(target) in str(info.value) and "save the index again" in str(info.value)


@pytest.mark.parametrize("part", ["index", "ids", "manifest"])
def test_a_truncated_index_names_the_file(saved_indexes, part):
    from astroclip.search import SimilarityIndex

    folder = saved_indexes["cosine"]
    name = {"index": _index_file(folder), "manifest": "index.json",
            "ids": json.loads((folder / "index.json").read_text())["stores"]["image"]["ids_file"]
            }[part]
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[:len(data) // 3])
    with pytest.raises(DataFileError, match="truncated or corrupt") as info:
        SimilarityIndex.load(folder)
    assert name in str(info.value) and "save the index again" in str(info.value)
