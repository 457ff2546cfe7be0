"""Tests of astroclip.inputs.spectra: the pipeline (inputs, units, uncertainties, masks, errors)."""

import numpy as np
import pytest
import astropy.units as u
from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty
from astropy.table import Table

from astroclip.inputs import grid
from astroclip.inputs.resample import edges_from_centres, resample_flux_conserving
from astroclip.inputs.spectra import PreparedSpectra, prepare_spectra

FU = grid.FLUX_UNIT


def smooth_flux(wave):
    """A smooth positive spectrum (1e-17 erg/s/cm2/A) with a broad emission line."""
    wave = np.asarray(wave, dtype=np.float64)
    return (2.0 + np.sin(wave / 400.0) + 0.5 * (wave / 5000.0)
            + 3.0 * np.exp(-0.5 * ((wave - 6563.0) / 15.0) ** 2))


def spectrum(flux, wave, **kwargs):
    from specutils import Spectrum
    return Spectrum(flux=flux, spectral_axis=wave, **kwargs)


# ----------------------------------------------------------------------------------------
# prepare_spectra: inputs and units
# ----------------------------------------------------------------------------------------

def _reference_prepared(n_spec=2):
    wave = np.linspace(3400.0, 10100.0, 9000)
    flux = np.stack([smooth_flux(wave) * (1 + 0.1 * k) for k in range(n_spec)])
    sigma = 0.05 * flux
    return wave, flux, sigma


def test_identical_output_whatever_the_units():
    wave, flux, sigma = _reference_prepared()
    wq = wave * u.AA
    f_lam = flux * FU
    s_lam = sigma * FU
    ref = prepare_spectra(f_lam, wavelength=wq, uncertainty=s_lam)
    cases = {
        "nm, W/m2/nm": (wq.to(u.nm), f_lam.to(u.W / u.m**2 / u.nm), s_lam.to(u.W / u.m**2 / u.nm)),
        "um, f_lambda": (wq.to(u.um), f_lam, s_lam),
        "Hz, f_nu": (wq.to(u.Hz, u.spectral()),
                     f_lam.to(u.erg / u.s / u.cm**2 / u.Hz, u.spectral_density(wq)),
                     s_lam.to(u.erg / u.s / u.cm**2 / u.Hz, u.spectral_density(wq))),
        "eV, Jy": (wq.to(u.eV, u.spectral()), f_lam.to(u.Jy, u.spectral_density(wq)),
                   s_lam.to(u.mJy, u.spectral_density(wq))),
    }
    for name, (w, f, s) in cases.items():
        got = prepare_spectra(f, wavelength=w, uncertainty=s)
        # identical to float32 rounding (the ivar is computed in float64 when converted)
        np.testing.assert_allclose(got.flux, ref.flux, rtol=1e-6,
                                   atol=1e-7 * np.abs(ref.flux).max(), err_msg=name)
        np.testing.assert_allclose(got.ivar, ref.ivar, rtol=1e-6, err_msg=name)
    # and the Jy / Hz input is an f_nu spectrum descending in wavelength: reversed, not rejected
    assert np.all(np.diff(cases["Hz, f_nu"][0].value) < 0)
    # plain arrays with explicit units
    arr = prepare_spectra(flux, wavelength=wave, wavelength_unit="Angstrom",
                          flux_unit="1e-17 erg/(s cm2 Angstrom)",
                          uncertainty=StdDevUncertainty(sigma))
    np.testing.assert_array_equal(arr.flux, ref.flux)
    np.testing.assert_array_equal(arr.ivar, ref.ivar)


