import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table
from sklearn.metrics import r2_score as sk_r2
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import StandardScaler

from astroclip.properties import (FewShotRegressor, evaluate_properties, fewshot_regression,
                                  knn_regression, photometry_baseline, photometry_features,
                                  r2_score, r2_table)


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


def test_fewshot_learns_and_is_seeded(rng):
    x = rng.normal(size=(1200, 8)).astype(np.float32)
    y = {"A": np.sin(x[:, 0]) + 0.5 * x[:, 1], "B": 3 + x[:, 2] ** 2}
    ytr = {c: v[:1000] for c, v in y.items()}
    kw = dict(max_epochs=60, patience=8, device="cpu", progress=False, seed=3)
    p1, model = fewshot_regression(x[:1000], ytr, x[1000:], return_model=True, **kw)
    p2 = fewshot_regression(x[:1000], ytr, x[1000:], **kw)
    assert isinstance(p1, Table) and p1.colnames == ["A", "B"]
    np.testing.assert_array_equal(p1["A"], p2["A"])
    for c in ("A", "B"):
        assert sk_r2(y[c][1000:], p1[c]) > 0.9
    p3 = fewshot_regression(x[:1000], ytr, x[1000:], **{**kw, "seed": 4})
    assert not np.allclose(p1["A"], p3["A"])
    assert isinstance(model, FewShotRegressor)
    hist = model.history_
    assert 1 <= model.best_epoch_ <= len(hist) <= 60
    assert hist["val_loss"][model.best_epoch_ - 1] == np.min(hist["val_loss"])
    # global torch/numpy random state untouched by the seeded fit
    import torch
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    fewshot_regression(x[:100], y["A"][:100], x[:5], max_epochs=2, device="cpu",
                       progress=False)
    np.testing.assert_array_equal(torch.rand(3), before)


def test_fewshot_early_stopping_and_options(rng):
    x = rng.normal(size=(200, 4))
    y = rng.normal(size=200)  # pure noise: validation loss stops improving quickly
    model = FewShotRegressor(max_epochs=300, patience=3, device="cpu", progress=False)
    model.fit(x, y)
    assert len(model.history_) < 300
    assert len(model.history_) == model.best_epoch_ + 3
    no_val = FewShotRegressor(max_epochs=4, val_fraction=0, device="cpu",
                              progress=False).fit(x, y)
    assert len(no_val.history_) == 4 and no_val.best_epoch_ == 4
    assert no_val.predict(x[:3]).shape == (3,)
    with pytest.raises(RuntimeError, match="fit"):
        FewShotRegressor().predict(x)
    with pytest.raises(ValueError, match="dimension 5"):
        model.predict(rng.normal(size=(2, 5)))
    with pytest.raises(ValueError, match="dropout"):
        FewShotRegressor(dropout=1.5)
    y_nan = y.copy()
    y_nan[0] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*rows 0"):
        fewshot_regression(x, y_nan, x)
    with pytest.raises(ValueError, match="200 embeddings but 199 labels"):
        fewshot_regression(x, y[:199], x)
    with pytest.raises(ValueError, match="dimension 3 but train_embeddings 4"):
        fewshot_regression(x, y, x[:, :3])


def test_photometry_features_units():
    flux = np.array([[10.0, 100.0, 1000.0], [1.0, 1.0, 1.0]])
    f = photometry_features(flux)
    np.testing.assert_allclose(f[0], [20, 17.5, 15, 2.5, 2.5])
    np.testing.assert_allclose(f[1], [22.5, 22.5, 22.5, 0, 0])
    # a Quantity in Jy: 1 nanomaggy = 3631e-9 Jy
    np.testing.assert_allclose(photometry_features(flux * 3631e-9 * u.Jy), f, atol=1e-9)
    # a DESI FIBERMAP-like table with units
    t = Table({"FLUX_G": flux[:, 0], "FLUX_R": flux[:, 1], "FLUX_Z": flux[:, 2],
               "OTHER": [0, 0]})
    for band in "GRZ":
        t[f"FLUX_{band}"].unit = u.nanomaggy
    np.testing.assert_allclose(photometry_features(t), f)
    # AB magnitudes are taken as they are
    np.testing.assert_allclose(photometry_features(f[:, :3] * u.ABmag), f)
    with pytest.raises(ValueError, match=r"non-positive .* 2 objects \(g: 1, r: 0, z: 1; "
                                         r"rows 1, 3\).*drop"):
        photometry_features(np.array([[1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, -2.0]]))
    with pytest.raises(ValueError, match="not a flux density"):
        photometry_features(flux * u.m)
    with pytest.raises(ValueError, match="no g-band flux column"):
        photometry_features(Table({"FLUX_R": [1.0], "FLUX_Z": [1.0]}))
    with pytest.raises(ValueError, match=r"shape \(n_objects, 3\)"):
        photometry_features(flux[:, :2])


