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
