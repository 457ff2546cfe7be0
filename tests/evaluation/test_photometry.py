"""Magnitudes and colours from fluxes, and the one photometry baseline."""

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table
from sklearn.metrics import r2_score as sk_r2

from astroclip.evaluation import photometry_baseline, photometry_features


def test_photometry_features_units():
    flux = np.array([[10.0, 100.0, 1000.0], [1.0, 1.0, 1.0]])
    f = photometry_features(flux)
    np.testing.assert_allclose(f[0], [20, 17.5, 15, 2.5, 2.5])
    np.testing.assert_allclose(f[1], [22.5, 22.5, 22.5, 0, 0])
    # a Quantity in Jy: 1 nanomaggy = 3631e-9 Jy
    np.testing.assert_allclose(photometry_features(flux * 3631e-9 * u.Jy), f, atol=1e-9)
    # a DESI FIBERMAP-like table with units
    t = Table({"FLUX_G": flux[:, 0], "FLUX_R": flux[:, 1], "FLUX_Z": flux[:, 2],
               "OTHER": [0, 0]})
    for band in "GRZ":
        t[f"FLUX_{band}"].unit = u.nanomaggy
    np.testing.assert_allclose(photometry_features(t), f)
    # AB magnitudes are taken as they are
    np.testing.assert_allclose(photometry_features(f[:, :3] * u.ABmag), f)
    with pytest.raises(ValueError, match=r"non-positive .* 2 objects \(g: 1, r: 0, z: 1; "
                                         r"rows 1, 3\).*drop"):
        photometry_features(np.array([[1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, -2.0]]))
    with pytest.raises(ValueError, match="not a flux density"):
        photometry_features(flux * u.m)
    with pytest.raises(ValueError, match="no g-band flux column"):
        photometry_features(Table({"FLUX_R": [1.0], "FLUX_Z": [1.0]}))
    with pytest.raises(ValueError, match=r"shape \(n_objects, 3\)"):
        photometry_features(flux[:, :2])


def test_photometry_baseline(rng):
    n = 800
    mass = rng.uniform(9, 11.5, n)
    colour = rng.uniform(0.2, 1.5, n)
    r = 10 ** (0.4 * (mass - 9)) * 5
    flux = np.stack([r * 10 ** (-0.4 * colour), r, r * 10 ** (0.4 * 0.5 * colour)], axis=1)
    pred = photometry_baseline(flux[:600], mass[:600], flux[600:], max_epochs=80,
                               device="cpu", progress=False)
    assert sk_r2(mass[600:], pred) > 0.9
    bad = flux.copy()
    bad[5, 1] = 0
    with pytest.raises(ValueError, match="rows 5"):
        photometry_baseline(bad[:600], mass[:600], flux[600:])
