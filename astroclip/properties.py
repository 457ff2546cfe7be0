"""Galaxy properties from embeddings: zero-shot k-NN, few-shot MLP, photometry baseline.

The protocol is the one of the AstroCLIP paper and its released code:

- zero-shot: k-nearest-neighbour regression on the embeddings, standardised
  with the training set's mean and standard deviation, Euclidean distance,
  ``k = 64`` neighbours weighted by inverse distance (`knn_regression`);
- few-shot: a small MLP head (hidden layers [64, 64], ReLU, dropout 0.1, Adam
  with learning rate 1e-3, mean squared error on standardised targets) trained
  on the embeddings, with early stopping on a validation fraction
  (`fewshot_regression`, `FewShotRegressor`);
- baseline: the same MLP on the g, r, z photometry alone (`photometry_baseline`);
- metric: the coefficient of determination R^2 on a held-out split, laid out like
  the paper's Table 1 (`r2_table`, `evaluate_properties`).

Targets may be one property (a 1-D array) or several at once: a 2-D array, a
dict of arrays or an astropy `~astropy.table.Table` with one column per
property (e.g. ``Z`` and ``LOG_MSTAR``); predictions come back in the same form.
"""

import copy
import math
import warnings

import numpy as np
from astropy import units as u
from astropy.table import MaskedColumn, Table

from .exceptions import AstroclipWarning, InputError, NonFiniteError
from .inputs.grid import BANDS, NANOMAGGY, NANOMAGGY_EQUIVALENCY
from ._arrays import as_embeddings as _as_embeddings, rows_text as _rows_text
from ._progress import progress_bar
from .search import SimilarityIndex

__all__ = [
    "knn_regression",
    "fewshot_regression",
    "FewShotRegressor",
    "photometry_features",
    "photometry_baseline",
    "r2_score",
    "r2_table",
    "evaluate_properties",
]


# ----------------------------------------------------------------------------
# targets: 1-D array, 2-D array, dict or Table  <->  (n, t) float64 matrix
# ----------------------------------------------------------------------------

class _Targets:
    """Targets as an (n, t) float64 matrix plus what is needed to give them back."""

    def __init__(self, targets, *, name):
        self.name = name
        self.units = None
        if isinstance(targets, Table) or isinstance(targets, dict):
            names = list(targets.keys()) if isinstance(targets, dict) else targets.colnames
            if not names:
                raise InputError(f"{name} has no columns")
            cols, units = [], []
            for col in names:
                values, unit = _column_values(targets[col], name=f"{name}[{col!r}]")
                if values.ndim != 1:
                    raise InputError(f"{name}[{col!r}] must be one value per object; got "
                                     f"shape {values.shape}")
                cols.append(values)
                units.append(unit)
            lengths = {len(c) for c in cols}
            if len(lengths) != 1:
                raise InputError(f"the columns of {name} have different lengths {sorted(lengths)}")
            self.form, self.names, self.units = "table", names, units
            self.values = np.stack(cols, axis=1)
        else:
            values, unit = _column_values(targets, name=name)
            if values.ndim == 1:
                self.form, self.values = "1d", values[:, None]
            elif values.ndim == 2:
                self.form, self.values = "2d", values
            else:
                raise InputError(f"{name} must be 1-D (one property) or 2-D (n_objects, "
                                 f"n_properties); got shape {values.shape}")
            self.names = [f"target{i}" for i in range(self.values.shape[1])]
            self.units = [unit] * self.values.shape[1]
        self._check_finite()

    def __len__(self):
        return self.values.shape[0]

    def _check_finite(self):
        bad = ~np.isfinite(self.values)
        if bad.any():
            parts = []
            for j, col in enumerate(self.names):
                rows = np.flatnonzero(bad[:, j])
                if rows.size:
                    shown = _rows_text(rows)
                    label = col if self.form == "table" else f"column {j}"
                    parts.append(f"{label}: {rows.size} (rows {shown})")
            nrows = int(bad.any(axis=1).sum())
            raise InputError(f"{self.name} has NaN or infinite labels in {nrows} of "
                             f"{len(self)} objects ({'; '.join(parts)}); drop these objects "
                             "from the embeddings and the labels first, e.g. keep = "
                             "np.isfinite(labels) and use embeddings[keep], labels[keep]")

    def wrap(self, matrix):
        """Give predictions (n, t) back in the form the targets came in."""
        if self.form == "table":
            out = Table()
            for j, col in enumerate(self.names):
                out[col] = matrix[:, j]
                if self.units[j] is not None:
                    out[col].unit = self.units[j]
            return out
        out = matrix[:, 0] if self.form == "1d" else matrix
        if self.units[0] is not None:
            return out * self.units[0]
        return out


def _column_values(values, *, name):
    unit = None
    if isinstance(values, u.Quantity):
        unit = values.unit
        values = values.value
    elif getattr(values, "unit", None) is not None:  # astropy Column
        unit = values.unit
    if isinstance(values, (np.ma.MaskedArray, MaskedColumn)):
        mask = np.ma.getmaskarray(values)
        if mask.any():
            rows = np.flatnonzero(mask if mask.ndim == 1 else mask.any(axis=1))
            shown = _rows_text(rows)
            raise InputError(f"{name} has {int(mask.sum())} masked labels (rows {shown}); "
                             "drop these objects from the embeddings and labels first")
        values = np.ma.getdata(values)
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numbers; got dtype {arr.dtype}")
    return arr.astype(np.float64), unit


