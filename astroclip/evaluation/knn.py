"""Zero-shot property estimates: k-nearest-neighbour regression on embeddings (FAISS).

The protocol of the AstroCLIP paper and its released code: the embeddings are
standardised with the training set's mean and standard deviation, neighbours
are found by Euclidean distance and ``k = 64`` of them are averaged with
weights 1/distance.  Train and test embeddings may be of different modalities
of one aligned model (cross-modal regression, the paper's Figures 4b and 5b).
"""

import math

import numpy as np

from .._arrays import as_embeddings
from .._progress import progress_bar
from ..exceptions import InputError
from ._targets import Targets, apply_standardizer, check_pair, standardizer

__all__ = ["knn_regression"]


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
    >>> from astroclip.evaluation import knn_regression
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
    xtr = as_embeddings(train_embeddings, name="train_embeddings")
    xte = as_embeddings(test_embeddings, name="test_embeddings", allow_1d=True)
    if xte.shape[1] != xtr.shape[1]:
        raise InputError(f"test_embeddings have dimension {xte.shape[1]} but "
                         f"train_embeddings {xtr.shape[1]}; embed both with the same model")
    targets = Targets(train_targets, name="train_targets")
    check_pair(xtr, targets, what="train_embeddings and train_targets")
    k = int(k)
    if k < 1:
        raise InputError(f"k must be a positive integer; got {k}")
    if k > xtr.shape[0]:
        raise InputError(f"k={k} is larger than the number of training embeddings "
                         f"({xtr.shape[0]}); use k <= {xtr.shape[0]}")
    mean, std = standardizer(xtr, enabled=standardize)
    xtr = apply_standardizer(xtr, mean, std)
    xte = apply_standardizer(xte, mean, std)
    from ..search import SimilarityIndex

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
