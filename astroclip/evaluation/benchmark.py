"""The paper's Table 1: R^2 of property estimates from embeddings and from photometry.

`evaluate_properties` runs, for embeddings split into a training and a test
set, the photometry baseline (`photometry_baseline`), zero-shot k-NN
(`knn_regression`) and few-shot MLP (`fewshot_regression`) regressions per
modality, and cross-modal k-NN; `r2_table` lays the scores out like the
paper's Table 1.  `evaluate_embeddings` does the same for an embeddings file
(`astroclip.data.embeddings`) joined by ``targetid`` with the labels and the
train/val/test split of a paired training-set file.
"""

import numpy as np
from astropy.table import MaskedColumn, Table

from ..data.embeddings import read_embeddings
from ..data.hdf5 import SPLIT_NAMES
from ..data.paired import read_paired_dataset
from ..exceptions import InputError
from ..inputs.grid import BANDS
from ._targets import Targets
from .fewshot import fewshot_regression
from .knn import knn_regression
from .metrics import r2_score
from .photometry import photometry_baseline

__all__ = ["r2_table", "evaluate_properties", "labelled_embeddings", "evaluate_embeddings"]

#: Photometry columns of a paired file used by the baseline.
_PHOTOMETRY = tuple(f"FLUX_{b.upper()}" for b in BANDS)


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
    >>> from astroclip.evaluation import r2_table
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
    >>> from astroclip.evaluation import evaluate_properties
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
    ytr = Targets(train_targets, name="train_targets")
    yte = Targets(test_targets, name="test_targets")
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


def labelled_embeddings(embeddings, labels, *, properties=("Z", "LOG_MSTAR")):
    """Row-aligned embeddings, labels, photometry and split codes.

    Parameters
    ----------
    embeddings : path or tuple
        An `astroclip.embed_catalog` output file, or ``(targetid, {modality: array})``.
    labels : path
        Paired HDF5 training-set file holding ``labels/<property>`` and ``split``.
    properties : sequence of str, optional
        Label columns to keep.

    Returns
    -------
    dict
        ``"targetid"``, ``"split"`` (int8 codes), ``"embeddings"`` ({modality:
        (N, D)}), ``"targets"`` (Table), ``"photometry"`` (Table of FLUX_G/R/Z or None).

    Raises
    ------
    InputError
        (a `ValueError`) Missing property columns, a label file with a
        targetid on several rows, or embeddings whose ids are not in it.
    """
    if isinstance(embeddings, tuple):
        ids, emb = embeddings
    else:
        ids, emb, _ = read_embeddings(embeddings)
    table, _ = read_paired_dataset(labels, fields=())
    missing = [p for p in properties if p not in table.colnames]
    fixed = ('targetid', 'ra', 'dec', 'split')
    if missing:
        raise InputError(f"{labels} has no label column(s) {missing}; available: "
                         f"{[c for c in table.colnames if c not in fixed]}")
    label_ids = np.asarray(table["targetid"], dtype=np.int64)
    uniq, counts = np.unique(label_ids, return_counts=True)
    if np.any(counts > 1):
        dup = uniq[counts > 1]
        raise InputError(f"{labels} has {dup.size} targetid(s) on more than one row (e.g. "
                         f"{', '.join(str(t) for t in dup[:5])}), so labels cannot be matched "
                         "to embeddings: keep one row per targetid in the label file")
    lookup = {int(t): i for i, t in enumerate(label_ids)}
    absent = [int(t) for t in ids if int(t) not in lookup]
    if absent:
        raise InputError(f"{len(absent)} embedded objects are not in {labels} "
                         f"(e.g. targetid {absent[:5]}); embed the same catalogue")
    rows = np.array([lookup[int(t)] for t in ids], dtype=np.int64)
    sub = table[rows]
    photometry = (sub[list(_PHOTOMETRY)] if all(c in sub.colnames for c in _PHOTOMETRY)
                  else None)
    return {"targetid": np.asarray(ids), "split": np.asarray(sub["split"]),
            "embeddings": {m: np.asarray(e) for m, e in emb.items()},
            "targets": Table({p: np.asarray(sub[p], dtype=np.float64) for p in properties}),
            "photometry": photometry}


def evaluate_embeddings(embeddings, labels, *, properties=("Z", "LOG_MSTAR"), k=64,
                        train_split=("train", "val"), test_split="test", mlp_kwargs=None,
                        progress=None):
    """The paper's Table 1 for embeddings of a labelled catalogue.

    Parameters
    ----------
    embeddings, labels, properties
        See `labelled_embeddings`.
    k : int, optional
        Neighbours of the k-NN regressions.
    train_split, test_split : str or sequence of str, optional
        Splits used to fit (the k-NN reference set, the MLP heads) and to score.
    mlp_kwargs : dict, optional
        Options of `fewshot_regression`.
    progress : bool, optional
        Progress bars.

    Returns
    -------
    table : `~astropy.table.Table`
        R^2 per method x modality (rows) and property (columns).
    predictions : dict
        ``(method, modality) -> Table`` of test predictions.
    truth : `~astropy.table.Table`
        Test targets, row-aligned with the predictions.

    Examples
    --------
    >>> from astroclip.evaluation import evaluate_embeddings
    >>> table, _, _ = evaluate_embeddings("embeddings.h5", "mock.h5")  # doctest: +SKIP
    """
    data = labelled_embeddings(embeddings, labels, properties=properties)

    def codes(split):
        names = (split,) if isinstance(split, str) else tuple(split)
        bad = [s for s in names if s not in SPLIT_NAMES]
        if bad:
            raise InputError(f"unknown split {bad}; choose among {SPLIT_NAMES}")
        return [SPLIT_NAMES.index(s) for s in names]

    train = np.isin(data["split"], codes(train_split))
    test = np.isin(data["split"], codes(test_split))
    if not train.any() or not test.any():
        raise InputError(f"the catalogue has {int(train.sum())} training and {int(test.sum())} "
                         "test rows; both must be non-empty")
    phot = data["photometry"]
    table, predictions = evaluate_properties(
        {m: e[train] for m, e in data["embeddings"].items()}, data["targets"][train],
        {m: e[test] for m, e in data["embeddings"].items()}, data["targets"][test],
        train_photometry=None if phot is None else phot[train],
        test_photometry=None if phot is None else phot[test],
        k=k, mlp_kwargs=mlp_kwargs, progress=progress)
    return table, predictions, data["targets"][test]
