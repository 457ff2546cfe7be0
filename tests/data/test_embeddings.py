"""The embeddings file: a format name and version, three containers, one reader."""

import h5py
import numpy as np
import pytest
from astropy.table import Table

from astroclip.data.embeddings import (FITS_KEYWORDS, FORMAT, FORMAT_VERSION, embeddings_format,
                                       read_embeddings, write_embeddings)
from astroclip.exceptions import DataFileError, InputError

_META = {"model": "tiny", "weights_sha256": "ab" * 32, "modality": "both"}


def _containers():
    out = ["h5", "fits"]
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
        out.append("parquet")
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("suffix", _containers())
def test_round_trip_with_format_name_and_version(tmp_path, rng, suffix):
    ids = np.arange(100, 110)
    spec = rng.normal(size=(10, 6)).astype("f4")
    img = rng.normal(size=(10, 6)).astype("f4")
    valid = np.arange(10) != 3
    problem = np.where(valid, "", "no valid pixel")
    path = write_embeddings(tmp_path / f"e.{suffix}", ids, {"spectrum": spec, "image": img},
                            valid=valid, problem=problem, meta=_META)
    got_ids, emb, meta = read_embeddings(path)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(emb["spectrum"], spec)
    np.testing.assert_array_equal(emb["image"], img)
    assert meta["format"] == FORMAT and meta["format_version"] == FORMAT_VERSION
    # every container gives the metadata back under the same names
    assert {k: meta[k] for k in _META} == _META


def test_fits_header_keywords_are_short(tmp_path):
    path = write_embeddings(tmp_path / "e.fits", [1], {"image": np.ones((1, 2))}, meta=_META)
    header = Table.read(path).meta
    assert header[FITS_KEYWORDS["format"]] == FORMAT
    assert header[FITS_KEYWORDS["weights_sha256"]] == _META["weights_sha256"]
    assert all(len(k) <= 8 for k in header)


def test_blocks_are_streamed_like_one_array(tmp_path, rng):
    emb = rng.normal(size=(9, 4)).astype("f4")
    blocks = (emb[i:i + 4] for i in range(0, 9, 4))
    path = write_embeddings(tmp_path / "e.h5", np.arange(9), {"spectrum": blocks})
    np.testing.assert_array_equal(read_embeddings(path)[1]["spectrum"], emb)
    with pytest.raises(InputError, match="5 rows for 9 targetids"):
        write_embeddings(tmp_path / "f.h5", np.arange(9), {"spectrum": iter([emb[:5]])})
    assert not (tmp_path / "f.h5").exists()     # atomic: nothing left behind


def test_files_of_other_formats_and_newer_versions_are_refused(tmp_path):
    path = write_embeddings(tmp_path / "e.h5", [1, 2], {"spectrum": np.ones((2, 3))})
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = str(FORMAT_VERSION + 1)
    with pytest.raises(InputError, match="newer than this astroclip.*upgrade astroclip"):
        read_embeddings(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format"] = "astroclip-paired"
    with pytest.raises(InputError, match=r"e\.h5 is not an embeddings file.*astroclip embed"):
        read_embeddings(path)
    Table({"targetid": [1], "spectrum_embedding": np.ones((1, 3))}).write(tmp_path / "t.fits")
    with pytest.raises(InputError, match=r"t\.fits is not an embeddings file.*format None"):
        read_embeddings(tmp_path / "t.fits")
    (tmp_path / "bad.fits").write_bytes(b"SIMPLE  = T" + b" " * 100)
    with pytest.raises(DataFileError, match=r"bad\.fits cannot be read.*astroclip embed"):
        read_embeddings(tmp_path / "bad.fits")
    with pytest.raises(FileNotFoundError, match="astroclip embed"):
        read_embeddings(tmp_path / "missing.h5")


def test_format_from_suffix_or_option():
    assert embeddings_format("a.H5") == "hdf5" and embeddings_format("a.fit") == "fits"
    assert embeddings_format("a.dat", "parquet") == "parquet"
    with pytest.raises(InputError, match=r"a\.dat.*\.h5, \.fits or \.parquet"):
        embeddings_format("a.dat")
    with pytest.raises(InputError, match="both valid and problem"):
        write_embeddings("a.h5", [1], {"image": np.ones((1, 2))}, valid=[True])
