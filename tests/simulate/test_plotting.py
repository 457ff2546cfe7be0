"""Figures of the mock survey."""

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
