"""Tests of astroclip.inputs.desi on the real DESI EDR coadd files shipped with specutils."""

import os
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from astroclip.inputs import grid
from astroclip.inputs.desi import join_redshifts, read_desi_coadd
from astroclip.inputs.spectra import PreparedSpectra, prepare_spectra


def _data_dir():
    import specutils
    return os.path.join(os.path.dirname(specutils.__file__), "io", "default_loaders", "tests",
                        "desi_test_data")


SV3 = os.path.join(_data_dir(), "coadd-sv3-dark-26065.fits")
TILE = os.path.join(_data_dir(), "coadd-5-169-thru20210419.fits")


@pytest.fixture(scope="module")
def sv3():
    return read_desi_coadd(SV3)


def _raw(path):
    with fits.open(path) as hdul:
        out = {"fibermap": Table(hdul["FIBERMAP"].data)}
        for arm in "BRZ":
            out[arm] = {k: np.asarray(hdul[f"{arm}_{k}"].data, dtype=np.float64)
                        for k in ("WAVELENGTH", "FLUX", "IVAR", "MASK")}
    return out


def test_reads_fibermap_and_flags_sky_fibres(sv3):
    assert isinstance(sv3, PreparedSpectra)
    assert sv3.flux.shape == (5, grid.N_PIXELS) and sv3.ivar.shape == (5, grid.N_PIXELS)
    assert sv3.flux.dtype == np.float32 and sv3.ivar.dtype == np.float32
    raw = _raw(SV3)
    assert sv3.meta["TARGETID"].tolist() == raw["fibermap"]["TARGETID"].tolist()
    for col in ("TARGET_RA", "TARGET_DEC", "FLUX_G", "FLUX_R", "FLUX_Z", "OBJTYPE"):
        assert col in sv3.meta.colnames
    objtype = [o.strip() for o in sv3.meta["OBJTYPE"]]
    assert objtype == ["", "", "TGT", "SKY", "TGT"]
    assert sv3.meta["IS_SKY"].tolist() == [False, False, False, True, False]
    # sky (and unassigned) fibres are never science targets, hence never galaxies
    assert sv3.meta["IS_TARGET"].tolist() == [False, False, True, False, True]
    # the sky fibres of these files have no data: kept, flagged, zero
    assert sv3.meta["VALID"].tolist() == [False, False, True, False, True]
    assert np.all(sv3.ivar[3] == 0) and np.all(sv3.flux[3] == 0)
    assert sv3.meta["FILENAME"][0] == "coadd-sv3-dark-26065.fits"
    assert sv3.meta["FILE_ROW"].tolist() == [0, 1, 2, 3, 4]
    assert np.all(sv3.meta["COVERAGE"][[2, 4]] > 0.99)


def test_arms_combined_by_inverse_variance(sv3):
    raw = _raw(SV3)
    w = grid.WAVELENGTH
    flux = np.zeros((5, w.size))
    weight = np.zeros((5, w.size))
    for arm in "BRZ":
        a = raw[arm]
        first = int(round((a["WAVELENGTH"][0] - grid.WAVE_MIN) / grid.WAVE_STEP))
        sl = slice(first, first + a["WAVELENGTH"].size)
        # the DESI arms sit exactly on the grid pixels
        np.testing.assert_allclose(a["WAVELENGTH"], w[sl], atol=1e-6)
        ivar = np.where(a["MASK"] != 0, 0.0, a["IVAR"])
        flux[:, sl] += ivar * a["FLUX"]
        weight[:, sl] += ivar
    expected = np.divide(flux, weight, out=np.zeros_like(flux), where=weight > 0)
    np.testing.assert_allclose(sv3.flux, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sv3.ivar, weight, rtol=1e-5)
    # the masked pixels of this file (R and Z arms) were used nowhere
    assert (raw["R"]["MASK"] != 0).sum() + (raw["Z"]["MASK"] != 0).sum() == 35
    assert sv3.meta["N_MASKED"][[2, 4]].sum() >= 35