def test_uncertainty_types_give_the_same_ivar():
    wave, flux, sigma = _reference_prepared(1)
    common = dict(wavelength=wave * u.AA)
    f = flux * FU
    std = prepare_spectra(f, uncertainty=StdDevUncertainty(sigma), **common)
    var = prepare_spectra(f, uncertainty=VarianceUncertainty(sigma**2), **common)
    ivr = prepare_spectra(f, uncertainty=InverseVariance(sigma**-2), **common)
    ivq = prepare_spectra(f, ivar=(sigma**-2) * FU**-2, **common)
    # an ivar Quantity in another unit: (1e-17 erg/s/cm2/A)^-2 == 1e-6 (1e-20 ...)^-2
    iv_other = prepare_spectra(f.to(1e-20 * u.erg / u.s / u.cm**2 / u.AA),
                               ivar=(sigma**-2 * 1e-6) * (1e-20 * u.erg / u.s / u.cm**2 / u.AA)**-2,
                               **common)
    for other in (var, ivr, ivq, iv_other):
        np.testing.assert_allclose(other.ivar, std.ivar, rtol=2e-6)
        np.testing.assert_allclose(other.flux, std.flux, rtol=2e-6, atol=1e-6)
    # the ivar of a pixel is that of the weighted mean of the input pixels
    assert std.meta["IVAR_KNOWN"][0]
    assert std.ivar.dtype == np.float32 and std.flux.dtype == np.float32


def test_spectrum_inputs_1d_2d_and_lists():
    wave, flux, sigma = _reference_prepared(3)
    wq = wave * u.AA
    two_d = prepare_spectra(spectrum(flux * FU, wq, uncertainty=StdDevUncertainty(sigma)))
    assert two_d.flux.shape == (3, grid.N_PIXELS) and len(two_d) == 3
    one = prepare_spectra(spectrum(flux[1] * FU, wq, uncertainty=StdDevUncertainty(sigma[1])))
    np.testing.assert_array_equal(one.flux[0], two_d.flux[1])
    lst = prepare_spectra([spectrum(flux[0] * FU, wq, uncertainty=StdDevUncertainty(sigma[0])),
                           spectrum(flux[1:] * FU, wq, uncertainty=StdDevUncertainty(sigma[1:]))])
    np.testing.assert_array_equal(lst.flux, two_d.flux)
    assert lst.meta["ITEM"].tolist() == [0, 1, 1]
    assert lst.meta["ITEM_ROW"].tolist() == [0, 0, 1]
    assert lst.meta["INDEX"].tolist() == [0, 1, 2]
    # a Spectrum in Jy on a frequency axis gives the same result
    freq = wq.to(u.THz, u.spectral())
    jy = prepare_spectra(spectrum((flux * FU).to(u.Jy, u.spectral_density(wq)), freq,
                                  uncertainty=StdDevUncertainty(
                                      (sigma * FU).to_value(u.Jy, u.spectral_density(wq)))))
    np.testing.assert_allclose(jy.flux, two_d.flux, rtol=2e-5, atol=1e-6 * flux.max())


def test_spectrumlist_arms_are_combined_by_inverse_variance():
    from specutils import SpectrumList

    wave_b = np.arange(3600.0, 5800.01, 0.8)
    wave_r = np.arange(5760.0, 7620.01, 0.8)
    flux_b = np.full((2, wave_b.size), 1.0)
    flux_r = np.full((2, wave_r.size), 4.0)
    ivar_b = np.full(flux_b.shape, 1.0)
    ivar_r = np.full(flux_r.shape, 3.0)
    arms = SpectrumList([spectrum(flux_b * FU, wave_b * u.AA, uncertainty=InverseVariance(ivar_b)),
                         spectrum(flux_r * FU, wave_r * u.AA, uncertainty=InverseVariance(ivar_r))])
    prep = prepare_spectra(arms, min_coverage=0.5)
    w = grid.WAVELENGTH
    overlap = (w >= 5760) & (w <= 5800)
    only_b = w < 5759
    only_r = (w > 5801) & (w <= 7620)
    beyond = w > 7621
    np.testing.assert_allclose(prep.flux[:, overlap], (1 * 1 + 4 * 3) / 4, rtol=1e-6)
    np.testing.assert_allclose(prep.ivar[:, overlap], 4.0, rtol=1e-6)
    np.testing.assert_allclose(prep.flux[:, only_b], 1.0, rtol=1e-6)
    np.testing.assert_allclose(prep.flux[:, only_r], 4.0, rtol=1e-6)
    assert np.all(prep.ivar[:, beyond] == 0) and np.all(prep.flux[:, beyond] == 0)
    np.testing.assert_allclose(prep.meta["COVERAGE"], (7620 - 3600) / 0.8 / 7781 + 1 / 7781,
                               rtol=1e-4)
    # the same arms as a plain list are separate spectra
    with pytest.raises(ValueError, match="cover"):
        prepare_spectra(list(arms))
    sep = prepare_spectra(list(arms), min_coverage=0.2)
    assert len(sep) == 4


