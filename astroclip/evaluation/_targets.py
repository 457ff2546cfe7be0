"""Regression targets as one (n, t) float64 matrix, given back in the caller's form.

Labels may be one property (a 1-D array), several (a 2-D array), a dict of
arrays or an astropy `~astropy.table.Table` with one column per property;
predictions come back in the same form, with the same units.
"""

import numpy as np
from astropy import units as u
from astropy.table import MaskedColumn, Table

from .._arrays import rows_text
from ..exceptions import InputError

__all__ = ["Targets", "check_pair", "standardizer", "apply_standardizer"]


class Targets:
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
                    shown = rows_text(rows)
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
            shown = rows_text(rows)
            raise InputError(f"{name} has {int(mask.sum())} masked labels (rows {shown}); "
                             "drop these objects from the embeddings and labels first")
        values = np.ma.getdata(values)
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numbers; got dtype {arr.dtype}")
    return arr.astype(np.float64), unit


def check_pair(embeddings, targets, *, what):
    if embeddings.shape[0] != len(targets):
        raise InputError(f"{what}: {embeddings.shape[0]} embeddings but {len(targets)} labels; "
                         "give one label per embedding, in the same order")


def standardizer(x, *, enabled=True):
    """Mean and std (float64) of the columns of x; constant columns get std 1."""
    if not enabled:
        return np.zeros(x.shape[1]), np.ones(x.shape[1])
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[~(std > 0)] = 1.0
    return mean, std


def apply_standardizer(x, mean, std):
    """``(x - mean) / std`` as C-contiguous float32."""
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)
