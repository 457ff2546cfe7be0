"""Evaluate embeddings against the labels of a paired training-set file.

Joins an embeddings file (`astroclip.embed_catalog`) with the labels and the
train/test split of a paired HDF5 file by ``targetid`` and runs the paper's
property benchmark (`astroclip.properties.evaluate_properties`): the
photometry MLP baseline, k-NN (zero-shot) and MLP (few-shot) regressions per
modality and cross-modal k-NN.
"""

import numpy as np
from astropy.table import Table

from .exceptions import InputError

__all__ = ["labelled_embeddings", "evaluate_embeddings"]

_PHOTOMETRY = ("FLUX_G", "FLUX_R", "FLUX_Z")


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
    from .data.embeddings import read_embeddings
    from .data.hdf5 import read_paired_dataset

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
        Options of `astroclip.properties.fewshot_regression`.
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
    from .data.hdf5 import SPLIT_NAMES
    from .properties import evaluate_properties

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