def test_lists_of_spectrumlists_are_stacked_sets_of_arms():
    from specutils import SpectrumList

    wave_b = np.arange(3600.0, 5800.01, 0.8)
    wave_r = np.arange(5760.0, 9824.01, 0.8)

    def arms(n, level, filename=None):
        meta = {} if filename is None else {"filename": filename}
        return SpectrumList([
            spectrum(np.full((n, w.size), level) * FU, w * u.AA,
                     uncertainty=InverseVariance(np.ones((n, w.size))),
                     meta={"band": band, **meta})
            for w, band in ((wave_b, "B"), (wave_r, "R"))])

    first, second = arms(2, 1.0), arms(3, 5.0)
    both = prepare_spectra([first, second])
    assert len(both) == 5
    assert both.meta["ITEM"].tolist() == [0, 0, 1, 1, 1]
    assert both.meta["ITEM_ROW"].tolist() == [0, 1, 0, 1, 2]
    np.testing.assert_array_equal(both.flux[:2], prepare_spectra(first).flux)
    np.testing.assert_array_equal(both.flux[2:], prepare_spectra(second).flux)
    # an arm's meta "filename" names it in messages
    bad = arms(1, 1.0, filename="coadd-x.fits")
    bad[1] = spectrum(np.ones((1, wave_r.size)) * u.count, wave_r * u.AA,
                      uncertainty=InverseVariance(np.ones((1, wave_r.size))),
                      meta={"band": "R", "filename": "coadd-x.fits"})
    with pytest.raises(u.UnitsError, match="coadd-x.fits arm R flux unit ct .*not flux-"):
        prepare_spectra([first, bad])
    with pytest.raises(ValueError, match="cannot be used with a list of SpectrumLists"):
        prepare_spectra([first, second], mask=np.zeros((5, 10), bool))


def test_outside_coverage_and_without_uncertainty():
    wave = np.arange(3000.0, 7000.0, 1.0)
    prep = prepare_spectra(smooth_flux(wave) * FU, wavelength=wave * u.AA)
    inside = grid.WAVELENGTH_EDGES[:-1] < 6999.5      # last input pixel edge
    assert np.all(prep.ivar[0, inside] == 1.0)
    assert np.all(prep.ivar[0, ~inside] == 0) and np.all(prep.flux[0, ~inside] == 0)
    assert not prep.meta["IVAR_KNOWN"][0]
    np.testing.assert_allclose(prep.meta["COVERAGE"][0], inside.mean(), atol=2 / 7781)


def test_masks_nan_counts_and_flagging():
    wave, flux, sigma = _reference_prepared(3)
    flux[0, 100:150] = np.nan
    mask = np.zeros(flux.shape, bool)
    mask[1, 500:520] = True
    flux[2] = np.nan
    with pytest.raises(ValueError, match=r"row 2: all flux values are NaN"):
        prepare_spectra(flux * FU, wavelength=wave * u.AA, uncertainty=sigma * FU, mask=mask)
    prep = prepare_spectra(flux * FU, wavelength=wave * u.AA, uncertainty=sigma * FU,
                           mask=mask, on_invalid="flag")
    assert prep.meta["VALID"].tolist() == [True, True, False]
    assert prep.meta["PROBLEM"][2] == "all flux values are NaN or infinite"
    edges = edges_from_centres(wave)
    on_grid = (edges[1:] > grid.WAVELENGTH_EDGES[0]) & (edges[:-1] < grid.WAVELENGTH_EDGES[-1])
    assert prep.meta["N_MASKED"][1] == 20
    assert prep.meta["N_MASKED"][0] == on_grid[100:150].sum()
    assert prep.meta["N_MASKED"][2] == on_grid.sum()
    assert np.all(prep.flux[2] == 0) and np.all(prep.ivar[2] == 0)
    assert np.all(np.isfinite(prep.flux)) and np.all(np.isfinite(prep.ivar))


