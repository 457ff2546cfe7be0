"""Templates, SDSS population fit, volume weights and per-galaxy draws of the mock survey."""

import numpy as np
import pytest

from astroclip.inputs import grid
from astroclip.simulate import population as P
from astroclip.simulate.templates import desi_slice, load_templates, model_wavelength


def test_model_grid_contains_desi_grid():
    wave = model_wavelength()
    assert np.array_equal(wave[desi_slice()], grid.WAVELENGTH)
    assert wave[0] < 3330 and wave[-1] > 10990  # covers the DECam curves


def test_template_lines_removed():
    t = load_templates()
    ha = np.searchsorted(t.wave, 6564.6)
    # the star-forming template has a strong H-alpha line, gone after cleaning
    k = int(np.argmax(t.m300))
    raw = t.flux_with_lines[k, ha - 2:ha + 3].max() / t.flux_with_lines[k, ha - 15]
    clean = t.flux[k, ha - 2:ha + 3].max() / t.flux[k, ha - 15]
    assert raw > 3 and clean < 1.1
    # away from lines nothing changed
    far = np.searchsorted(t.wave, 5500.0)
    assert np.allclose(t.flux[:, far], t.flux_with_lines[:, far])


def test_nnls_batch_matches_scipy(rng):
    from scipy.optimize import nnls

    a = rng.random((30, 6, 4))
    b = rng.standard_normal((30, 6))
    x, chi2 = P.nnls_batch(a, b)
    for i in range(30):
        ref, rnorm = nnls(a[i], b[i])
        assert np.allclose(x[i], ref, atol=1e-8)
        assert chi2[i] == pytest.approx(rnorm**2, rel=1e-6, abs=1e-10)


def test_population_fit_is_physical():
    pop = P.population_model()
    assert 8000 < len(pop) <= 10000
    assert np.all(pop.coeffs >= 0) and np.all(pop.weight > 0)
    assert 10.4 < np.median(pop.log_mstar) < 11.2        # SDSS main sample
    assert np.median(pop.chi2) < 6                        # 5 bands, 5 templates, floors
    # star-forming and quenched galaxies both present (bimodal sSFR)
    ssfr = pop.sfr / 10**pop.log_mstar
    assert 0.2 < np.mean(ssfr > 1e-11) < 0.8


def test_volume_weights_are_consistent():
    """Real galaxies sit uniformly in their own Vmax: <V/Vmax> = 0.5."""
    pop = P.population_model()
    _, _, vol = P._interp_tables(np.concatenate([[0.01], pop.z]))
    ratio = (vol[1:] - vol[0]) * pop.weight
    assert np.all(ratio <= 1 + 1e-9)
    assert abs(ratio.mean() - 0.5) < 0.05


def test_draws_are_per_galaxy_and_deterministic():
    a = P.draw_population(P.galaxy_rngs(7, range(0, 12)))
    b = P.draw_population(P.galaxy_rngs(7, range(5, 9)))
    for key in ("z", "coeffs", "re_disc", "pa", "ebv"):
        assert np.array_equal(a[key][5:9], b[key])
    c = P.draw_population(P.galaxy_rngs(8, range(0, 12)))
    assert not np.allclose(a["z"], c["z"])


def test_draws_respect_limits_and_relations():
    d = P.draw_population(P.galaxy_rngs(1, range(400)), zmin=0.05, zmax=0.3, rmin=15.0,
                          rmax=18.0)
    assert d["z"].min() >= 0.05 and d["z"].max() <= 0.3
    assert np.all((d["bulge_frac"] >= 0) & (d["bulge_frac"] <= 1))
    assert np.allclose(d["coeffs_bulge"] + d["coeffs_disc"], d["coeffs"])
    # the bulge holds the older stars: redder-weighted templates
    t = load_templates()
    young = t.m1000
    mb = d["coeffs_bulge"] @ t.mremain
    md = d["coeffs_disc"] @ t.mremain
    both = (mb > 0.1 * d["mstar"]) & (md > 0.1 * d["mstar"])
    age_b = (d["coeffs_bulge"] @ young)[both] / (d["coeffs_bulge"] @ np.ones(5))[both]
    age_d = (d["coeffs_disc"] @ young)[both] / (d["coeffs_disc"] @ np.ones(5))[both]
    assert np.mean(age_b <= age_d + 1e-12) > 0.95
    # sizes grow with mass (Shen et al. 2003)
    slope = np.polyfit(d["log_mstar"], np.log10(d["re_disc_kpc"]), 1)[0]
    assert 0.05 < slope < 0.5


def test_impossible_limits_raise():
    with pytest.raises(ValueError, match="no galaxy"):
        P.draw_population(P.galaxy_rngs(0, range(2)), zmin=0.5, zmax=0.6, rmin=-np.inf,
                          rmax=10.5)