def test_same_as_specutils_spectrumlist(sv3):
    from specutils import SpectrumList

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arms = SpectrumList.read(SV3, format="DESI coadd")
    via = prepare_spectra(arms, on_invalid="flag")
    np.testing.assert_allclose(via.flux, sv3.flux, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(via.ivar, sv3.ivar, rtol=1e-6)
    assert via.meta["TARGETID"].tolist() == sv3.meta["TARGETID"].tolist()
    assert via.meta["VALID"].tolist() == sv3.meta["VALID"].tolist()


def test_many_paths_and_targetid_selection():
    both = read_desi_coadd([SV3, TILE])
    assert len(both) == 10
    assert both.meta["FILENAME"].tolist() == ["coadd-sv3-dark-26065.fits"] * 5 + [
        "coadd-5-169-thru20210419.fits"] * 5
    tile_ids = _raw(TILE)["fibermap"]["TARGETID"]
    assert both.meta["TARGETID"][5:].tolist() == tile_ids.tolist()
    # the tile file has no SKY objtype: no row there flagged as sky
    assert not both.meta["IS_SKY"][5:].any()
    assert both.meta["IS_TARGET"][5:].tolist() == [False, True, False, False, True]
    wanted = [39627866878514741, int(tile_ids[4])]
    sel = read_desi_coadd([SV3, TILE], targetids=wanted, columns=["TARGET_RA"])
    assert sel.meta["TARGETID"].tolist() == wanted
    assert "FLUX_G" not in sel.meta.colnames and "TARGET_RA" in sel.meta.colnames
    np.testing.assert_array_equal(sel.flux[0], both.flux[4])
    with pytest.raises(ValueError, match="1 of 2 requested TARGETIDs.*missing='ignore'"):
        read_desi_coadd(SV3, targetids=[39627866878514741, 12345])
    part = read_desi_coadd(SV3, targetids=[39627866878514741, 12345], missing="ignore")
    assert len(part) == 1


def test_missing_truncated_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_desi_coadd(tmp_path / "nope.fits")
    data = open(SV3, "rb").read()
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises((OSError, ValueError), match="truncated"):
        read_desi_coadd(truncated)
    cut_in_data = tmp_path / "cut.fits"
    cut_in_data.write_bytes(data[:100000])
    with pytest.raises((OSError, ValueError), match="truncated"):
        read_desi_coadd(cut_in_data)
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(np.random.default_rng(1).bytes(20000))
    with pytest.raises(OSError, match="corrupt"):
        read_desi_coadd(garbage)
    # a flipped byte inside the B_FLUX data: the checksum catches it
    flipped = tmp_path / "flipped.fits"
    shutil.copy(SV3, flipped)
    with fits.open(SV3) as hdul:
        offset = hdul.fileinfo(hdul.index_of("B_FLUX"))["datLoc"] + 1000
    raw = bytearray(flipped.read_bytes())
    raw[offset] ^= 0xFF
    flipped.write_bytes(bytes(raw))
    with pytest.raises(OSError, match="corrupt"):
        read_desi_coadd(flipped)
    # a FITS file that is not a coadd
    other = tmp_path / "other.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros(3), name="FLUX")]).writeto(other)
    with pytest.raises(ValueError, match="not a complete DESI coadd.*FIBERMAP"):
        read_desi_coadd(other)


def _zcat(ids):
    return Table({"TARGETID": np.asarray(ids, dtype=np.int64),
                  "Z": np.linspace(0.1, 0.5, len(ids)),
                  "ZWARN": np.zeros(len(ids), dtype=np.int64),
                  "SPECTYPE": ["GALAXY"] * len(ids)})


def test_join_redshifts(sv3, tmp_path):
    ids = sv3.meta["TARGETID"]
    # every fibre but the first two in the catalogue, in another order
    zcat = _zcat([ids[4], ids[3], ids[2]])
    zcat["SPECTYPE"][0] = "STAR"
    with pytest.warns(AstropyUserWarning, match="2 of 5 rows have no TARGETID match"):
        joined = join_redshifts(sv3, zcat)
    assert isinstance(joined, PreparedSpectra) and joined.flux is sv3.flux
    meta = joined.meta
    assert meta["TARGETID"].tolist() == ids.tolist()             # nothing dropped, same order
    assert meta["HAS_REDSHIFT"].tolist() == [False, False, True, True, True]
    assert meta["Z"].mask.tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(meta["Z"][2:].data, [0.5, 0.3, 0.1])
    assert meta.meta["N_UNMATCHED"] == 2
    # the sky fibre matched a GALAXY row but is still not a galaxy
    assert meta["IS_GALAXY"].tolist() == [False, False, True, False, False]
    # from a redrock-like file
    path = tmp_path / "redrock.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(_zcat(ids), name="REDSHIFTS")]).writeto(path)
    full = join_redshifts(sv3.meta, path)
    assert isinstance(full, Table) and full.meta["N_UNMATCHED"] == 0
    assert full["HAS_REDSHIFT"].all()


def test_join_redshifts_errors(sv3):
    ids = sv3.meta["TARGETID"]
    with pytest.raises(KeyError, match="no 'TARGETID' column.*meta="):
        join_redshifts(Table({"ID": [1, 2]}), _zcat(ids))
    with pytest.raises(KeyError, match="catalogue has no 'TARGETID'"):
        join_redshifts(sv3, Table({"ID": [1], "Z": [0.1]}))
    with pytest.raises(KeyError, match="no column.*ZWARN"):
        join_redshifts(sv3, Table({"TARGETID": ids, "Z": np.zeros(5)}))
    with pytest.raises(ValueError, match="more than once"):
        join_redshifts(sv3, _zcat([ids[2], ids[2]]))
    dup = _zcat([ids[2], ids[2], ids[4]])
    dup["ZCAT_PRIMARY"] = [False, True, True]
    with pytest.warns(AstropyUserWarning):
        ok = join_redshifts(sv3, dup)
    np.testing.assert_allclose(ok.meta["Z"][2], 0.3)
    with pytest.raises(ValueError, match="already has column"):
        join_redshifts(Table({"TARGETID": [1], "Z": [0.0]}), _zcat([1]))


# ------------------------------------------------------------------ many files (issue 17)
def test_coadd_paths_of_directories_and_patterns(tmp_path):
    from astroclip.inputs.desi import desi_coadd_paths

    assert [p.name for p in desi_coadd_paths(_data_dir())] == [
        "coadd-5-169-thru20210419.fits", "coadd-sv3-dark-26065.fits"]
    nested = tmp_path / "healpix" / "main" / "dark" / "101"
    nested.mkdir(parents=True)
    for name in ("coadd-main-dark-10199.fits", "coadd-main-dark-10100.fits"):
        shutil.copy(SV3, nested / name)
    (nested / "redrock-main-dark-10100.fits").write_bytes(b"")
    found = desi_coadd_paths([tmp_path / "healpix", TILE])
    assert [p.name for p in found] == ["coadd-main-dark-10100.fits",
                                       "coadd-main-dark-10199.fits", os.path.basename(TILE)]
    pattern = str(tmp_path / "healpix" / "**" / "coadd-*.fits")
    assert desi_coadd_paths(pattern) == found[:2]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        desi_coadd_paths(str(tmp_path / "*.nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no file matching"):
        desi_coadd_paths(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not found"):
        desi_coadd_paths(tmp_path / "coadd-missing.fits")


def test_iter_coadds_reads_each_file_once_in_native_byte_order(monkeypatch):
    from astroclip.inputs import desi

    opened = []
    real = desi._read_one

    def counting(path, **kwargs):
        opened.append(os.path.basename(os.fspath(path)))
        fibermap, arms = real(path, **kwargs)
        for d in arms.values():
            for key in ("wave", "flux", "ivar", "mask"):
                # a native-order copy, not a (big-endian) view of the file's bytes
                assert d[key].dtype.isnative and d[key].flags.owndata, key
        assert all(fibermap[c].dtype.isnative for c in fibermap.colnames)
        return fibermap, arms

    monkeypatch.setattr(desi, "_read_one", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = [(p.name, s) for p, s in desi.iter_desi_coadds(_data_dir())]
        single = read_desi_coadd(SV3)
    assert opened == ["coadd-5-169-thru20210419.fits", "coadd-sv3-dark-26065.fits",
                      "coadd-sv3-dark-26065.fits"]
    assert [n for n, _ in got] == opened[:2]
    assert np.array_equal(got[1][1].flux, single.flux)
    assert got[1][1].meta["TARGETID"].tolist() == single.meta["TARGETID"].tolist()


def test_iter_coadds_with_targetids_skips_files_without_them():
    from astroclip.inputs.desi import iter_desi_coadds

    wanted = [39627866878511337]  # in the SV3 file only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = list(iter_desi_coadds(_data_dir(), targetids=wanted))
    assert [(p.name, s.meta["TARGETID"].tolist()) for p, s in got] == [
        ("coadd-sv3-dark-26065.fits", wanted)]
