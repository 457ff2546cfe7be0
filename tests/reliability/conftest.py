"""Fixtures of the reliability matrix: a tiny aligned model, a small paired file, DESI coadds."""

import os

import numpy as np
import pytest

from ..test_api import fake_images, fake_spectra, tiny_model


def desi_coadd(name="coadd-sv3-dark-26065.fits"):
    """A real DESI EDR coadd shipped with specutils."""
    import specutils
    return os.path.join(os.path.dirname(specutils.__file__), "io", "default_loaders", "tests",
                        "desi_test_data", name)


def write_pairs(path, n=12, *, seed=0, first_id=100, labels=True):
    """A small paired training-set file (images 152 px, labels Z and LOG_MSTAR)."""
    from astroclip.data.paired import PairedDatasetWriter

    rng = np.random.default_rng(seed)
    flux = fake_spectra(n, rng)
    names = ("Z", "LOG_MSTAR") if labels else ()
    with PairedDatasetWriter(path, label_names=names) as w:
        w.append(targetid=np.arange(n) + first_id, ra=np.zeros(n), dec=np.zeros(n), flux=flux,
                 ivar=np.ones_like(flux), image=fake_images(n, rng),
                 split=np.where(np.arange(n) < 3 * n // 4, 0, 2).astype(np.int8),
                 labels={"Z": rng.uniform(0, 0.5, n), "LOG_MSTAR": rng.uniform(9, 11, n)}
                 if labels else None)
    return path


@pytest.fixture(scope="package")
def model_path(tmp_path_factory):
    from astroclip.models.weights import save_model
    path = tmp_path_factory.mktemp("reliability-model") / "tiny"
    save_model(tiny_model(), path)
    return path


@pytest.fixture(scope="package")
def other_model_path(tmp_path_factory):
    """Another tiny model of the same architecture (other weights)."""
    import torch

    from astroclip.models.weights import save_model
    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    path = tmp_path_factory.mktemp("reliability-model") / "other"
    save_model(model, path)
    return path


@pytest.fixture(scope="package")
def pairs_path(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("reliability-data") / "pairs.h5")


@pytest.fixture
def private_model_dir(tmp_path, monkeypatch):
    """An empty local model directory (ASTROCLIP_MODEL_DIR) for this test."""
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("ASTROCLIP_MODEL_DIR", str(root))
    return root


#: Wavelength ranges (Angstrom, 0.8 A pixels) of the DESI arms, as in the coadd files.
_ARMS = {"B": (3600.0, 5930.0), "R": (5660.0, 7720.0), "Z": (7420.0, 9824.0)}


def write_mock_coadd(path, n=4, *, seed=0, first_id=7000):
    """A small DESI-coadd-like FITS file (big-endian on disk, like every FITS file)."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    objtype = np.array(["TGT"] * n)
    if n > 2:
        objtype[1] = "SKY"
    hdus = [fits.PrimaryHDU(),
            fits.BinTableHDU.from_columns([
                fits.Column("TARGETID", "K", array=np.arange(n) + first_id),
                fits.Column("OBJTYPE", "3A", array=objtype),
                fits.Column("TARGET_RA", "D", array=rng.uniform(0, 360, n)),
                fits.Column("TARGET_DEC", "D", array=rng.uniform(-10, 60, n))], name="FIBERMAP")]
    for arm, (lo, hi) in _ARMS.items():
        wave = np.arange(lo, hi + 0.4, 0.8)
        flux = (rng.normal(1.0, 0.3, (n, wave.size))
                + np.exp(-0.5 * ((wave - rng.uniform(lo, hi, (n, 1))) / 20) ** 2))
        flux[objtype == "SKY"] = 0.0
        ivar = np.where(objtype[:, None] == "SKY", 0.0, 4.0) * np.ones((n, wave.size))
        header = fits.Header({"BUNIT": "10**-17 erg/(s cm2 Angstrom)"})
        hdus += [fits.ImageHDU(wave, name=f"{arm}_WAVELENGTH",
                               header=fits.Header({"BUNIT": "Angstrom"})),
                 fits.ImageHDU(flux.astype(">f4"), name=f"{arm}_FLUX", header=header),
                 fits.ImageHDU(ivar.astype(">f4"), name=f"{arm}_IVAR"),
                 fits.ImageHDU(np.zeros((n, wave.size), ">i4"), name=f"{arm}_MASK")]
    fits.HDUList(hdus).writeto(path, checksum=True)
    return path


def shipped_desi_coadds():
    """The four real DESI coadd files shipped by specutils and fastspecfit."""
    import fastspecfit

    from astroclip.inputs.desi import desi_coadd_paths
    return desi_coadd_paths([os.path.dirname(desi_coadd()),
                             os.path.join(os.path.dirname(fastspecfit.__file__), "test", "data")])
