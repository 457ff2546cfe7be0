"""Checks of array arguments shared by the package (embeddings, masked inputs).

Every layer validates its arrays the same way: embeddings must be finite 2-D
float arrays (`as_embeddings`), Quantities of embeddings must be dimensionless,
masked values are never silently used (`split_masked`), and error messages list
the offending rows the same way (`rows_text`).  This module depends only on
numpy, astropy and `astroclip.exceptions`, so that every layer may use it.
"""

import numpy as np
from astropy import units as u

from .exceptions import InputError

__all__ = ["as_float_array", "rows_text", "check_finite_rows", "as_embeddings",
           "normalize_rows", "split_masked"]


def as_float_array(x, *, name, dtype=np.float32):
    """Array-like (ndarray, Quantity, Column, list) -> plain C-contiguous numpy array.

    Raises
    ------
    InputError
        A Quantity with a unit (embeddings are dimensionless), or masked values.
    """
    if isinstance(x, u.Quantity):
        if x.unit.physical_type != "dimensionless":
            raise InputError(f"{name} has unit {x.unit}, but embeddings are dimensionless "
                             "numbers; pass the plain array (e.g. quantity.value) instead")
        x = x.to_value(u.dimensionless_unscaled)
    if isinstance(x, np.ma.MaskedArray):
        if np.any(np.ma.getmaskarray(x)):
            n = int(np.ma.getmaskarray(x).sum())
            raise InputError(f"{name} has {n} masked values; remove the masked rows "
                             "before using it")
        x = x.data
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


def rows_text(rows, limit=10):
    """'3, 10, 11' (the first ``limit`` row numbers, then '...').

    Examples
    --------
    >>> from astroclip._arrays import rows_text
    >>> rows_text(list(range(12)), limit=3)
    '0, 1, 2, ...'
    """
    return ", ".join(str(int(r)) for r in rows[:limit]) + (", ..." if len(rows) > limit else "")


def check_finite_rows(x, *, name, offset=0):
    """Raise `InputError` naming the rows of ``x`` that hold NaN or infinite values."""
    bad = ~np.isfinite(x).all(axis=tuple(range(1, x.ndim)))
    if bad.any():
        rows = np.flatnonzero(bad) + offset
        raise InputError(f"{name} has {rows.size} row(s) with NaN or infinite values "
                         f"(rows {rows_text(rows)}); drop or recompute these rows first")


def as_embeddings(x, *, name, dim=None, allow_1d=False, offset=0):
    """Validate a (N, D) block of embeddings and return it as float32 C-contiguous.

    Parameters
    ----------
    x : array-like
        The embeddings.
    name : str
        What they are, for messages.
    dim : int, optional
        Required dimension ``D``.
    allow_1d : bool, optional
        Accept one embedding ``(D,)`` as ``(1, D)``.
    offset : int, optional
        Row number of the first row, for messages.

    Raises
    ------
    InputError
        Wrong shape or dimension, or non-finite rows (named).
    """
    x = as_float_array(x, name=name)
    if x.ndim == 1 and allow_1d:
        x = x[None, :]
    if x.ndim != 2:
        raise InputError(f"{name} must be a 2-D array of shape (n_objects, dim); "
                         f"got shape {x.shape}")
    if x.shape[1] == 0:
        raise InputError(f"{name} has zero-length embeddings (shape {x.shape})")
    if dim is not None and x.shape[1] != dim:
        raise InputError(f"{name} has dimension {x.shape[1]}, but the index holds "
                         f"{dim}-dimensional embeddings; embed both with the same model "
                         "(all embeddings in one index must share one space)")
    check_finite_rows(x, name=name, offset=offset)
    return x


def normalize_rows(x, *, name, offset=0, fix="drop them or use metric='inner_product' or 'l2'"):
    """L2-normalise the rows of a float32 array (a copy); an all-zero row is an error.

    ``fix`` ends the message of that error (what the caller can do).
    """
    norms = np.linalg.norm(x, axis=1)
    zero = norms == 0
    if zero.any():
        rows = np.flatnonzero(zero) + offset
        raise InputError(f"{name} has {rows.size} all-zero row(s) (rows {rows_text(rows)}); "
                         f"the cosine similarity of a zero vector is undefined: {fix}")
    return np.ascontiguousarray(x / norms[:, None], dtype=np.float32)


def split_masked(value):
    """``(data, mask or None)`` of a `numpy.ma` or astropy ``Masked`` array (others: as is).

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip._arrays import split_masked
    >>> data, mask = split_masked(np.ma.masked_invalid([1.0, np.nan]))
    >>> mask.tolist()
    [False, True]
    """
    from astropy.utils.masked import Masked

    if isinstance(value, Masked):
        return value.unmasked, np.asarray(value.mask, dtype=bool)
    if np.ma.isMaskedArray(value):
        return np.ma.getdata(value), np.ma.getmaskarray(value)
    return value, None
