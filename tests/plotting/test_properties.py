import matplotlib
import numpy as np
import pytest
from astropy.table import Table
from matplotlib.figure import Figure
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from astroclip.plotting.properties import (plot_embedding_map, plot_predicted_vs_true,
                                           project_embeddings)

matplotlib.use("Agg")


def _r2_text(ax):
    texts = [t.get_text() for t in ax.texts if "R^2" in t.get_text()]
    assert len(texts) == 1
    return float(texts[0].split("=")[1].split()[0])


def test_predicted_vs_true_layout_and_r2(rng):
    z = rng.uniform(0, 0.6, 400)
    preds = {("k-NN", "image"): z + 0.05 * rng.normal(size=400),
             ("k-NN", "spectrum"): z + 0.01 * rng.normal(size=400),
             ("k-NN", "image->spectrum"): z + 0.08 * rng.normal(size=400)}
    fig = plot_predicted_vs_true(z, preds, label="redshift")
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3 and len(fig.axes) == 4  # 2 x 2 grid, one slot hidden
    titles = [ax.get_title() for ax in axes]
    assert "in-modality" in titles[0] and "image (k-NN)" in titles[0]
    assert titles[1] == "spectrum (k-NN)"
    assert "cross-modality" in titles[2] and "image \u2192 spectrum" in titles[2]
    for ax, pred in zip(axes, preds.values()):
        assert _r2_text(ax) == pytest.approx(r2_score(z, pred), abs=5e-4)
        assert ax.get_xlabel() == "true redshift"
    # density mode, tables with a named column, one row only
    t = Table({"Z": z})
    fig = plot_predicted_vs_true(t, {"spectrum": Table({"Z": preds[("k-NN", "spectrum")]})},
                                 name="Z", kind="density")
    (ax,) = fig.axes
    assert len(ax.collections) == 1 and ax.get_ylabel() == "predicted Z"
    # a single array
    fig = plot_predicted_vs_true(z, z, max_points=50)
    assert _r2_text(fig.axes[0]) == 1.0


def test_predicted_vs_true_bad_inputs(rng):
    z = rng.uniform(size=20)
    with pytest.raises(ValueError, match="one prediction per true value"):
        plot_predicted_vs_true(z, {"a": z[:10]})
    with pytest.raises(ValueError, match="several columns"):
        plot_predicted_vs_true(Table({"Z": z, "M": z}), z)
    with pytest.raises(ValueError, match="no column 'X'"):
        plot_predicted_vs_true(Table({"Z": z}), z, name="X")
    with pytest.raises(ValueError, match="kind"):
        plot_predicted_vs_true(z, z, kind="hex")
    bad = z.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        plot_predicted_vs_true(bad, z)


def test_project_embeddings(rng):
    x = rng.normal(size=(200, 10)) * np.linspace(5, 0.1, 10)
    xy = project_embeddings(x, normalize=False)
    assert xy.shape == (200, 2)
    # PCA: first axis carries more variance than the second, both centred
    assert xy[:, 0].var() > xy[:, 1].var()
    np.testing.assert_allclose(xy.mean(axis=0), 0, atol=1e-9)
    with threadpool_limits(1):  # OpenMP spinning on a busy machine costs seconds
        assert project_embeddings(x[:40], method="tsne", seed=0).shape == (40, 2)
    with pytest.raises(ValueError, match="unknown projection"):
        project_embeddings(x, method="mds")
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="umap-learn"):
            project_embeddings(x, method="umap")


def test_embedding_map(rng):
    n = 300
    z = rng.uniform(0, 0.5, n)
    latent = np.stack([np.cos(3 * z), np.sin(3 * z), z], axis=1)
    basis = rng.normal(size=(3, 8))
    emb = {"image": latent @ basis + 0.1 * rng.normal(size=(n, 8)),
           "spectrum": latent @ basis + 0.02 * rng.normal(size=(n, 8))}
    fig = plot_embedding_map(emb, Table({"Z": z, "LOG_MSTAR": 10 + z}), max_points=250)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 4  # 2 modalities x 2 colourings (+ 4 colour bars)
    assert [ax.get_title() for ax in panels[::2]] == ["image embeddings", "spectrum embeddings"]
    # the colour values are the (subsampled) property values
    offsets = panels[0].collections[-1]
    assert offsets.get_offsets().shape == (250, 2)
    assert set(np.round(offsets.get_array(), 12)) <= set(np.round(z, 12))
    fig = plot_embedding_map(emb["image"], z, label="redshift")
    assert fig.axes[1].get_ylabel() == "redshift"
    with_nan = z.copy()
    with_nan[:10] = np.nan
    fig = plot_embedding_map(emb["image"], with_nan)
    assert fig.axes[0].collections[0].get_offsets().shape == (10, 2)  # grey "no value"
    with pytest.raises(ValueError, match="one value per object"):
        plot_embedding_map(emb["image"], z[:10])
    with pytest.raises(ValueError, match="different dimensions"):
        plot_embedding_map({"a": emb["image"], "b": emb["image"][:, :4]}, z)
    with pytest.raises(ValueError, match="different numbers of objects"):
        plot_embedding_map({"a": emb["image"], "b": emb["image"][:10]}, z)
