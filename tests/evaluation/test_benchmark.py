"""The Table-1 benchmark: r2_table and evaluate_properties."""

import numpy as np
import pytest
from astropy.table import Table
from sklearn.metrics import r2_score as sk_r2

from astroclip.evaluation import evaluate_properties, r2_score, r2_table


def test_r2_table(rng):
    y = rng.normal(size=(100, 2))
    p = y + 0.3 * rng.normal(size=(100, 2))
    ty, tp = Table(y, names=["Z", "M"]), Table(p[:, ::-1], names=["M", "Z"])
    scores = r2_score(ty, tp)
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
