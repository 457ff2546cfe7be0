"""Realism of the mock survey against real galaxies and the paper's photometry baseline."""

import numpy as np
import pytest
from scipy.stats import ks_2samp

from astroclip.simulate import simulate_catalog
from astroclip.simulate.population import shen_late_re_kpc
from astroclip.evaluation import photometry_baseline, r2_score
from astroclip.simulate.validation import mock_sdss_sample, real_sdss_sample


@pytest.fixture(scope="module")
def bgs():
    return simulate_catalog(3000, seed=21)


def test_redshift_and_colour_distributions_match_real_sdss():
    real = real_sdss_sample()
    mock = mock_sdss_sample(3000, seed=9)
    assert len(mock) > 700
    ks_z = ks_2samp(mock["Z"], real["Z"]).statistic
    ks_gr = ks_2samp(mock["G_R"], real["G_R"]).statistic
    ks_m = ks_2samp(mock["LOG_MSTAR"], real["LOG_MSTAR"]).statistic
    assert ks_z < 0.08
    assert ks_gr < 0.13
    assert ks_m < 0.1
    # the colour bimodality: both the red sequence and the blue cloud are populated
    for sample in (mock, real):
        gr = np.asarray(sample["G_R"])
        assert 0.1 < np.mean(gr < 0.7) < 0.4


def test_bgs_redshift_distribution(bgs):
    z = np.asarray(bgs["Z"])
    # DESI BGS Bright (r < 19.5): median redshift about 0.2, tail to z ~ 0.5
    assert 0.16 < np.median(z) < 0.24
    assert 0.3 < np.percentile(z, 95) < 0.5
    assert z.max() <= 0.6


def test_size_mass_relation(bgs):
    disc = np.asarray(bgs["BT_R"]) < 0.3
    logm = np.asarray(bgs["LOG_MSTAR_TRUE"])[disc]
    size = np.asarray(bgs["R_HALF_KPC"])[disc]
    sel = np.abs(logm - 10.5) < 0.2
    ref, _ = shen_late_re_kpc(10**10.5)
    assert 0.6 * ref < np.median(size[sel]) < 1.5 * ref
    assert np.polyfit(logm, np.log10(size), 1)[0] > 0.05


def _baseline_r2(catalog, **mlp_kwargs):
    """R^2 of the paper's photometry baseline: first 75 % of the rows train, the rest test."""
    ntr = int(0.75 * len(catalog))
    labels = catalog["Z", "LOG_MSTAR"]
    pred = photometry_baseline(catalog[:ntr], labels[:ntr], catalog[ntr:], device="cpu",
                               progress=False, **mlp_kwargs)
    return r2_score(labels[ntr:], pred)


def test_photometry_baseline_fast(bgs):
    r2 = _baseline_r2(bgs, hidden=(32, 32))
    assert 0.55 < r2["Z"] < 0.85
    assert 0.55 < r2["LOG_MSTAR"] < 0.85


@pytest.mark.slow
def test_photometry_baseline_paper_range():
    cat = simulate_catalog(8000, seed=33)
    r2 = _baseline_r2(cat)
    assert 0.6 < r2["Z"] < 0.8
    assert 0.6 < r2["LOG_MSTAR"] < 0.8