def test_meta_prepared_container_and_to_spectrum():
    wave, flux, sigma = _reference_prepared(3)
    prep = prepare_spectra(flux * FU, wavelength=wave * u.AA, uncertainty=sigma * FU,
                           meta={"TARGETID": [7, 8, 9]})
    assert prep.meta["TARGETID"].tolist() == [7, 8, 9]
    assert isinstance(prep, PreparedSpectra)
    assert prep.wavelength.unit == u.AA and prep.wavelength.shape == (grid.N_PIXELS,)
    sub = prep[1:]
    assert len(sub) == 2 and sub.meta["TARGETID"].tolist() == [8, 9]
    assert prep[0].flux.shape == (1, grid.N_PIXELS)
    spec = prep.to_spectrum()
    assert spec.flux.shape == (3, grid.N_PIXELS) and spec.flux.unit == FU
    with pytest.raises(ValueError, match="clashes"):
        prepare_spectra(flux * FU, wavelength=wave * u.AA, meta=Table({"VALID": [1, 2, 3]}))
    with pytest.raises(ValueError, match="meta has 2 rows"):
        prepare_spectra(flux * FU, wavelength=wave * u.AA, meta={"TARGETID": [1, 2]})


def test_explicit_edges_and_descending_wavelength():
    wave, flux, sigma = _reference_prepared(1)
    ref = prepare_spectra(flux * FU, wavelength=wave * u.AA, uncertainty=sigma * FU)
    rev = prepare_spectra(flux[:, ::-1] * FU, wavelength=wave[::-1] * u.AA,
                          uncertainty=sigma[:, ::-1] * FU)
    np.testing.assert_array_equal(rev.flux, ref.flux)
    edges = edges_from_centres(wave)
    ed = prepare_spectra(flux * FU, wavelength=edges * u.AA, uncertainty=sigma * FU)
    np.testing.assert_allclose(ed.flux, ref.flux, rtol=1e-6)


# ----------------------------------------------------------------------------------------
# Bad input: clear exceptions naming the problem and the fix
# ----------------------------------------------------------------------------------------

WAVE = np.linspace(3500.0, 10000.0, 4000)
FLUX = smooth_flux(WAVE)