def test_photometry_baseline(rng):
    n = 800
    mass = rng.uniform(9, 11.5, n)
    colour = rng.uniform(0.2, 1.5, n)
    r = 10 ** (0.4 * (mass - 9)) * 5
    flux = np.stack([r * 10 ** (-0.4 * colour), r, r * 10 ** (0.4 * 0.5 * colour)], axis=1)
    pred = photometry_baseline(flux[:600], mass[:600], flux[600:], max_epochs=80,
                               device="cpu", progress=False)
    assert sk_r2(mass[600:], pred) > 0.9
    bad = flux.copy()
    bad[5, 1] = 0
    with pytest.raises(ValueError, match="rows 5"):
        photometry_baseline(bad[:600], mass[:600], flux[600:])


def test_r2_score_and_table(rng):
    y = rng.normal(size=(100, 2))
    p = y + 0.3 * rng.normal(size=(100, 2))
    np.testing.assert_allclose(r2_score(y, p), sk_r2(y, p, multioutput="raw_values"))
    assert r2_score(y[:, 0], p[:, 0]) == pytest.approx(sk_r2(y[:, 0], p[:, 0]))
    ty, tp = Table(y, names=["Z", "M"]), Table(p[:, ::-1], names=["M", "Z"])
    scores = r2_score(ty, tp)
    assert scores["Z"] == pytest.approx(sk_r2(y[:, 0], p[:, 0]))
    with pytest.raises(ValueError, match="constant"):
        r2_score(np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError, match="shape"):
        r2_score(y, p[:50])

    t = r2_table({
        ("MLP", "photometry"): {"Z": 0.69, "LOG_MSTAR": 0.65},
        ("k-NN", "image"): (ty.copy(), tp.copy()),
        ("k-NN", "spectrum"): {"Z": (y[:, 0], p[:, 0])},
    }, properties=["Z", "LOG_MSTAR", "M"])
    assert t.colnames == ["method", "modality", "Z", "LOG_MSTAR", "M"]
    assert list(t["method"]) == ["MLP", "k-NN", "k-NN"]
    assert t["Z"][0] == 0.69
    assert t["Z"][1] == pytest.approx(scores["Z"]) and t["M"][1] == pytest.approx(scores["M"])
    assert t["LOG_MSTAR"].mask.tolist() == [False, True, True]
    assert t.meta["metric"] == "R^2"
    with pytest.raises(ValueError, match="empty"):
        r2_table({})
    with pytest.raises(ValueError, match="name the columns"):
        r2_table({("k-NN", "x"): (y, p)})


def test_evaluate_properties(rng):
    n = 900
    z = rng.uniform(0, 0.6, n)
    mass = 9 + 2 * rng.uniform(size=n) + 2 * z
    latent = np.stack([z, mass - 10, np.cos(5 * z)], axis=1)
    basis = rng.normal(size=(3, 12))
    emb = {"spectrum": latent @ basis + 0.02 * rng.normal(size=(n, 12)),
           "image": latent @ basis + 0.3 * rng.normal(size=(n, 12))}
    flux = np.stack([10 ** (0.4 * mass - 3.5 - z), 10 ** (0.4 * mass - 3.5),
                     10 ** (0.4 * mass - 3.5 + z)], axis=1) * (1 + 0.05 * rng.normal(size=(n, 3)))
    labels = Table({"Z": z, "LOG_MSTAR": mass})
    tr, te = slice(0, 700), slice(700, n)
    table, pred = evaluate_properties(
        {m: e[tr] for m, e in emb.items()}, labels[tr], {m: e[te] for m, e in emb.items()},
        labels[te], train_photometry=flux[tr], test_photometry=flux[te], k=16,
        mlp_kwargs=dict(max_epochs=40, device="cpu"), progress=False)
    keys = list(zip(table["method"], table["modality"]))
    assert keys == [("MLP", "photometry"), ("k-NN", "spectrum"), ("k-NN", "image"),
                    ("k-NN", "spectrum->image"), ("k-NN", "image->spectrum"),
                    ("MLP", "spectrum"), ("MLP", "image")]
    assert set(pred) == set(keys)
    assert table.colnames == ["method", "modality", "Z", "LOG_MSTAR"]
    row = {k: i for i, k in enumerate(keys)}
    assert table["Z"][row[("k-NN", "spectrum")]] > 0.95
    assert table["Z"][row[("k-NN", "spectrum")]] > table["Z"][row[("k-NN", "image")]]
    np.testing.assert_allclose(
        table["LOG_MSTAR"][row[("k-NN", "image")]],
        sk_r2(mass[te], pred[("k-NN", "image")]["LOG_MSTAR"]))
    with pytest.raises(ValueError, match="same ones"):
        evaluate_properties({"image": emb["image"][tr]}, labels[tr],
                            {"spectrum": emb["spectrum"][te]}, labels[te])
    with pytest.raises(ValueError, match="named column"):
        evaluate_properties({"image": emb["image"][tr]}, z[tr], {"image": emb["image"][te]},
                            z[te])
