"""Figures of the mock survey (astroclip.plotting.survey)."""

import numpy as np

from astroclip.plotting.survey import (plot_colour_redshift, plot_mock_images,
                                       plot_mock_spectra, plot_size_mass)
from astroclip.simulate import SurveyConfig, generate_chunk


def test_survey_figures():
    import matplotlib.pyplot as plt
    from astropy.table import Table

    arrays, truth = generate_chunk(SurveyConfig(seed=2, image_size=48), 0, 4)
    fig = plot_mock_images(arrays["image"], truth, n=4, ncols=2, crop=32)
    assert len([ax for ax in fig.axes if ax.images]) == 4
    fig2 = plot_mock_spectra(arrays["flux"], arrays["ivar"], truth["Z"], n=2)
    assert len(fig2.axes) == 2
    # H-alpha of the first galaxy is marked at (1 + z) 6564.6 A when on the grid
    z = float(truth["Z"][0])
    marks = [line.get_xdata()[0] for line in fig2.axes[0].lines[2:]]
    if 6564.6 * (1 + z) < 9824:
        assert np.any(np.isclose(marks, 6564.6 * (1 + z)))
    rng = np.random.default_rng(0)
    sample = Table({"Z": rng.uniform(0, 0.2, 200), "G_R": rng.uniform(0.3, 1.2, 200)})
    fig3 = plot_colour_redshift(sample, sample)
    assert "KS statistic 0.000" in fig3.axes[2].get_title()
    fig4 = plot_size_mass(truth)
    assert fig4.axes[0].get_yscale() == "log"
    plt.close("all")


def test_realism_figures():
    import matplotlib.pyplot as plt

    from astroclip.inputs import grid
    from astroclip.plotting.survey import (plot_coadd_comparison, plot_feature_zoom,
                                           plot_stack_comparison)

    rng = np.random.default_rng(1)
    wave = np.arange(3400.0, 7000.0, 0.4)
    line = 1 - 0.3 * np.exp(-0.5 * ((wave - 5177.0) / 3.0) ** 2)
    stack = {"wave": wave, "flux": line, "ivar": np.full(wave.size, 1e4)}
    fig = plot_stack_comparison(stack, stack)
    assert len(fig.axes) == 5 and "Mgb: " in fig.axes[0].get_title()
    flux = 1 + 0.05 * rng.standard_normal((30, grid.N_PIXELS))
    ivar = np.full_like(flux, 400.0)
    real = {"flux": flux[0], "ivar": ivar[0], "z": 0.2, "targetid": 7}
    fig2 = plot_coadd_comparison(real, flux[1:], ivar[1:], np.full(29, 0.2))
    assert "real DESI 7" in fig2.axes[0].get_legend().get_texts()[1].get_text()
    assert len(fig2.axes) == 1 + 4 + 3 + 1
    fig3 = plot_feature_zoom([dict(stack, label="a"), dict(stack, label="b", colour="r")])
    assert fig3.axes[0].get_ylabel() == "a" and len(fig3.axes) == 4
    plt.close("all")
