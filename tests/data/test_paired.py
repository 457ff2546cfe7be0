"""The paired training-set file: PairedDatasetWriter and read_paired_dataset."""

import os

import h5py
import numpy as np
import pytest
import astropy.units as u
from astropy.table import MaskedColumn, Table

from astroclip.inputs import grid
from astroclip.data.paired import PairedDatasetWriter, read_paired_dataset
from astroclip.data.layouts.astroclip import FORMAT

S = 8  # small images keep the tests fast


def _chunk(rng, n, start=0, size=S):
    return dict(
        targetid=np.arange(start, start + n, dtype=np.int64) + 1000,
        ra=rng.uniform(0, 360, n), dec=rng.uniform(-30, 60, n),
        flux=rng.normal(size=(n, grid.N_PIXELS)).astype(np.float32),
        ivar=rng.uniform(0, 2, size=(n, grid.N_PIXELS)).astype(np.float32),
        image=rng.normal(size=(n, 3, size, size)).astype(np.float32),
        split=rng.integers(0, 3, n),
        labels={"Z": rng.uniform(0, 1, n), "LOG_MSTAR": rng.uniform(8, 12, n)},
    )


def _write(path, chunks, **kwargs):
    kwargs.setdefault("label_names", ("Z", "LOG_MSTAR"))
    kwargs.setdefault("image_size", S)
    with PairedDatasetWriter(path, **kwargs) as writer:
        for c in chunks:
            writer.append(**c)
    return writer


def _concat(chunks):
    out = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0] if k != "labels"}
    out["labels"] = {k: np.concatenate([c["labels"][k] for c in chunks])
                     for k in chunks[0]["labels"]}
    return out


def test_roundtrip_uneven_chunks(tmp_path, rng):
    chunks, start = [], 0
    for n in (5, 13, 1, 7):
        chunks.append(_chunk(rng, n, start))
        start += n
    path = tmp_path / "pairs.h5"
    writer = _write(path, chunks, chunk_rows=4, image_chunk_rows=3)
    assert writer.n_rows == 26
    ref = _concat(chunks)
    table, arrays = read_paired_dataset(path)
    assert len(table) == 26
    np.testing.assert_array_equal(table["targetid"], ref["targetid"])
    assert table["targetid"].dtype == np.int64
    np.testing.assert_array_equal(table["ra"].quantity.to_value(u.deg), ref["ra"])
    np.testing.assert_array_equal(table["split"], ref["split"])
    np.testing.assert_array_equal(table["Z"], ref["labels"]["Z"])
    np.testing.assert_array_equal(table["LOG_MSTAR"], ref["labels"]["LOG_MSTAR"])
    np.testing.assert_array_equal(arrays["flux"], ref["flux"])
    np.testing.assert_array_equal(arrays["ivar"], ref["ivar"])
    np.testing.assert_array_equal(arrays["image"], ref["image"])
    assert arrays["flux"].dtype == np.float32 and arrays["image"].dtype == np.float32
    assert table.meta["format"] == FORMAT and table.meta["bands"] == "g,r,z"
    with h5py.File(path) as f:
        assert f["image"].chunks == (3, 3, S, S)
        assert f["image"].compression is None
        assert f["spectrum/flux"].chunks[0] == 4
        assert f["spectrum/flux"].compression == "lzf"
        assert f["image"].maxshape[0] is None
        assert f["split"].dtype == np.int8
        assert f["split"].attrs["split_names"] == "train,val,test"
    # no temporary file left beside the result
    assert os.listdir(tmp_path) == ["pairs.h5"]


def test_read_split_fields_rows(tmp_path, rng):
    chunk = _chunk(rng, 20)
    path = tmp_path / "pairs.h5"
    _write(path, [chunk], compression="gzip", compression_opts=1)
    test = np.nonzero(chunk["split"] == 2)[0]
    table, arrays = read_paired_dataset(path, split="test", fields=["image"])
    assert set(arrays) == {"image"}
    np.testing.assert_array_equal(table["targetid"], chunk["targetid"][test])
    np.testing.assert_array_equal(arrays["image"], chunk["image"][test])
    table, arrays = read_paired_dataset(path, split=["train", "val"], fields=[],
                                        rows=slice(1, 3))
    keep = np.nonzero(chunk["split"] < 2)[0][1:3]
    assert arrays == {}
    np.testing.assert_array_equal(table["targetid"], chunk["targetid"][keep])
    # unsorted row positions keep their order
    table, arrays = read_paired_dataset(path, rows=[7, 2, 7], fields=["spectrum/flux"])
    np.testing.assert_array_equal(table["targetid"], chunk["targetid"][[7, 2, 7]])
    np.testing.assert_array_equal(arrays["flux"], chunk["flux"][[7, 2, 7]])
    with pytest.raises(ValueError, match="unknown field 'spectra'"):
        read_paired_dataset(path, fields=["spectra"])
    with pytest.raises(ValueError, match="unknown split 'training'"):
        read_paired_dataset(path, split="training")


