"""The few-shot MLP head: seeded, early-stopped, built from models.heads.MLP."""

import numpy as np
import pytest
from astropy.table import Table
from sklearn.metrics import r2_score as sk_r2

from astroclip.evaluation import FewShotRegressor, fewshot_regression


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


def test_fewshot_head_is_the_models_mlp(rng):
    from astroclip.models.heads import MLP

    x = rng.normal(size=(60, 5))
    model = FewShotRegressor(hidden=(16, 8), dropout=0.2, max_epochs=2, device="cpu",
                             progress=False).fit(x, rng.normal(size=(60, 2)))
    assert isinstance(model._model, MLP)
    assert model._model.config == dict(in_features=5, hidden_features=[16, 8], out_features=2,
                                       activation="relu", dropout=0.2)