@pytest.mark.parametrize("flux, kwargs, exc, match", [
    (FLUX, dict(wavelength=WAVE * u.AA), u.UnitsError, "no unit.*flux_unit="),
    (FLUX * FU, dict(wavelength=WAVE), u.UnitsError, "wavelength_unit="),
    (FLUX * u.count, dict(wavelength=WAVE * u.AA), u.UnitConversionError,
     "not flux-calibrated"),
    (FLUX * u.Jy / u.sr, dict(wavelength=WAVE * u.AA), u.UnitConversionError,
     "surface brightness.*solid angle"),
    (FLUX * u.erg / u.s / u.cm**2, dict(wavelength=WAVE * u.AA), u.UnitConversionError,
     "not a flux density"),
    (FLUX * u.ABmag, dict(wavelength=WAVE * u.AA), u.UnitConversionError, "logarithmic"),
    (FLUX * FU, dict(wavelength=WAVE * u.s), u.UnitConversionError,
     "not a wavelength, frequency"),
    (FLUX * FU, dict(wavelength=WAVE * u.AA, uncertainty=FLUX * 0.1 * u.Jy / u.sr),
     u.UnitConversionError, "uncertainty unit"),
])
def test_bad_units(flux, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        prepare_spectra(flux, **kwargs)


def test_spectrum_without_units_or_in_pixels():
    with pytest.raises(u.UnitsError, match="no unit"):
        prepare_spectra(spectrum(FLUX * u.dimensionless_unscaled, WAVE * u.AA))
    ok = prepare_spectra(spectrum(FLUX * u.dimensionless_unscaled, WAVE * u.AA),
                         flux_unit=FU)
    assert ok.meta["VALID"][0]
    with pytest.raises(u.UnitConversionError, match="pixels"):
        prepare_spectra(spectrum(FLUX * FU, np.arange(FLUX.size) * u.pix))


@pytest.mark.parametrize("wave, match", [
    (np.where(np.arange(WAVE.size) == 10, WAVE[9], WAVE), "duplicate"),
    (np.concatenate([WAVE[:100], WAVE[200:300], WAVE[100:200], WAVE[300:]]), "not monotonic"),
    (np.where(np.arange(WAVE.size) == 5, np.nan, WAVE), "non-finite"),
])
def test_bad_wavelengths(wave, match):
    with pytest.raises(ValueError, match=match):
        prepare_spectra(FLUX * FU, wavelength=wave * u.AA)


def test_empty_all_nan_and_coverage():
    with pytest.raises(ValueError, match="empty"):
        prepare_spectra(np.zeros((2, 0)) * FU, wavelength=np.zeros(0) * u.AA)
    with pytest.raises(ValueError, match="no spectra"):
        prepare_spectra([])
    with pytest.raises(ValueError, match="NaN.*on_invalid='flag'"):
        prepare_spectra(np.full(WAVE.size, np.nan) * FU, wavelength=WAVE * u.AA)
    with pytest.raises(ValueError, match="do not overlap the DESI grid.*observed frame"):
        prepare_spectra(FLUX * FU, wavelength=WAVE * u.nm)          # 35-100 um
    with pytest.raises(ValueError, match="cover .* less than min_coverage"):
        prepare_spectra(FLUX * FU, wavelength=np.linspace(8000, 12000, WAVE.size) * u.AA)
    part = prepare_spectra(FLUX * FU, wavelength=np.linspace(8000, 12000, WAVE.size) * u.AA,
                           min_coverage=0.2)
    assert 0.2 < part.meta["COVERAGE"][0] < 0.3
    # enough wavelength range but too few valid pixels: invalid spectrum
    ivar = np.ones(WAVE.size)
    ivar[: int(0.7 * WAVE.size)] = 0
    with pytest.raises(ValueError, match="coverage below min_coverage"):
        prepare_spectra(FLUX * FU, wavelength=WAVE * u.AA, ivar=ivar)
    with pytest.raises(ValueError, match="min_coverage"):
        prepare_spectra(FLUX * FU, wavelength=WAVE * u.AA, min_coverage=2)


def test_bad_uncertainties_and_shapes():
    with pytest.raises(ValueError, match="negative inverse variance"):
        prepare_spectra(FLUX * FU, wavelength=WAVE * u.AA, ivar=-np.ones(WAVE.size))
    with pytest.raises(ValueError, match="negative standard deviation"):
        prepare_spectra(FLUX * FU, wavelength=WAVE * u.AA,
                        uncertainty=StdDevUncertainty(-np.ones(WAVE.size)))
    with pytest.raises(ValueError, match="zero variance.*mask"):
        prepare_spectra(FLUX * FU, wavelength=WAVE * u.AA,
                        uncertainty=StdDevUncertainty(np.zeros(WAVE.size)))
    with pytest.raises(ValueError, match=r"ivar has shape \(3999,\).*one ivar value per"):
        prepare_spectra(FLUX * FU, wavelength=WAVE * u.AA, ivar=np.ones(WAVE.size - 1))
    with pytest.raises(ValueError, match="4002 values for 4000 flux pixels"):
        prepare_spectra(FLUX * FU, wavelength=np.linspace(3500, 10000, 4002) * u.AA)
    with pytest.raises(TypeError, match="ambiguous.*StdDevUncertainty"):
        prepare_spectra(FLUX * FU, wavelength=WAVE * u.AA, uncertainty=np.ones(WAVE.size))
    with pytest.raises(ValueError, match="either uncertainty= or ivar="):
        prepare_spectra(FLUX * FU, wavelength=WAVE * u.AA, uncertainty=FLUX * FU,
                        ivar=np.ones(WAVE.size))
    with pytest.raises(ValueError, match="on_invalid"):
        prepare_spectra(FLUX * FU, wavelength=WAVE * u.AA, on_invalid="drop")
    with pytest.raises(ValueError, match="negative"):
        resample_flux_conserving(WAVE, FLUX, -np.ones(WAVE.size))
    with pytest.raises(TypeError, match="prepare_spectra"):
        resample_flux_conserving(WAVE, FLUX * FU)
