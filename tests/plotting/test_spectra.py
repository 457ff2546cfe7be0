"""Figures of the spectrum transformer (astroclip.plotting.spectra), random tiny models."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from astroclip.inputs import grid
from astroclip.models.spectrum import SpectrumEmbedder, SpectrumEncoder
from astroclip.plotting.spectra import (plot_mask_filling, plot_reconstruction,
                                        plot_spectrum_attention)

TINY = dict(embed_dim=16, num_layers=1, num_heads=2)


@pytest.fixture
def flux(rng):
    wave = grid.WAVELENGTH
    return (2.0 + np.sin(wave / 200.0) + rng.normal(0, 0.2, wave.size)).astype(np.float32)


def test_mask_filling_shades_the_masked_tokens(flux):
    model = SpectrumEncoder(**TINY).eval()
    mask = np.zeros(model.n_tokens, bool)
    mask[[3, 4, 40]] = True                      # two masked runs
    fig = plot_mask_filling(model, flux, mask=mask, redshift=0.1)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("wavelength")
    assert len(ax.patches) == 2                  # one shaded span per masked run
    plt.close(fig)


def test_reconstruction_rejects_mismatched_lengths(flux):
    with pytest.raises(ValueError, match="must have one shape"):
        plot_reconstruction(flux, flux[:-5], np.zeros(flux.size, bool))


@pytest.mark.parametrize("cls", [SpectrumEncoder, SpectrumEmbedder])
def test_attention_one_panel_per_head(cls, flux):
    torch.manual_seed(0)
    model = (SpectrumEncoder(**TINY) if cls is SpectrumEncoder
             else SpectrumEmbedder(backbone=TINY, pooling=dict(embed_dim=8, num_heads=2))).eval()
    fig = plot_spectrum_attention(model, flux)
    assert len([a for a in fig.axes if a.get_ylabel() == "weight"]) == 2
    plt.close(fig)
