"""Zero-shot k-NN regression: the released protocol, checked against scikit-learn."""

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table
from sklearn.metrics import r2_score as sk_r2
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import StandardScaler

from astroclip.evaluation import knn_regression


def _sklearn_knn(xtr, ytr, xte, k, weights):
    scaler = StandardScaler().fit(xtr)
    reg = KNeighborsRegressor(n_neighbors=k, weights=weights).fit(scaler.transform(xtr), ytr)
    return reg.predict(scaler.transform(xte))


@pytest.mark.parametrize("weights", ["distance", "uniform"])
def test_knn_matches_sklearn(rng, weights):
    xtr = rng.normal(size=(600, 10)) * rng.uniform(0.1, 5, 10) + rng.normal(size=10)
    ytr = np.stack([xtr[:, 0] ** 2, np.sin(xtr[:, 1])], axis=1)
    xte = rng.normal(size=(80, 10)) * 2
    xte[:5] = xtr[:5]  # exact matches: zero distance
    ours = knn_regression(xtr, ytr, xte, k=20, weights=weights, progress=False)
    ref = _sklearn_knn(xtr, ytr, xte, 20, weights)
    assert ours.shape == (80, 2)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    if weights == "distance":
        # a query equal to a training point takes that point's label
        np.testing.assert_allclose(ours[:5], ytr[:5])


def test_knn_forms_and_batches(rng):
    x = rng.normal(size=(300, 6))
    z = x[:, 0] + 0.1 * x[:, 1]
    mass = 10 + x[:, 2]
    labels = Table({"Z": z, "LOG_MSTAR": mass})
    labels["LOG_MSTAR"].unit = u.dex(u.Msun)
    out = knn_regression(x[:200], labels[:200], x[200:], k=8, batch_size=17, progress=False)
    assert isinstance(out, Table) and out.colnames == ["Z", "LOG_MSTAR"]
    assert out["LOG_MSTAR"].unit == u.dex(u.Msun)
    one = knn_regression(x[:200], z[:200], x[200:], k=8, progress=False)
    assert one.shape == (100,)
    np.testing.assert_allclose(out["Z"], one)
    d = knn_regression(x[:200], {"Z": z[:200]}, x[200:], k=8, progress=False)
    np.testing.assert_allclose(d["Z"], one)
    q = knn_regression(x[:200], z[:200] * u.km, x[200:], k=8, progress=False)
    assert q.unit == u.km
    # standardize=False changes the metric when dimensions have different scales
    xs = x * np.array([100, 1, 1, 1, 1, 1])
    a = knn_regression(xs[:200], z[:200], xs[200:], k=8, progress=False)
    b = knn_regression(xs[:200], z[:200], xs[200:], k=8, standardize=False, progress=False)
    np.testing.assert_allclose(a, one, rtol=1e-6)
    assert not np.allclose(a, b)
    # approximate IVF search with every list probed is exact
    c = knn_regression(x[:200], z[:200], x[200:], k=8, kind="ivf", nlist=4, nprobe=4,
                       progress=False)
    np.testing.assert_allclose(c, one, rtol=1e-6)


def test_knn_cross_modal_learns(rng):
    n = 1500
    z = rng.uniform(0, 0.6, n)
    basis = rng.normal(size=(3, 16))
    latent = np.stack([np.cos(4 * z), np.sin(4 * z), z], axis=1)
    spectra = latent @ basis + 0.01 * rng.normal(size=(n, 16))
    images = latent @ basis + 0.05 * rng.normal(size=(n, 16))
    pred = knn_regression(spectra[:1000], z[:1000], images[1000:], k=16, progress=False)
    assert sk_r2(z[1000:], pred) > 0.95


def test_knn_bad_inputs(rng):
    x = rng.normal(size=(50, 4))
    y = rng.normal(size=50)
    y_nan = y.copy()
    y_nan[[3, 10, 11]] = np.nan
    with pytest.raises(ValueError, match=r"NaN .* in 3 of 50 .*rows 3, 10, 11.*drop"):
        knn_regression(x, y_nan, x, k=3)
    t = Table({"Z": y, "LOG_MSTAR": y_nan})
    with pytest.raises(ValueError, match=r"LOG_MSTAR: 3 \(rows 3, 10, 11\)"):
        knn_regression(x, t, x, k=3)
    with pytest.raises(ValueError, match=r"k=51 is larger .* \(50\)"):
        knn_regression(x, y, x, k=51)
    with pytest.raises(ValueError, match="dimension 5 but train_embeddings 4"):
        knn_regression(x, y, rng.normal(size=(5, 5)))
    with pytest.raises(ValueError, match="50 embeddings but 40 labels"):
        knn_regression(x, y[:40], x, k=3)
    with pytest.raises(ValueError, match="weights"):
        knn_regression(x, y, x, weights="gaussian")
    xbad = x.copy()
    xbad[7, 1] = np.inf
    with pytest.raises(ValueError, match="rows 7"):
        knn_regression(xbad, y, x, k=3)
    masked = np.ma.array(y, mask=np.arange(50) == 4)
    with pytest.raises(ValueError, match=r"masked .*rows 4"):
        knn_regression(x, masked, x, k=3)
