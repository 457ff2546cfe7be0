"""Mock Legacy Survey images: flux, PSF, shapes, noise, colour gradients."""

import numpy as np
import pytest

from astroclip.inputs import grid
from astroclip.simulate.images import render_images
from astroclip.simulate.population import galaxy_rngs


def _pop(n, **kw):
    base = {"re_bulge": np.full(n, 1.0), "re_disc": np.full(n, 3.0),
            "q_bulge": np.ones(n), "q_disc": np.ones(n), "pa": np.zeros(n),
            "bulge_frac": np.full(n, 0.3)}
    base.update({k: np.full(n, v, dtype=np.float64) for k, v in kw.items()})
    return base


def _moments(img):
    s = img.shape[-1]
    y, x = np.mgrid[:s, :s].astype(np.float64)
    tot = img.sum()
    cx, cy = (img * x).sum() / tot, (img * y).sum() / tot
    ixx = (img * (x - cx) ** 2).sum() / tot
    iyy = (img * (y - cy) ** 2).sum() / tot
    ixy = (img * (x - cx) * (y - cy)).sum() / tot
    return cx, cy, ixx, iyy, ixy


def test_noiseless_flux_centre_and_psf():
    n = 3
    pop = _pop(n, re_bulge=1e-4, re_disc=1e-4)       # point sources
    fb = np.array([[1.0, 2.0, 3.0]] * n)
    fd = np.array([[0.5, 0.5, 0.5]] * n)
    img, info = render_images(pop, fb, fd, galaxy_rngs(0, range(n)), size=64, neighbours=0,
                              noise=False)
    assert img.shape == (n, 3, 64, 64) and img.dtype == np.float32
    assert np.allclose(img.sum(axis=(2, 3)), fb + fd, rtol=1e-5)
    for i in range(n):
        for b in range(3):
            cx, cy, ixx, iyy, ixy = _moments(img[i, b].astype(np.float64))
            assert cx == pytest.approx(32 + info["offset"][i, 0], abs=1e-3)
            assert cy == pytest.approx(32 + info["offset"][i, 1], abs=1e-3)
            # Gaussian PSF convolved with the square pixel
            expected = info["psf_sigma"][i, b] ** 2 + 1 / 12
            assert ixx == pytest.approx(expected, rel=0.02)
            assert iyy == pytest.approx(expected, rel=0.02)


def test_psf_and_noise_follow_survey_distributions():
    from scipy import stats

    rngs = galaxy_rngs(3, range(400))
    n = len(rngs)
    pop = _pop(n)
    flux = np.ones((n, 3))
    _, info = render_images(pop, flux, flux, rngs, size=16, neighbours=0, noise=False)
    for j, band in enumerate(grid.BANDS):
        ref = stats.lognorm(*grid.PSF_SIGMA_LOGNORMAL[band][:1],
                            loc=grid.PSF_SIGMA_LOGNORMAL[band][1],
                            scale=grid.PSF_SIGMA_LOGNORMAL[band][2])
        assert stats.kstest(info["psf_sigma"][:, j], ref.cdf).pvalue > 1e-3
        shape, loc, scale = grid.NOISE_SIGMA_LOGNORMAL[band]
        ref = stats.lognorm(shape, loc=loc, scale=scale)
        assert stats.kstest(info["noise_sigma"][:, j], ref.cdf).pvalue > 1e-3


def test_inclined_disc_shape_and_orientation():
    pop = _pop(1, re_bulge=0.3, re_disc=4.0, q_disc=0.4, pa=30.0, q_bulge=1.0)
    fb = np.array([[0.0, 0.0, 0.0]])
    fd = np.array([[10.0, 10.0, 10.0]])
    img, info = render_images(pop, fb, fd, galaxy_rngs(1, [0]), size=128, neighbours=0,
                              noise=False)
    _, _, ixx, iyy, ixy = _moments(img[0, 1].astype(np.float64))
    angle = 0.5 * np.degrees(np.arctan2(2 * ixy, ixx - iyy))
    assert angle == pytest.approx(30.0, abs=2.0)
    lam = np.linalg.eigvalsh(np.array([[ixx, ixy], [ixy, iyy]]))
    assert np.sqrt(lam[0] / lam[1]) == pytest.approx(0.4, abs=0.08)


def test_noise_level_and_summed_flux():
    n = 6
    pop = _pop(n)
    fb = np.array([[20.0, 40.0, 60.0]] * n)
    fd = np.array([[20.0, 30.0, 40.0]] * n)
    img, info = render_images(pop, fb, fd, galaxy_rngs(2, range(n)), size=152, neighbours=0)
    corner = img[:, :, :30, :30].std(axis=(2, 3))
    assert np.allclose(corner, info["noise_sigma"], rtol=0.15)
    total = img.sum(axis=(2, 3), dtype=np.float64)
    sigma_sum = info["noise_sigma"] * 152 + np.sqrt(fb + fd) * 0.2
    assert np.all(np.abs(total - (fb + fd)) < 5 * sigma_sum)


def test_neighbours_add_sources():
    n = 20
    pop = _pop(n)
    flux = np.full((n, 3), 10.0)
    img, info = render_images(pop, flux, flux, galaxy_rngs(4, range(n)), size=96,
                              neighbours=2.0, noise=False)
    assert info["n_neighbours"].sum() > 10
    extra = img.sum(axis=(2, 3)) - 2 * flux
    assert np.all(extra[info["n_neighbours"] > 0] > 0)
    assert np.allclose(extra[info["n_neighbours"] == 0], 0, atol=1e-3)
