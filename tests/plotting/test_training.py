"""Figures of training runs (astroclip.plotting.training), from logs the tests write."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from astroclip.inputs import grid
from astroclip.plotting.training import (plot_cross_modal_retrievals, plot_training_curves,
                                         read_training_log)


def _log(folder, rows, header):
    (folder / "logs").mkdir(parents=True)
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in r) for r in rows]
    (folder / "logs" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_curves_of_an_alignment_run(tmp_path):
    header = ["epoch", "step", "train_loss", "val_loss", "val_image_to_spectrum_top1",
              "val_spectrum_to_image_top1"]
    rows = [(0, s, 3.0 - 0.1 * s, None, None, None) for s in range(10)]
    rows += [(0, 9, None, 2.5, 0.2, 0.25)]
    _log(tmp_path, rows, header)
    log = read_training_log(tmp_path)
    np.testing.assert_array_equal(log["val_loss"][1], [2.5])
    assert log["train_loss"][0].size == 10
    fig = plot_training_curves(tmp_path, smooth=3)
    assert len(fig.axes) == 2                    # losses, and retrieval accuracy
    plt.close(fig)


def test_curves_without_retrieval_metrics_have_one_panel(tmp_path):
    _log(tmp_path, [(0, s, 1.0 / (s + 1)) for s in range(5)], ["epoch", "step", "train_loss"])
    fig = plot_training_curves(tmp_path)
    assert len(fig.axes) == 1
    plt.close(fig)


def test_missing_or_empty_log_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training log"):
        read_training_log(tmp_path)
    _log(tmp_path, [], ["epoch", "step", "train_loss"])
    with pytest.raises(ValueError, match="no logged rows"):
        read_training_log(tmp_path)


def test_cross_modal_retrievals_layout(rng):
    n, d = 8, 4
    images = rng.normal(0, 0.1, (n, 3, 16, 16)).astype(np.float32)
    spectra = rng.normal(1, 0.1, (n, grid.N_PIXELS)).astype(np.float32)
    zi = rng.normal(size=(n, d))
    fig = plot_cross_modal_retrievals(images, spectra, zi, zi + 0.01 * rng.normal(size=(n, d)),
                                      n_queries=2, k=2)
    assert len(fig.axes) == 4                    # per query: the image and the spectra
    plt.close(fig)
