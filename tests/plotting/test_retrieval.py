import numpy as np
import pytest

from astroclip.plotting.retrieval import plot_retrieval, retrieval_neighbours


@pytest.fixture
def data(rng):
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    return dict(images=rng.random((30, 3, 24, 24)).astype(np.float32) * 0.1,
                spectra=rng.random((30, 7781)).astype(np.float32),
                image_embeddings=emb,
                spectrum_embeddings=emb + 0.01 * rng.normal(size=emb.shape).astype(np.float32))


def test_neighbours_exclude_self_in_modal_and_find_counterpart(data):
    hits = retrieval_neighbours(3, image_embeddings=data["image_embeddings"],
                                spectrum_embeddings=data["spectrum_embeddings"], k=4)
    in_rows, in_scores = hits["image->image"]
    cross_rows, _ = hits["image->spectrum"]
    assert 3 not in in_rows and len(in_rows) == 4
    assert np.all(np.diff(in_scores) <= 1e-6)
    assert cross_rows[0] == 3  # the query's own spectrum is the best cross-modal match


def test_plot_retrieval_figure(data):
    fig = plot_retrieval(5, k=3, redshifts=np.linspace(0, 0.5, 30), query_modality="spectrum",
                         **data)
    assert len(fig.axes) == 2 * (1 + 3 + 1)
    assert "spectrum" in fig._suptitle.get_text()


def test_plot_retrieval_bad_inputs(data):
    with pytest.raises(ValueError, match="query_modality"):
        plot_retrieval(0, query_modality="radio", **data)
    bad = dict(data, images=data["images"][:, :2])
    with pytest.raises(ValueError, match="g, r, z"):
        plot_retrieval(0, **bad)
    with pytest.raises(ValueError, match="outside"):
        retrieval_neighbours(99, image_embeddings=data["image_embeddings"],
                             spectrum_embeddings=data["spectrum_embeddings"])