def test_quantities_are_converted(tmp_path, rng):
    n = 3
    chunk = _chunk(rng, n)
    wave = grid.WAVELENGTH * u.AA
    flam = chunk["flux"] * grid.FLUX_UNIT
    chunk["flux"] = flam.to(u.mJy, u.spectral_density(wave))  # f_nu in, f_lambda stored
    chunk["ivar"] = (chunk["ivar"] * grid.IVAR_UNIT).to(u.W**-2 * u.m**4 * u.nm**2)
    nmgy = chunk["image"].copy()
    chunk["image"] = (nmgy * u.nanomaggy).to(u.uJy, grid.NANOMAGGY_EQUIVALENCY)
    chunk["ra"] = chunk["ra"] * u.deg.to(u.arcmin) * u.arcmin
    chunk["labels"]["Z"] = Table({"Z": chunk["labels"]["Z"]})["Z"]
    chunk["labels"]["LOG_MSTAR"] = chunk["labels"]["LOG_MSTAR"] * u.dex(u.Msun)
    path = tmp_path / "q.h5"
    _write(path, [chunk])
    table, arrays = read_paired_dataset(path)
    np.testing.assert_allclose(arrays["flux"], flam.value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["image"], nmgy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(table["ra"].quantity.to_value(u.deg), chunk["ra"].to_value(u.deg))
    with pytest.raises(u.UnitConversionError, match="flux is in"):
        bad = _chunk(rng, n)
        bad["flux"] = bad["flux"] * u.s
        _write(tmp_path / "bad.h5", [bad])


def test_masked_labels_become_nan(tmp_path, rng):
    chunk = _chunk(rng, 4)
    chunk["labels"]["Z"] = MaskedColumn([0.1, 0.2, 0.3, 0.4], mask=[False, True, False, False])
    path = tmp_path / "m.h5"
    _write(path, [chunk])
    table, _ = read_paired_dataset(path, fields=[])
    np.testing.assert_array_equal(np.isnan(table["Z"]), [False, True, False, False])


@pytest.mark.parametrize("field, value, match", [
    ("flux", np.zeros((4, 100)), r"flux has shape \(4, 100\).*prepare_spectra"),
    ("ivar", -np.ones((4, grid.N_PIXELS)), "negative"),
    ("flux", np.full((4, grid.N_PIXELS), np.nan), "non-finite.*ivar=0"),
    ("image", np.zeros((4, 3, S + 1, S + 1)), r"image has shape.*prepare_images"),
    ("image", np.zeros((4, 4, S, S)), r"expected \(4, 3, 8, 8\)"),
    ("image", np.full((4, 3, S, S), np.inf), "non-finite pixels"),
    ("dec", np.full(4, 95.0), r"dec must lie in \[-90, 90\]"),
    ("ra", np.zeros(3), "ra has 3 values for 4"),
    ("ra", [np.inf, 0, 0, 0], "ra has infinite values"),
    ("ra", [np.nan, 0, 0, 0], "both known or both NaN"),
    ("split", ["train", "dev", "test", "val"], "unknown split 'dev'"),
    ("split", [0, 1], "split has 2 values"),
    ("targetid", [1.5, 2, 3, 4], "targetid must be integers"),
    ("labels", {"Z": np.zeros(4)}, r"missing \['LOG_MSTAR'\]"),
    ("labels", {"Z": np.zeros(4), "LOG_MSTAR": np.zeros(4), "SFR": np.zeros(4)},
     r"unexpected \['SFR'\]"),
    ("labels", {"Z": np.zeros(3), "LOG_MSTAR": np.zeros(4)}, "label 'Z' has 3 values"),
])
def test_append_rejects_bad_input(tmp_path, rng, field, value, match):
    chunk = _chunk(rng, 4)
    chunk[field] = value
    path = tmp_path / "bad.h5"
    with pytest.raises((ValueError, TypeError), match=match):
        _write(path, [chunk])
    # the failed build leaves nothing behind
    assert os.listdir(tmp_path) == []


def test_interrupted_build_leaves_no_file(tmp_path, rng):
    path = tmp_path / "pairs.h5"
    with pytest.raises(KeyboardInterrupt):
        with PairedDatasetWriter(path, label_names=("Z", "LOG_MSTAR"), image_size=S) as w:
            w.append(**_chunk(rng, 3))
            assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
            assert not path.exists()
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_overwrite(tmp_path, rng):
    path = tmp_path / "pairs.h5"
    _write(path, [_chunk(rng, 2)])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        _write(path, [_chunk(rng, 3)])
    assert len(read_paired_dataset(path, fields=[])[0]) == 2
    _write(path, [_chunk(rng, 3)], overwrite=True)
    assert len(read_paired_dataset(path, fields=[])[0]) == 3


def test_file_created_during_build_is_not_clobbered(tmp_path, rng):
    path = tmp_path / "pairs.h5"
    with pytest.raises(FileExistsError):
        with PairedDatasetWriter(path, label_names=("Z", "LOG_MSTAR"), image_size=S) as w:
            w.append(**_chunk(rng, 2))
            path.write_bytes(b"someone else's file")
    assert path.read_bytes() == b"someone else's file"
    assert os.listdir(tmp_path) == ["pairs.h5"]


def test_writer_options_validated(tmp_path):
    with pytest.raises(ValueError, match="compression"):
        PairedDatasetWriter(tmp_path / "x.h5", compression="zstd")
    with pytest.raises(ValueError, match="label_names"):
        PairedDatasetWriter(tmp_path / "x.h5", label_names=("Z", "Z"))
    with pytest.raises(RuntimeError, match="not open"):
        PairedDatasetWriter(tmp_path / "x.h5").append(
            targetid=[1], ra=[0], dec=[0], flux=None, ivar=None, image=None, split=0)
