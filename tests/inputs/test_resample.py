"""Tests of astroclip.inputs.resample: exact overlaps, flux conservation, specutils agreement."""

import warnings

import numpy as np
import astropy.units as u
from astropy.nddata import InverseVariance

from astroclip.inputs import grid
from astroclip.inputs.resample import (edges_from_centres, overlap_matrix, overlap_operator,
                                       resample_flux_conserving)

from .test_spectra import FU, smooth_flux, spectrum


def test_overlap_matrix_exact_fractions():
    m = overlap_matrix(np.array([0.0, 1.0, 3.0, 3.5]), np.array([0.5, 2.0, 3.25, 10.0]))
    np.testing.assert_allclose(m.toarray(), [[0.5, 1.0, 0.0],
                                             [0.0, 1.0, 0.25],
                                             [0.0, 0.0, 0.25]])
    assert edges_from_centres([1.0, 2.0, 4.0]).tolist() == [0.5, 1.5, 3.0, 5.0]


def test_identity_grid_is_a_copy(rng):
    flux = rng.normal(size=(3, grid.N_PIXELS)).astype(np.float32)
    ivar = rng.uniform(1, 2, size=flux.shape).astype(np.float32)
    f, iv = resample_flux_conserving(grid.WAVELENGTH, flux, ivar)
    np.testing.assert_allclose(f, flux, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(iv, ivar, rtol=1e-6)


def test_total_flux_conserved(rng):
    # irregular input pixels whose outer edges are the grid's outer edges
    inner = np.sort(rng.uniform(grid.WAVELENGTH_EDGES[0], grid.WAVELENGTH_EDGES[-1], 9000))
    edges = np.concatenate([[grid.WAVELENGTH_EDGES[0]], inner, [grid.WAVELENGTH_EDGES[-1]]])
    centres = 0.5 * (edges[1:] + edges[:-1])
    flux = np.stack([smooth_flux(centres), 1.0 + smooth_flux(centres[::-1])])
    f, iv = resample_flux_conserving(edges, flux, np.ones_like(flux))
    total_in = (flux * np.diff(edges)).sum(axis=1)
    total_out = (f.astype(np.float64) * grid.WAVE_STEP).sum(axis=1)
    np.testing.assert_allclose(total_out, total_in, rtol=1e-6)
    assert np.all(iv > 0)
    # coarser grid with any partial range of whole output pixels: conserved too
    out = np.linspace(4000.0, 9000.0, 301)
    f2, _ = resample_flux_conserving(edges, flux, out_edges=out)
    sel = (edges[:-1] >= 4000) & (edges[1:] <= 9000)
    inside = (flux[:, sel] * np.diff(edges)[sel]).sum(axis=1)
    np.testing.assert_allclose((f2 * np.diff(out)).sum(axis=1), inside,
                               rtol=2e-4)  # only the two end pixels are split


def test_matches_specutils_flux_conserving_resampler(rng):
    from specutils.manipulation import FluxConservingResampler

    resampler = FluxConservingResampler(extrapolation_treatment="nan_fill")
    out_centres = grid.wavelength_grid()[(grid.WAVELENGTH > 4000) & (grid.WAVELENGTH < 4300)]
    out_edges = edges_from_centres(out_centres.value)
    # finer (0.37 A) and coarser (1.9 A) input grids, offset from the output grid
    for step in (0.37, 1.9):
        wave = np.arange(3990.123, 4310.0, step)
        flux = smooth_flux(wave) + rng.normal(0, 0.3, wave.size)
        ivar = rng.uniform(0.5, 4.0, wave.size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = resampler(spectrum(flux * FU, wave * u.AA,
                                     uncertainty=InverseVariance(ivar)), out_centres)
        ref_flux = ref.flux.value
        ref_ivar = ref.uncertainty.array
        f, iv = resample_flux_conserving(wave, flux[None], ivar[None], out_edges=out_edges)
        valid = np.isfinite(ref_flux) & np.isfinite(ref_ivar)
        assert valid.sum() > 0.9 * out_centres.size
        np.testing.assert_allclose(f[0][valid], ref_flux[valid], rtol=1e-5,
                                   atol=1e-5 * np.abs(ref_flux[valid]).max())
        np.testing.assert_allclose(iv[0][valid], ref_ivar[valid], rtol=1e-5)


def test_masked_and_ivar_zero_pixels_carry_no_weight():
    wave = np.arange(3500.0, 10000.0, 0.5)
    flux = np.vstack([smooth_flux(wave)] * 3)
    ivar = np.ones_like(flux)
    flux[0, 1000:1100] = 1e6          # masked below: must not leak
    mask = np.zeros(flux.shape, bool)
    mask[0, 1000:1100] = True
    flux[1, 2000:2100] = np.nan       # non-finite
    ivar[2, 3000:3100] = 0.0          # no information
    f, iv = resample_flux_conserving(wave, flux, ivar, mask=mask)
    assert np.all(np.isfinite(f)) and np.all(np.isfinite(iv))
    ref, _ = resample_flux_conserving(wave, smooth_flux(wave), np.ones(wave.size))
    for row, lo in ((0, 1000), (1, 2000), (2, 3000)):
        lo_w, hi_w = wave[lo] - 0.25, wave[lo + 100] - 0.25   # edges of the bad run
        inside = (grid.WAVELENGTH_EDGES[:-1] >= lo_w) & (grid.WAVELENGTH_EDGES[1:] <= hi_w)
        assert np.all(iv[row, inside] == 0) and np.all(f[row, inside] == 0)
        outside = (grid.WAVELENGTH_EDGES[1:] <= lo_w) | (grid.WAVELENGTH_EDGES[:-1] >= hi_w)
        np.testing.assert_allclose(f[row, outside], ref[outside], rtol=1e-6)


def test_per_spectrum_grids_are_grouped(rng):
    w0 = np.arange(3500.0, 10000.0, 0.5)
    w1 = np.linspace(3500.3, 9999.0, w0.size)
    wave2d = np.stack([w0, w1, w0])
    flux = smooth_flux(wave2d) + rng.normal(0, 0.1, wave2d.shape)
    f, iv = resample_flux_conserving(wave2d, flux, np.ones_like(flux))
    for k in range(3):
        fk, ivk = resample_flux_conserving(wave2d[k], flux[k], np.ones(w0.size))
        np.testing.assert_array_equal(f[k], fk)
        np.testing.assert_array_equal(iv[k], ivk)


def test_threads_give_the_same_result_and_the_operator_is_cached(rng):
    wave = np.arange(3500.0, 10000.0, 0.5) + 0.123
    flux = smooth_flux(wave) + rng.normal(0, 0.3, (300, wave.size))
    ivar = rng.uniform(0.5, 4.0, flux.shape)
    one = resample_flux_conserving(wave, flux, ivar, workers=1)
    two = resample_flux_conserving(wave, flux, ivar, workers=3)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    edges = edges_from_centres(wave)
    assert overlap_operator(edges, grid.WAVELENGTH_EDGES) is overlap_operator(
        edges.copy(), grid.WAVELENGTH_EDGES)