def _check_pair(embeddings, targets, *, what):
    if embeddings.shape[0] != len(targets):
        raise InputError(f"{what}: {embeddings.shape[0]} embeddings but {len(targets)} labels; "
                         "give one label per embedding, in the same order")


def _standardizer(x, *, enabled=True):
    """Mean and std (float64) of the columns of x; constant columns get std 1."""
    if not enabled:
        return np.zeros(x.shape[1]), np.ones(x.shape[1])
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[~(std > 0)] = 1.0
    return mean, std


def _apply(x, mean, std):
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


# ----------------------------------------------------------------------------
# zero-shot: k-NN
# ----------------------------------------------------------------------------

def knn_regression(train_embeddings, train_targets, test_embeddings, *, k=64,
                   weights="distance", standardize=True, kind="flat", nlist=None,
                   nprobe=None, batch_size=16384, progress=None):
    """Zero-shot k-nearest-neighbour regression on embeddings.

    The released AstroCLIP protocol: the embeddings are standardised with the
    training set's mean and standard deviation (per dimension), neighbours are
    found by Euclidean distance and their labels averaged with weights 1/distance.
    The result is the same as scikit-learn's
    ``KNeighborsRegressor(n_neighbors=k, weights="distance")`` on
    ``StandardScaler``-ed embeddings (a test object at distance 0 from some
    training objects takes the mean of their labels), but the neighbour search
    runs on FAISS (exact `faiss.IndexFlatL2`, multi-threaded BLAS) so that it
    scales to millions of objects; the distances of the ``k`` neighbours are
    then recomputed in float64 for the weights.

    Train and test embeddings may come from different modalities of the same
    aligned model (cross-modal regression: e.g. image queries, spectrum
    neighbours, as in the paper's Figures 4b and 5b).

    Parameters
    ----------
    train_embeddings : array-like (N, D)
        Embeddings with known labels (the "database").
    train_targets : array-like (N,) or (N, T), dict or `~astropy.table.Table`
        Their labels: one property, or several (one column each).
    test_embeddings : array-like (M, D)
        Embeddings to predict.
    k : int, optional
        Number of neighbours (default 64, at most N).
    weights : {"distance", "uniform"}, optional
        Inverse-distance weights (default) or a plain mean.
    standardize : bool, optional
        Standardise the embeddings with the training mean and std (default).
    kind : {"flat", "ivf"}, optional
        Exact search (default) or FAISS's approximate inverted-file index (for
        tens of millions of training objects; see `~astroclip.search.SimilarityIndex`).
    nlist, nprobe : int, optional
        IVF parameters.
    batch_size : int, optional
        Test objects per search batch.
    progress : bool, optional
        Progress bar over batches (default: ``conf.progress``).

    Returns
    -------
    predictions : `numpy.ndarray` (M,) or (M, T), or `~astropy.table.Table`
        In the same form as ``train_targets`` (a Table with the same column
        names, a Quantity with the same unit...).

    Raises
    ------
    ValueError
        Labels with NaN, ``k`` larger than the training set, embeddings of
        different dimensions, or mismatched lengths.

    Notes
    -----
    Memory: two float32 copies of the training embeddings (the standardised
    array and the FAISS index), ``2 * N * D * 4`` bytes (1 GB for 1,000,000
    128-d embeddings).  Time is dominated by the exact search, ``2 N M D``
    floating-point operations run by BLAS; ``benchmarks/bench_search.py``
    measures it.  For tens of millions of training objects use ``kind="ivf"``.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.properties import knn_regression
    >>> rng = np.random.default_rng(0)
    >>> z = rng.uniform(0, 0.5, 2000)
    >>> emb = np.stack([np.cos(5 * z), np.sin(5 * z), z ** 2], axis=1)
    >>> emb = emb + 0.01 * rng.normal(size=emb.shape)
    >>> pred = knn_regression(emb[:1500], z[:1500], emb[1500:], k=16)
    >>> pred.shape, bool(np.abs(pred - z[1500:]).mean() < 0.01)
    ((500,), True)
    """
    if weights not in ("distance", "uniform"):
        raise InputError(f"weights must be 'distance' or 'uniform'; got {weights!r}")
    xtr = _as_embeddings(train_embeddings, name="train_embeddings")
    xte = _as_embeddings(test_embeddings, name="test_embeddings", allow_1d=True)
    if xte.shape[1] != xtr.shape[1]:
        raise InputError(f"test_embeddings have dimension {xte.shape[1]} but "
                         f"train_embeddings {xtr.shape[1]}; embed both with the same model")
    targets = _Targets(train_targets, name="train_targets")
    _check_pair(xtr, targets, what="train_embeddings and train_targets")
    k = int(k)
    if k < 1:
        raise InputError(f"k must be a positive integer; got {k}")
    if k > xtr.shape[0]:
        raise InputError(f"k={k} is larger than the number of training embeddings "
                         f"({xtr.shape[0]}); use k <= {xtr.shape[0]}")
    mean, std = _standardizer(xtr, enabled=standardize)
    xtr = _apply(xtr, mean, std)
    xte = _apply(xte, mean, std)
    index = SimilarityIndex(xtr, metric="l2", kind=kind, nlist=nlist, nprobe=nprobe,
                            progress=False)
    y = targets.values
    pred = np.empty((xte.shape[0], y.shape[1]), dtype=np.float64)
    nb = max(1, math.ceil(xte.shape[0] / batch_size))
    for start in progress_bar(range(0, xte.shape[0], batch_size), total=nb, desc="k-NN",
                              unit="batch", progress=progress, min_total=1):
        q = xte[start:start + batch_size]
        _, rows = index.search_arrays(q, k=k, batch_size=batch_size, progress=False)
        # weights in float64, in sub-batches to bound memory (sub * k * D * 8 bytes)
        sub = 1024
        for s0 in range(0, q.shape[0], sub):
            r = rows[s0:s0 + sub]
            found = r >= 0
            safe = np.where(found, r, 0)
            if weights == "uniform":
                w = found.astype(np.float64)
            else:
                diff = xtr[safe].astype(np.float64) - q[s0:s0 + sub, None, :].astype(np.float64)
                dist = np.sqrt(np.einsum("qkd,qkd->qk", diff, diff))
                with np.errstate(divide="ignore"):
                    w = 1.0 / dist
                exact = np.isinf(w)
                rows_exact = exact.any(axis=1)
                w[rows_exact] = exact[rows_exact]
                w[~found] = 0.0
            pred[start + s0:start + s0 + r.shape[0]] = (np.einsum("qk,qkt->qt", w, y[safe])
                                                        / w.sum(axis=1, keepdims=True))
    return targets.wrap(pred)


