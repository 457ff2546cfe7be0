"""Spectra, photometry and noise of the mock survey against their physical definitions."""

import numpy as np
import pytest

from astroclip.inputs import grid
from astroclip.simulate import spectra as S
from astroclip.simulate.population import draw_population, galaxy_rngs
from astroclip.simulate.survey import SurveyConfig, generate_chunk
from astroclip.simulate.templates import model_wavelength


@pytest.fixture(scope="module")
def chunk():
    config = SurveyConfig(seed=11, neighbours=0.0, image_size=64)
    arrays, truth = generate_chunk(config, 0, 48)
    pop = draw_population(galaxy_rngs(11, range(48)), **config.limits)
    return config, arrays, truth, pop


def test_catalogue_photometry_is_synthetic_photometry_of_the_model(chunk):
    import speclite.filters

    _, _, truth, pop = chunk
    bulge, disc, emission = S.model_spectra(pop)
    total = bulge + disc + emission
    wave = model_wavelength()
    filters = speclite.filters.load_filters("decam2014-g", "decam2014-r", "decam2014-z")
    for i in range(0, 48, 7):
        ref = np.array([f.get_ab_maggies(total[i] * 1e-17, wave) for f in filters]) * 1e9
        got = [truth["FLUX_G"][i], truth["FLUX_R"][i], truth["FLUX_Z"][i]]
        assert np.allclose(got, ref, rtol=1e-9)


def test_observed_spectrum_matches_fibre_photometry_within_noise(chunk):
    from astroclip.simulate.photometry import filter_weights
    from astroclip.simulate.templates import desi_slice

    _, arrays, truth, _ = chunk
    w_all = filter_weights(("decam2014-r",))[:, 0]
    w = w_all[desi_slice()]
    assert w.sum() / w_all.sum() > 0.999   # the r curve lies inside the DESI grid
    good = arrays["ivar"] > 0
    flux = np.where(good, arrays["flux"], 0.0)
    measured = flux @ w
    sigma = np.sqrt(np.where(good, 1 / np.where(good, arrays["ivar"], 1), 0.0) @ w**2)
    # the r filter lies inside the DESI grid: the fibre model gives FIBERFLUX_R (minus
    # the few masked pixels, < 1%)
    expected = np.asarray(truth["FIBERFLUX_R"])
    pull = (measured - expected) / np.sqrt(sigma**2 + (0.02 * expected) ** 2)
    assert np.median(np.abs(pull)) < 1.5
    assert np.all(np.abs(pull) < 6)
    assert np.all(truth["FIBERFLUX_R"] < truth["FLUX_R"])


def test_emission_lines_at_redshifted_wavelengths(chunk):
    _, _, truth, pop = chunk
    _, _, emission = S.model_spectra(pop, milky_way=False)
    wave = model_wavelength()
    strong = np.argsort(np.asarray(truth["HALPHA_FLUX"]))[-10:]
    for i in strong:
        for name in ("HALPHA", "OIII_5007", "HBETA"):
            centre = (1 + truth["Z"][i]) * S.EMISSION_LINES[name]
            win = np.abs(wave - centre) < 3.0
            if not win.any() or emission[i, win].max() <= 0:
                continue
            peak = wave[win][np.argmax(emission[i, win])]
            assert abs(peak - centre) <= grid.WAVE_STEP
    # the integrated line flux is conserved by the pixel integration
    i = strong[-1]
    lines = S.line_fluxes({k: v[i:i + 1] for k, v in pop.items()})
    assert emission[i].sum() * grid.WAVE_STEP == pytest.approx(lines.sum(), rel=1e-3)


def test_observed_line_in_noisy_spectrum(chunk):
    _, arrays, truth, _ = chunk
    i = int(np.argmax(np.asarray(truth["HALPHA_FLUX"]) * (np.asarray(truth["Z"]) < 0.45)))
    centre = (1 + truth["Z"][i]) * S.EMISSION_LINES["HALPHA"]
    j = int(np.argmin(np.abs(grid.WAVELENGTH - centre)))
    line = arrays["flux"][i, j - 3:j + 4].mean()
    cont = np.median(arrays["flux"][i, j + 60:j + 160])
    assert line > cont


def test_line_ratios_follow_physics():
    pop = {"sfr": np.array([1.0, 1.0]), "log_oh": np.array([8.3, 9.0]),
           "a_halpha": np.array([0.0, 1.0]), "line_scatter": np.zeros((2, 3)),
           "lum_dist_mpc": np.array([500.0, 500.0])}
    f = dict(zip(S.EMISSION_LINES, S.line_fluxes(pop).T))
    assert f["HALPHA"][0] / f["HBETA"][0] == pytest.approx(2.86)          # case B, no dust
    assert f["HALPHA"][1] / f["HBETA"][1] > 2.86 * 1.3                      # dust reddening
    assert f["OIII_5007"][0] / f["OIII_4959"][0] == pytest.approx(2.98)
    n2 = f["NII_6584"] / f["HALPHA"]
    assert n2[1] > n2[0]                                                    # metal-rich
    # Kennicutt & Evans (2012): 1 Msun/yr gives L(H-alpha) = 10^41.27 erg/s
    d_cm = 500 * 3.0856775814913673e24
    assert f["HALPHA"][0] * 1e-17 * 4 * np.pi * d_cm**2 == pytest.approx(10**41.27, rel=1e-9)


def test_lsf_and_extinction():
    sig = S.desi_lsf_sigma()
    resolution = grid.WAVELENGTH / (2.3548 * sig)
    assert 1500 < resolution[0] < 3500 and 3500 < resolution[-1] < 7000
    assert S.cardelli_extinction(5495.0) == pytest.approx(1.0, abs=0.01)
    assert S.cardelli_extinction(4400.0) - S.cardelli_extinction(5500.0) == \
        pytest.approx(1 / 3.1, abs=0.03)


def test_noise_model_reproduces_real_desi_ivar():
    model = S.desi_noise_model()
    ratios = []
    for t, flux, ivar, _ in S._read_coadds():
        ok = ivar > 0
        src = np.clip(S._running_median(flux, 51), 0, None)
        var = (model["sky"] + src) / (model["gain"] * t) \
            + model["read_noise2"] / (model["gain"] * t) ** 2
        ratios.append(np.median(var[ok] * ivar[ok]))
    # one median sky for all fibres: each real fibre within its conditions' spread
    assert 0.85 < np.median(ratios) < 1.2
    assert all(0.4 < r < 2.5 for r in ratios)
    # the inferred sky is a plausible night-sky brightness in r (mag/arcsec^2)
    wave = grid.WAVELENGTH
    band = (wave > 5700) & (wave < 7000)
    f_lambda = np.median(model["sky"][band]) * 1e-17 / (np.pi * 0.75**2)
    f_nu = f_lambda * 6300.0**2 / 2.99792458e18
    mu = -2.5 * np.log10(f_nu) - 48.6
    assert 18.5 < mu < 22.0


def test_masked_pixels_and_ivar(chunk):
    _, arrays, truth, _ = chunk
    masked = arrays["ivar"] == 0
    assert masked.any()
    assert np.all(arrays["flux"][masked] == 0)
    assert masked.mean() < 0.02
    assert arrays["flux"].dtype == np.float32 and arrays["ivar"].dtype == np.float32
    assert np.all(np.isfinite(arrays["flux"])) and np.all(arrays["ivar"] >= 0)
    assert np.all((truth["EXPTIME"] > 30) & (truth["EXPTIME"] < 1000))
