"""Spectral indices against their definitions (Lick/IDS, Worthey & Ottaviani, Balogh et al.)."""

import astropy.units as u
import numpy as np
import pytest

from astroclip.exceptions import InputError, UnitsError
from astroclip.simulate.indices import INDICES, air_to_vacuum, measure_indices, vacuum_to_air

WAVE = np.arange(3500.0, 7000.0, 0.37)


def gaussian_line(wave, centre, ew, sigma):
    return 1 - ew / np.sqrt(2 * np.pi * sigma**2) * np.exp(-0.5 * ((wave - centre) / sigma) ** 2)


def test_flat_spectrum_has_no_absorption_and_analytic_breaks():
    flat = np.ones_like(WAVE)
    out = measure_indices(WAVE, flat)
    for name, d in INDICES.items():
        if d.kind == "ew" or d.kind == "mag":
            assert abs(out[name]) < 1e-9, name
    # F_lambda constant: F_nu ~ lambda^2, so Dn4000 is the ratio of the band means of lambda^2
    d = INDICES["Dn4000"]
    blue, red = air_to_vacuum(np.array(d.blue)), air_to_vacuum(np.array(d.red))
    expected = ((red[1]**3 - red[0]**3) / (red[1] - red[0])) / \
        ((blue[1]**3 - blue[0]**3) / (blue[1] - blue[0]))
    assert out["Dn4000"] == pytest.approx(expected, rel=1e-4)
    # F_nu constant (F_lambda ~ lambda^-2): no break at all
    assert measure_indices(WAVE, WAVE**-2.0, names="Dn4000")["Dn4000"] == pytest.approx(1, 1e-4)


@pytest.mark.parametrize("name, centre", [("Mgb", 5177.0), ("Fe5270", 5268.0),
                                          ("NaD", 5893.0), ("HdeltaA", 4102.0)])
def test_equivalent_width_of_a_gaussian_line(name, centre):
    flux = gaussian_line(WAVE, centre, 2.5, 2.0)
    out = measure_indices(WAVE, flux, names=[name], medium="air")
    assert out[name] == pytest.approx(2.5, rel=2e-3)
    # the same spectrum in vacuum wavelengths gives the same index with medium="vacuum"
    vac = measure_indices(air_to_vacuum(WAVE), flux, names=[name])
    assert vac[name] == pytest.approx(out[name], rel=1e-3)
    # and a sloped continuum does not change it (the pseudo-continuum is a straight line)
    sloped = flux * (1 + 1e-4 * (WAVE - 5000))
    assert measure_indices(WAVE, sloped, names=[name], medium="air")[name] == \
        pytest.approx(2.5, rel=5e-3)


def test_magnitude_index():
    d = INDICES["Mg2"]
    width = d.band[1] - d.band[0]
    flux = np.where((WAVE > d.band[0]) & (WAVE < d.band[1]), 0.8, 1.0)
    value = measure_indices(WAVE, flux, names="Mg2", medium="air")["Mg2"]
    # the band is 80% deep except for the partial edge pixels
    assert value == pytest.approx(-2.5 * np.log10(0.8), abs=0.37 / width)


def test_redshift_units_and_spectrum_input():
    from astropy.nddata import InverseVariance
    from specutils import Spectrum

    rest = gaussian_line(WAVE, 5177.0, 3.0, 2.5)
    z = 0.3
    obs_wave = WAVE * (1 + z)
    ref = measure_indices(WAVE, rest, names=["Mgb", "Dn4000"])
    got = measure_indices((obs_wave * u.AA).to(u.nm), rest / (1 + z), redshift=z,
                          names=["Mgb", "Dn4000"])
    for k in ref:
        assert got[k] == pytest.approx(ref[k], rel=1e-6)
    spec = Spectrum(flux=rest * 1e-17 * u.erg / u.s / u.cm**2 / u.AA, spectral_axis=WAVE * u.AA,
                    uncertainty=InverseVariance(np.full(WAVE.size, 1e4) / 1e-34))
    out = measure_indices(spec, names=["Mgb"])
    plain = measure_indices(WAVE, rest, np.full(WAVE.size, 1e4), names=["Mgb"])
    assert out["Mgb"] == pytest.approx(ref["Mgb"], rel=1e-6)
    assert out["Mgb_ERR"] == pytest.approx(plain["Mgb_ERR"], rel=1e-6)


def test_uncertainties_match_the_scatter_of_noisy_spectra(rng):
    clean = gaussian_line(WAVE, 4102.0, 3.0, 3.0) * gaussian_line(WAVE, 5177.0, 4.0, 3.0)
    sigma = 0.05
    noisy = clean + sigma * rng.standard_normal((400, WAVE.size))
    ivar = np.full_like(noisy, sigma**-2)
    out = measure_indices(WAVE, noisy, ivar, names=["HdeltaA", "Mgb", "Dn4000", "Mg2"])
    for k in ("HdeltaA", "Mgb", "Dn4000", "Mg2"):
        assert np.std(out[k]) == pytest.approx(np.median(out[k + "_ERR"]), rel=0.15), k


def test_masked_pixels_and_coverage(rng):
    flux = gaussian_line(WAVE, 5177.0, 3.0, 2.5)
    ivar = np.ones_like(flux)
    ivar[(WAVE > 5170) & (WAVE < 5172)] = 0           # a few masked pixels: still measured
    value = measure_indices(WAVE, flux, ivar, names="Mgb")["Mgb"]
    assert np.isfinite(value)
    short = WAVE < 5000                                 # the band is off the spectrum
    with pytest.warns(UserWarning, match="NaN"):
        out = measure_indices(WAVE[short], flux[short], names=["Mgb", "Dn4000"])
    assert np.isnan(out["Mgb"]) and np.isfinite(out["Dn4000"])


def test_air_vacuum_round_trip():
    lam = np.array([3934.777, 5895.924, 6564.614])
    assert np.allclose(air_to_vacuum(vacuum_to_air(lam)), lam, rtol=1e-12)
    assert air_to_vacuum(6562.80) == pytest.approx(6564.61, abs=0.01)


def test_bad_input():
    flux = np.ones_like(WAVE)
    with pytest.raises(InputError, match="unknown spectral index.*'Mgbb'.*choose among"):
        measure_indices(WAVE, flux, names=["Mgbb"])
    with pytest.raises(InputError, match="ivar has shape"):
        measure_indices(WAVE, flux, np.ones(10))
    with pytest.raises(InputError, match="medium"):
        measure_indices(WAVE, flux, medium="water")
    with pytest.raises(UnitsError, match="not a spectral unit"):
        measure_indices(WAVE * u.kg, flux)
    with pytest.raises(UnitsError, match="not a flux density"):
        measure_indices(WAVE, flux * u.kg)
    with pytest.raises(InputError, match="strictly increasing"):
        measure_indices(WAVE[::-1], flux)
    with pytest.raises(InputError, match="needs flux"):
        measure_indices(WAVE)