# ----------------------------------------------------------------------------
# few-shot: MLP head
# ----------------------------------------------------------------------------

#: Restarts of a diverged MLP head, each with a ten times lower learning rate.
_MAX_RESTARTS = 4
#: Loss (MSE on standardised targets) above which a head counts as diverged;
#: predicting the training mean scores about 1.
_DIVERGED_LOSS = 100.0


def _final_loss(history, best_epoch):
    """The loss the kept weights reach: best validation loss, else the last training loss."""
    train = np.asarray(history["train_loss"], dtype=np.float64)
    if not np.isfinite(train).all():
        return np.inf
    val = np.asarray(history["val_loss"], dtype=np.float64)
    if np.isfinite(val).any():
        return float(np.nanmin(val))
    if not np.isnan(val).all():
        return np.inf
    return float(train[-1])


class FewShotRegressor:
    """MLP regression head on embeddings (the AstroCLIP few-shot protocol).

    A fully connected network (``hidden`` layers, ReLU, dropout) trained with
    Adam on the mean squared error of standardised targets.  A random
    ``val_fraction`` of the training set is held out for early stopping: the
    weights of the epoch with the lowest validation loss are kept.  Everything
    is seeded: the same inputs and ``seed`` give the same predictions.

    Parameters
    ----------
    hidden : sequence of int, optional
        Widths of the hidden layers (default ``(64, 64)``).
    dropout : float, optional
        Dropout probability after each hidden layer (default 0.1).
    lr : float, optional
        Adam learning rate (default 1e-3).
    weight_decay : float, optional
        Adam weight decay (default 0).
    batch_size : int, optional
        Mini-batch size (default 256).
    max_epochs : int, optional
        Upper bound on training epochs (default 200).
    patience : int, optional
        Stop after this many epochs without a better validation loss (default 10).
    val_fraction : float, optional
        Fraction of the training objects held out for early stopping (default
        0.1; 0 trains for ``max_epochs`` without validation).
    standardize : bool, optional
        Standardise the inputs with the training mean and std (default).  The
        targets are always standardised.
    seed : int, optional
        Seed of the weights, the validation split, the shuffling and dropout.
    device : str or `torch.device`, optional
        Where to train (default ``"auto"``, see `astroclip._device.resolve_device`).
    progress : bool, optional
        Progress bar over epochs (default: ``conf.progress``).
    num_threads : int or None, optional
        Torch CPU threads while training on the CPU (default 1: the head is so
        small that intra-op threading costs more than it gains, badly so on a
        busy machine; the previous setting is restored afterwards).  None keeps
        torch's current setting.

    Attributes
    ----------
    history_ : `~astropy.table.Table`
        Per-epoch mean training and validation losses.
    best_epoch_ : int
        Epoch whose weights were kept (1-based).
    lr_ : float
        Learning rate of the kept head: ``lr``, or lower when training diverged.

    Notes
    -----
    A head whose loss becomes non-finite or exceeds 100 (mean squared error on
    standardised targets, where predicting the mean scores about 1) diverged:
    it is trained again with a ten times lower learning rate (with an
    `~astroclip.exceptions.AstroclipWarning`), up to four times, and then a
    `~astroclip.exceptions.NonFiniteError` is raised.  Predictions are never
    NaN: non-finite ones raise the same error naming the rows.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.properties import FewShotRegressor
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(600, 4))
    >>> y = np.sin(x[:, 0]) + x[:, 1] ** 2
    >>> model = FewShotRegressor(max_epochs=30, device="cpu", progress=False).fit(x[:500], y[:500])
    >>> model.predict(x[500:]).shape
    (100,)
    """

    def __init__(self, *, hidden=(64, 64), dropout=0.1, lr=1e-3, weight_decay=0.0,
                 batch_size=256, max_epochs=200, patience=10, val_fraction=0.1,
                 standardize=True, seed=0, device="auto", progress=None, num_threads=1):
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise InputError(f"hidden layer widths must be positive; got {hidden}")
        if not 0 <= dropout < 1:
            raise InputError(f"dropout must be in [0, 1); got {dropout}")
        if not 0 <= val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1); got {val_fraction}")
        if int(max_epochs) < 1 or int(batch_size) < 1 or int(patience) < 1:
            raise InputError("max_epochs, batch_size and patience must be positive integers")
        self.hidden = hidden
        self.dropout = float(dropout)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.patience = int(patience)
        self.val_fraction = float(val_fraction)
        self.standardize = bool(standardize)
        self.seed = int(seed)
        self.device = device
        self.progress = progress
        self.num_threads = None if num_threads is None else int(num_threads)
        self._model = None

    def _build(self, n_in, n_out):
        import torch.nn as nn
        layers, width = [], n_in
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(self.dropout)]
            width = h
        layers.append(nn.Linear(width, n_out))
        return nn.Sequential(*layers)

    def fit(self, embeddings, targets):
        """Train the head on ``embeddings`` (N, D) and their ``targets``; returns self."""
        import torch

        from ._device import resolve_device

        x = _as_embeddings(embeddings, name="embeddings")
        tg = _Targets(targets, name="targets")
        _check_pair(x, tg, what="embeddings and targets")
        n = x.shape[0]
        n_val = int(round(self.val_fraction * n))
        if self.val_fraction > 0 and n_val < 1:
            n_val = 1
        if n - n_val < 2:
            raise InputError(f"{n} training objects are too few for an MLP head with "
                             f"val_fraction={self.val_fraction}; give more objects")
        self._targets = tg
        self._x_mean, self._x_std = _standardizer(x, enabled=self.standardize)
        self._y_mean, self._y_std = _standardizer(tg.values)
        xs = _apply(x, self._x_mean, self._x_std)
        ys = ((tg.values - self._y_mean) / self._y_std).astype(np.float32)

        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(n)
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        device = resolve_device(self.device)
        threads = torch.get_num_threads()
        if device.type == "cpu" and self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        lr = self.lr
        try:
            for attempt in range(_MAX_RESTARTS + 1):
                model, history, best_epoch = self._train(xs, ys, train_idx, val_idx, device, lr)
                loss = _final_loss(history, best_epoch)
                if np.isfinite(loss) and loss <= _DIVERGED_LOSS:
                    break
                if attempt == _MAX_RESTARTS:
                    raise NonFiniteError(
                        f"the MLP head diverged at every learning rate from {self.lr:g} down to "
                        f"{lr:g} (loss {loss:.3g} on standardised targets, where predicting the "
                        "mean scores about 1); check that the embeddings are finite and of a "
                        "sane scale, use standardize=True, or lower lr=")
                warnings.warn(f"the MLP head diverged at lr={lr:g} (loss {loss:.3g} on "
                              "standardised targets, where predicting the mean scores about "
                              f"1); trained again with lr={lr / 10:g}", AstroclipWarning,
                              stacklevel=2)
                lr /= 10
        finally:
            torch.set_num_threads(threads)
        self.lr_ = lr
        model.eval()
        self._model = model.cpu()
        self.history_ = Table(history)
        self.best_epoch_ = best_epoch
        return self

    def _train(self, xs, ys, train_idx, val_idx, device, lr):
        import torch

        n_val = len(val_idx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            model = self._build(xs.shape[1], ys.shape[1]).to(device)
            opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=self.weight_decay)
            xt = torch.from_numpy(xs[train_idx])
            yt = torch.from_numpy(ys[train_idx])
            xv = torch.from_numpy(xs[val_idx]).to(device)
            yv = torch.from_numpy(ys[val_idx]).to(device)
            best, best_state, best_epoch, stale = math.inf, None, 0, 0
            history = {"epoch": [], "train_loss": [], "val_loss": []}
            epochs = progress_bar(range(1, self.max_epochs + 1), desc="MLP head",
                                  unit="epoch", progress=self.progress)
            for epoch in epochs:
                model.train()
                order = torch.randperm(xt.shape[0], generator=gen)
                total, count = 0.0, 0
                for start in range(0, xt.shape[0], self.batch_size):
                    idx = order[start:start + self.batch_size]
                    xb, yb = xt[idx].to(device), yt[idx].to(device)
                    loss = torch.nn.functional.mse_loss(model(xb), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    count += len(idx)
                history["epoch"].append(epoch)
                history["train_loss"].append(total / count)
                if n_val:
                    model.eval()
                    with torch.no_grad():
                        val = float(torch.nn.functional.mse_loss(model(xv), yv))
                    history["val_loss"].append(val)
                    if val < best:
                        best, best_epoch, stale = val, epoch, 0
                        best_state = copy.deepcopy(model.state_dict())
                    else:
                        stale += 1
                        if stale >= self.patience:
                            break
                else:
                    history["val_loss"].append(np.nan)
                    best_epoch = epoch
            if best_state is not None:
                model.load_state_dict(best_state)
        return model, history, best_epoch

    def predict(self, embeddings, *, batch_size=65536):
        """Predict the targets of ``embeddings`` (in the form the training targets had)."""
        import torch

        if self._model is None:
            raise RuntimeError("this FewShotRegressor is not trained yet; call fit() first")
        n_in = self._x_mean.shape[0]
        x = _as_embeddings(embeddings, name="embeddings", allow_1d=True)
        if x.shape[1] != n_in:
            raise InputError(f"embeddings have dimension {x.shape[1]} but the head was "
                             f"trained on {n_in}-dimensional embeddings")
        xs = _apply(x, self._x_mean, self._x_std)
        out = np.empty((xs.shape[0], self._y_mean.shape[0]), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, xs.shape[0], batch_size):
                out[start:start + batch_size] = self._model(
                    torch.from_numpy(xs[start:start + batch_size])).double().numpy()
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise NonFiniteError(f"the MLP head predicts NaN or infinite values for rows "
                                 f"{_rows_text(np.flatnonzero(bad))} of the embeddings; they are "
                                 "far outside the training embeddings: check their scale")
        return self._targets.wrap(out * self._y_std + self._y_mean)


def fewshot_regression(train_embeddings, train_targets, test_embeddings, *, hidden=(64, 64),
                       dropout=0.1, lr=1e-3, weight_decay=0.0, batch_size=256,
                       max_epochs=200, patience=10, val_fraction=0.1, standardize=True,
                       seed=0, device="auto", progress=None, num_threads=1,
                       return_model=False):
    """Few-shot regression: train an MLP head on embeddings, predict the test set.

    The released AstroCLIP few-shot protocol (hidden [64, 64], ReLU, dropout
    0.1, Adam 1e-3, MSE on standardised targets), with early stopping on a
    validation fraction of the training set.  See `FewShotRegressor` for the
    parameters.

    Parameters
    ----------
    train_embeddings : array-like (N, D)
        Embeddings with known labels.
    train_targets : array-like (N,) or (N, T), dict or `~astropy.table.Table`
        Their labels (several properties are fitted jointly by one head).
    test_embeddings : array-like (M, D)
        Embeddings to predict.
    return_model : bool, optional
        Also return the trained `FewShotRegressor`.

    Returns
    -------
    predictions : `numpy.ndarray` or `~astropy.table.Table`
        In the form of ``train_targets``.
    model : `FewShotRegressor`
        Only with ``return_model=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.properties import fewshot_regression
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(400, 8))
    >>> labels = {"Z": x[:, 0] ** 2, "LOG_MSTAR": 10 + x[:, 1]}
    >>> pred = fewshot_regression(x[:300], {c: v[:300] for c, v in labels.items()},
    ...                           x[300:], max_epochs=20, device="cpu", progress=False)
    >>> pred.colnames
    ['Z', 'LOG_MSTAR']
    """
    model = FewShotRegressor(hidden=hidden, dropout=dropout, lr=lr, weight_decay=weight_decay,
                             batch_size=batch_size, max_epochs=max_epochs, patience=patience,
                             val_fraction=val_fraction, standardize=standardize, seed=seed,
                             device=device, progress=progress, num_threads=num_threads)
    xte = _as_embeddings(test_embeddings, name="test_embeddings", allow_1d=True)
    xtr_dim = getattr(train_embeddings, "shape", (None, None))
    if len(xtr_dim) == 2 and xtr_dim[1] != xte.shape[1]:
        raise InputError(f"test_embeddings have dimension {xte.shape[1]} but "
                         f"train_embeddings {xtr_dim[1]}; embed both with the same model")
    model.fit(train_embeddings, train_targets)
    pred = model.predict(xte)
    return (pred, model) if return_model else pred


# ----------------------------------------------------------------------------
# photometry baseline
# ----------------------------------------------------------------------------

def _band_columns(photometry, bands):
    """Split the photometry into one 1-D array or Quantity per band."""
    if isinstance(photometry, (Table, dict)):
        keys = list(photometry.keys()) if isinstance(photometry, dict) else photometry.colnames
        cols = []
        for band in bands:
            for cand in (f"FLUX_{band.upper()}", f"flux_{band}", band):
                if cand in keys:
                    col = photometry[cand]
                    break
            else:
                raise InputError(f"photometry has no {band}-band flux column; expected one of "
                                 f"FLUX_{band.upper()}, flux_{band} or {band} (columns: {keys})")
            cunit = getattr(col, "unit", None)
            values = np.asarray(np.ma.getdata(col), dtype=np.float64)
            cols.append(u.Quantity(values, cunit) if cunit is not None and not isinstance(
                col, u.Quantity) else col)
        return cols
    if not isinstance(photometry, u.Quantity):
        photometry = np.asarray(photometry, dtype=np.float64)
    if photometry.ndim != 2 or photometry.shape[1] != len(bands):
        raise InputError(f"photometry must have shape (n_objects, {len(bands)}) for bands "
                         f"{tuple(bands)}; got {photometry.shape}")
    return [photometry[:, j] for j in range(len(bands))]


def _magnitudes(col, *, unit, band):
    """AB magnitudes of one band (NaN where undefined) from fluxes or magnitudes."""
    if not isinstance(col, u.Quantity):
        col = np.asarray(col, dtype=np.float64) * u.Unit(unit)
    if isinstance(col.unit, u.MagUnit):
        try:
            return np.asarray(col.to_value(u.ABmag), dtype=np.float64), True
        except u.UnitConversionError:
            raise InputError(f"{band}-band magnitudes are in {col.unit}; give AB magnitudes "
                             "(u.ABmag) or fluxes") from None
    try:
        flux = np.asarray(col.to_value(NANOMAGGY, NANOMAGGY_EQUIVALENCY), dtype=np.float64)
    except u.UnitConversionError:
        raise InputError(f"{band}-band photometry has unit {col.unit}, which is not a flux "
                         "density or maggies; give fluxes in nanomaggies (or Jy), or "
                         "u.ABmag magnitudes") from None
    with np.errstate(divide="ignore", invalid="ignore"):
        mags = 22.5 - 2.5 * np.log10(np.where(flux > 0, flux, np.nan))
    return mags, False


def photometry_features(photometry, *, bands=BANDS, unit=NANOMAGGY):
    """Magnitudes and colours from g, r, z fluxes: the input of the photometry baseline.

    Parameters
    ----------
    photometry : array-like (N, 3), `~astropy.units.Quantity`, dict or `~astropy.table.Table`
        Fluxes in the order of ``bands``: a plain array is read in ``unit``
        (default nanomaggies, the DESI FIBERMAP / Legacy Survey convention); a
        Quantity is converted (any flux density, maggies, or ``u.ABmag``
        magnitudes); a table needs columns ``FLUX_G``, ``FLUX_R``, ``FLUX_Z``
        (or ``flux_g``..., or ``g``...), with units or in ``unit``.
    bands : sequence of str, optional
        Band names (default g, r, z).
    unit : `~astropy.units.Unit`, optional
        Unit of plain arrays and unitless columns (default nanomaggies).

    Returns
    -------
    features : `numpy.ndarray` (N, 2 * n_bands - 1)
        AB magnitudes ``22.5 - 2.5 log10(flux / nanomaggy)`` of each band,
        followed by the colours of adjacent bands (g - r, r - z).

    Raises
    ------
    ValueError
        For non-positive or non-finite fluxes (magnitudes are undefined; drop
        these objects, as the paper does), or a wrong number of bands.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.properties import photometry_features
    >>> photometry_features(np.array([[10.0, 100.0, 1000.0]])).round(3)
    array([[20. , 17.5, 15. ,  2.5,  2.5]])
    """
    bands = tuple(bands)
    cols = _band_columns(photometry, bands)
    mags, bad, any_mag = [], [], False
    for band, col in zip(bands, cols):
        m, is_mag = _magnitudes(col, unit=unit, band=band)
        any_mag |= is_mag
        mags.append(m)
        bad.append(~np.isfinite(m))
    lengths = {m.shape for m in mags}
    if len(lengths) != 1 or mags[0].ndim != 1:
        raise InputError(f"the photometry bands have different shapes {sorted(lengths)}; give "
                         "one flux per object and band")
    mags, bad = np.stack(mags, axis=1), np.stack(bad, axis=1)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        per_band = ", ".join(f"{b}: {int(bad[:, j].sum())}" for j, b in enumerate(bands))
        shown = _rows_text(rows)
        what = "non-positive or non-finite fluxes (or magnitudes)" if any_mag else \
            "non-positive or non-finite fluxes"
        raise InputError(f"photometry has {what} for {rows.size} objects ({per_band}; rows "
                         f"{shown}); their magnitudes are undefined: drop these objects "
                         "(the paper keeps only positive g, r, z fluxes)")
    colours = mags[:, :-1] - mags[:, 1:]
    return np.concatenate([mags, colours], axis=1)


def photometry_baseline(train_photometry, train_targets, test_photometry, *, bands=BANDS,
                        unit=NANOMAGGY, **mlp_kwargs):
    """The paper's baseline: the few-shot MLP on g, r, z photometry alone.

    The fluxes become magnitudes and colours (`photometry_features`), then the
    same MLP head as `fewshot_regression` is trained on them.

    Parameters
    ----------
    train_photometry, test_photometry : array-like (N, 3), Quantity or Table
        Fluxes (see `photometry_features`).
    train_targets : array-like, dict or `~astropy.table.Table`
        Labels of the training objects.
    bands, unit
        See `photometry_features`.
    **mlp_kwargs
        Options of `fewshot_regression` (``hidden``, ``max_epochs``, ``seed``...).

    Returns
    -------
    predictions : `numpy.ndarray` or `~astropy.table.Table`
        In the form of ``train_targets``.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.properties import photometry_baseline
    >>> rng = np.random.default_rng(0)
    >>> flux = rng.uniform(1, 100, size=(300, 3))
    >>> y = np.log10(flux[:, 1])
    >>> photometry_baseline(flux[:250], y[:250], flux[250:], max_epochs=5,
    ...                     device="cpu", progress=False).shape
    (50,)
    """
    xtr = photometry_features(train_photometry, bands=bands, unit=unit)
    xte = photometry_features(test_photometry, bands=bands, unit=unit)
    return fewshot_regression(xtr, train_targets, xte, **mlp_kwargs)


# ----------------------------------------------------------------------------
# R^2 and the Table 1 layout
# ----------------------------------------------------------------------------

def r2_score(y_true, y_pred):
    """Coefficient of determination R^2 = 1 - SS_res / SS_tot, per property.

    Parameters
    ----------
    y_true, y_pred : array-like (N,) or (N, T), dict or `~astropy.table.Table`
        True and predicted values, in the same form.

    Returns
    -------
    float, `numpy.ndarray` (T,) or dict
        One R^2 per property (a dict keyed by column name for tables and dicts).

    Examples
    --------
    >>> from astroclip.properties import r2_score
    >>> round(r2_score([1.0, 2.0, 3.0, 4.0], [1.1, 1.9, 3.2, 3.9]), 4)
    0.986
    """
    t = _Targets(y_true, name="y_true")
    p = _Targets(y_pred, name="y_pred")
    if t.form == "table":
        missing = [c for c in t.names if c not in p.names]
        if missing:
            raise InputError(f"y_pred lacks the columns {missing} of y_true")
        pv = p.values[:, [p.names.index(c) for c in t.names]]
    else:
        pv = p.values
    if pv.shape != t.values.shape:
        raise InputError(f"y_true has shape {t.values.shape} but y_pred {pv.shape}; give one "
                         "prediction per true value")
    ss_res = ((t.values - pv) ** 2).sum(axis=0)
    ss_tot = ((t.values - t.values.mean(axis=0)) ** 2).sum(axis=0)
    if np.any(ss_tot == 0):
        bad = [c for c, s in zip(t.names, ss_tot) if s == 0]
        raise InputError(f"R^2 is undefined for constant true values ({bad}); evaluate on a "
                         "set where the property varies")
    r2 = 1.0 - ss_res / ss_tot
    if t.form == "table":
        return {c: float(v) for c, v in zip(t.names, r2)}
    return float(r2[0]) if t.form == "1d" else r2


def r2_table(results, *, properties=None):
    """R^2 of several methods in the layout of the paper's Table 1.

    Parameters
    ----------
    results : mapping
        Keys: ``(method, modality)`` tuples, e.g. ``("k-NN", "image")``,
        ``("MLP", "photometry")``, ``("k-NN", "image->spectrum")`` (a cross-modal
        k-NN: image queries, spectrum neighbours), or plain strings (method only).
        Values: a mapping ``{property: R^2}`` or ``{property: (y_true, y_pred)}``,
        or a pair ``(y_true, y_pred)`` of tables / dicts with one column per
        property.
    properties : sequence of str, optional
        Columns to show, in order (default: all properties met, in order of
        appearance).

    Returns
    -------
    `~astropy.table.Table`
        One row per method and modality (in the order of ``results``), columns
        ``method``, ``modality`` and one R^2 column per property (masked where a
        method was not evaluated on a property).

    Examples
    --------
    >>> from astroclip.properties import r2_table
    >>> t = r2_table({("MLP", "photometry"): {"Z": 0.69, "LOG_MSTAR": 0.65},
    ...               ("k-NN", "image"): {"Z": 0.71, "LOG_MSTAR": 0.66},
    ...               ("k-NN", "spectrum"): {"Z": 0.97, "LOG_MSTAR": 0.86}})
    >>> print(t)
    method  modality   Z   LOG_MSTAR
    ------ ---------- ---- ---------
       MLP photometry 0.69      0.65
      k-NN      image 0.71      0.66
      k-NN   spectrum 0.97      0.86
    """
    if not results:
        raise InputError("results is empty: give at least one method")
    rows = []
    for key, value in results.items():
        if isinstance(key, tuple):
            if len(key) != 2:
                raise InputError(f"result keys must be (method, modality) pairs; got {key!r}")
            method, modality = (str(p) for p in key)
        else:
            method, modality = str(key), ""
        if isinstance(value, tuple):
            if len(value) != 2:
                raise InputError(f"result {key!r}: give (y_true, y_pred) or {{property: R^2}}")
            scores = r2_score(*value)
            if not isinstance(scores, dict):
                raise InputError(f"result {key!r}: (y_true, y_pred) must be tables or dicts "
                                 "with one column per property, to name the columns")
        elif hasattr(value, "items"):
            scores = {}
            for prop, v in value.items():
                if isinstance(v, tuple):
                    s = r2_score(*v)
                    if not np.ndim(s) == 0:
                        raise InputError(f"result {key!r}[{prop!r}]: give 1-D y_true, y_pred")
                    scores[str(prop)] = float(s)
                else:
                    scores[str(prop)] = float(v)
        else:
            raise InputError(f"result {key!r}: give {{property: R^2}}, {{property: (y_true, "
                             f"y_pred)}} or (y_true, y_pred); got {type(value).__name__}")
        rows.append((method, modality, scores))
    if properties is None:
        properties = []
        for *_, scores in rows:
            properties += [p for p in scores if p not in properties]
    properties = [str(p) for p in properties]
    table = Table()
    table["method"] = [r[0] for r in rows]
    table["modality"] = [r[1] for r in rows]
    for prop in properties:
        values = np.array([r[2].get(prop, np.nan) for r in rows], dtype=np.float64)
        missing = np.array([prop not in r[2] for r in rows])
        col = MaskedColumn(values, mask=missing, name=prop, format=".4g",
                           description=f"R^2 of {prop} on the held-out set")
        table[prop] = col if missing.any() else col.filled()
        table[prop].format = ".4g"
    table.meta["metric"] = "R^2"
    table.meta["description"] = ("Coefficient of determination on a held-out split "
                                 "(rows = method x modality, columns = properties)")
    return table


def evaluate_properties(train_embeddings, train_targets, test_embeddings, test_targets, *,
                        train_photometry=None, test_photometry=None,
                        methods=("knn", "mlp"), cross_modal=True, k=64, mlp_kwargs=None,
                        progress=None):
    """Run the paper's property benchmark: photometry MLP, k-NN and MLP per modality.

    Parameters
    ----------
    train_embeddings, test_embeddings : dict of str -> array-like (N, D)
        Embeddings per modality, e.g. ``{"image": ..., "spectrum": ...}``; the
        rows of all modalities are the same objects, in the same order.
    train_targets, test_targets : dict or `~astropy.table.Table`
        Labels, one column per property (e.g. ``Z``, ``LOG_MSTAR``).
    train_photometry, test_photometry : optional
        g, r, z fluxes for the photometry baseline (see `photometry_features`).
    methods : sequence of {"knn", "mlp"}, optional
        Which embedding methods to run.
    cross_modal : bool, optional
        Also run cross-modal k-NN (each modality's test embeddings as queries
        against every other modality's training embeddings), as in the paper's
        Figures 4b and 5b.
    k : int, optional
        Neighbours of the k-NN regressions.
    mlp_kwargs : dict, optional
        Options of `fewshot_regression` for the MLP heads (and the baseline).
    progress : bool, optional
        Progress bars (default: ``conf.progress``).

    Returns
    -------
    table : `~astropy.table.Table`
        R^2 in the Table 1 layout (see `r2_table`): rows ``("MLP",
        "photometry")``, ``("k-NN", m)``, ``("k-NN", "q->d")``, ``("MLP", m)``.
    predictions : dict
        ``(method, modality) -> Table`` of predicted test values (same columns as
        the targets), e.g. for `astroclip.plotting.properties.plot_predicted_vs_true`.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.properties import evaluate_properties
    >>> rng = np.random.default_rng(0)
    >>> z = rng.uniform(0, 1, 400)
    >>> emb = {"spectrum": np.stack([z, z ** 2], 1) + 0.01 * rng.normal(size=(400, 2)),
    ...        "image": np.stack([z, -z], 1) + 0.2 * rng.normal(size=(400, 2))}
    >>> table, pred = evaluate_properties({m: e[:300] for m, e in emb.items()}, {"Z": z[:300]},
    ...                                   {m: e[300:] for m, e in emb.items()}, {"Z": z[300:]},
    ...                                   methods=("knn",), k=8, progress=False)
    >>> table["modality"].tolist()
    ['spectrum', 'image', 'spectrum->image', 'image->spectrum']
    """
    unknown = set(methods) - {"knn", "mlp"}
    if unknown:
        raise InputError(f"unknown methods {sorted(unknown)}; choose among 'knn' and 'mlp'")
    if not isinstance(train_embeddings, dict) or not isinstance(test_embeddings, dict):
        raise InputError("give train_embeddings and test_embeddings as dicts "
                         "{modality: array}, e.g. {'image': ..., 'spectrum': ...}")
    if set(train_embeddings) != set(test_embeddings):
        raise InputError(f"train_embeddings has modalities {sorted(train_embeddings)} but "
                         f"test_embeddings {sorted(test_embeddings)}; give the same ones")
    if (train_photometry is None) != (test_photometry is None):
        raise InputError("give both train_photometry and test_photometry, or neither")
    ytr = _Targets(train_targets, name="train_targets")
    yte = _Targets(test_targets, name="test_targets")
    if ytr.form != "table" or yte.form != "table":
        raise InputError("give train_targets and test_targets as tables or dicts with one "
                         "named column per property (e.g. {'Z': ..., 'LOG_MSTAR': ...})")
    if ytr.names != yte.names:
        raise InputError(f"train_targets has columns {ytr.names} but test_targets {yte.names}")
    mlp_kwargs = dict(mlp_kwargs or {})
    mlp_kwargs.setdefault("progress", progress)
    truth = yte.wrap(yte.values)
    predictions = {}
    mods = list(train_embeddings)
    if train_photometry is not None:
        predictions[("MLP", "photometry")] = photometry_baseline(
            train_photometry, train_targets, test_photometry, **mlp_kwargs)
    if "knn" in methods:
        for m in mods:
            predictions[("k-NN", m)] = knn_regression(
                train_embeddings[m], train_targets, test_embeddings[m], k=k, progress=progress)
        if cross_modal:
            for q in mods:
                for d in mods:
                    if q != d:
                        predictions[("k-NN", f"{q}->{d}")] = knn_regression(
                            train_embeddings[d], train_targets, test_embeddings[q], k=k,
                            progress=progress)
    if "mlp" in methods:
        for m in mods:
            predictions[("MLP", m)] = fewshot_regression(
                train_embeddings[m], train_targets, test_embeddings[m], **mlp_kwargs)
    for key, pred in predictions.items():
        if len(pred) != len(truth):
            raise InputError(f"{key}: {len(pred)} predictions for {len(truth)} test labels; "
                             "give one test label per test embedding")
    table = r2_table({key: (truth, pred) for key, pred in predictions.items()})
    return table, predictions
