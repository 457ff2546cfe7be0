"""Few-shot property estimates: a small MLP head trained on embeddings.

The protocol of the AstroCLIP paper and its released code: the head is
`astroclip.models.heads.MLP` (hidden layers [64, 64], ReLU, dropout 0.1),
trained with Adam (learning rate 1e-3) on the mean squared error of
standardised targets, with early stopping on a validation fraction of the
training set.  The same head on magnitudes and colours is the photometry
baseline (`astroclip.evaluation.photometry_baseline`).
"""

import copy
import math
import warnings

import numpy as np
from astropy.table import Table

from .._arrays import as_embeddings, rows_text
from .._progress import progress_bar
from ..exceptions import AstroclipWarning, InputError, NonFiniteError
from ._targets import Targets, apply_standardizer, check_pair, standardizer

__all__ = ["FewShotRegressor", "fewshot_regression"]


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
    >>> from astroclip.evaluation import FewShotRegressor
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
        from ..models.heads import MLP

        return MLP(n_in, self.hidden, n_out, activation="relu", dropout=self.dropout)

    def fit(self, embeddings, targets):
        """Train the head on ``embeddings`` (N, D) and their ``targets``; returns self."""
        import torch

        from .._device import resolve_device

        x = as_embeddings(embeddings, name="embeddings")
        tg = Targets(targets, name="targets")
        check_pair(x, tg, what="embeddings and targets")
        n = x.shape[0]
        n_val = int(round(self.val_fraction * n))
        if self.val_fraction > 0 and n_val < 1:
            n_val = 1
        if n - n_val < 2:
            raise InputError(f"{n} training objects are too few for an MLP head with "
                             f"val_fraction={self.val_fraction}; give more objects")
        self._targets = tg
        self._x_mean, self._x_std = standardizer(x, enabled=self.standardize)
        self._y_mean, self._y_std = standardizer(tg.values)
        xs = apply_standardizer(x, self._x_mean, self._x_std)
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
        x = as_embeddings(embeddings, name="embeddings", allow_1d=True)
        if x.shape[1] != n_in:
            raise InputError(f"embeddings have dimension {x.shape[1]} but the head was "
                             f"trained on {n_in}-dimensional embeddings")
        xs = apply_standardizer(x, self._x_mean, self._x_std)
        out = np.empty((xs.shape[0], self._y_mean.shape[0]), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, xs.shape[0], batch_size):
                out[start:start + batch_size] = self._model(
                    torch.from_numpy(xs[start:start + batch_size])).double().numpy()
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise NonFiniteError(f"the MLP head predicts NaN or infinite values for rows "
                                 f"{rows_text(np.flatnonzero(bad))} of the embeddings; they are "
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
    >>> from astroclip.evaluation import fewshot_regression
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
    xte = as_embeddings(test_embeddings, name="test_embeddings", allow_1d=True)
    xtr_dim = getattr(train_embeddings, "shape", (None, None))
    if len(xtr_dim) == 2 and xtr_dim[1] != xte.shape[1]:
        raise InputError(f"test_embeddings have dimension {xte.shape[1]} but "
                         f"train_embeddings {xtr_dim[1]}; embed both with the same model")
    model.fit(train_embeddings, train_targets)
    pred = model.predict(xte)
    return (pred, model) if return_model else pred
