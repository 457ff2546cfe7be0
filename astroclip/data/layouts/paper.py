"""Layout ``"paper"``: the paired file published with the paper (``astroclip_desi.1.1.5.h5``).

The file of Parker et al. 2024 (and of the public AstroCLIP code) holds groups
``"0"`` ... ``"9"``, each with::

    images      (N, 152, 152, 3)   g, r, z nanomaggies, stored with the pixel axes swapped
                                   (x, y, band)
    spectra     (N, 7781)          flux on the DESI grid, 1e-17 erg/s/cm2/A (no ivar)
    redshifts   (N,)               the DESI redshift (label ``Z``)
    targetids   (N,)               DESI TARGETID

Rows are read group after group; the reference split is the first 80 %
(`~astroclip.data.layouts.PAPER_TRAIN_FRACTION`) of each group for training, the
rest for testing.
The file has no inverse variance: a spectrum gets unit weights where its flux
is finite, and 0 (with flux 0) elsewhere.
"""

import numpy as np
from astropy.table import Table

from ...exceptions import InputError
from ...inputs import grid
from ..hdf5 import open_hdf5, read_rows
from ._base import ARRAY_FIELDS, PAPER_TRAIN_FRACTION, LayoutReader, pick_labels, reference_split

__all__ = ["NAME", "GROUP_FIELDS", "identify", "PaperReader"]

#: Name of the layout in the registry.
NAME = "paper"
#: Datasets of every group of the paper's file.
GROUP_FIELDS = ("images", "spectra", "redshifts", "targetids")


def _groups(f):
    return [g for g in sorted((k for k in f.keys() if k.isdigit()), key=int)
            if hasattr(f[g], "keys")]


def identify(f):
    """Whether the open HDF5 file ``f`` has the numbered groups of the paper's file."""
    return any("images" in f[g] for g in _groups(f))


def _spectra(flux):
    """No ivar in the file: unit weight where the flux is finite, 0 (and flux 0) elsewhere."""
    flux = np.asarray(flux, dtype=np.float32)
    good = np.isfinite(flux)
    return np.where(good, flux, 0).astype(np.float32), good.astype(np.float32)


def _images(stored):
    """Stored (..., x, y, band): swap the pixel axes back to (..., band, y, x)."""
    stored = np.asarray(stored, dtype=np.float32)
    return np.ascontiguousarray(np.swapaxes(np.moveaxis(stored, -1, -3), -1, -2))


class PaperReader(LayoutReader):
    """Reader of the paper's paired file.

    Parameters
    ----------
    path : str or path-like
        The file.
    label_names : sequence of str, optional
        ``["Z"]`` (the default) or ``[]``.
    """

    layout = NAME

    def __init__(self, path, *, label_names=None):
        super().__init__((path,))
        with open_hdf5(path) as f:
            groups = _groups(f)
            gids, rows, tids, z, codes = [], [], [], [], []
            for g in groups:
                missing = [k for k in GROUP_FIELDS if k not in f[g]]
                if missing:
                    raise InputError(f"{path}: group {g!r} lacks the fields {missing} of the "
                                     "paper's paired file; the file is incomplete or not that "
                                     "file: download it again")
                n = f[g]["targetids"].shape[0]
                shapes = {k: f[g][k].shape for k in GROUP_FIELDS}
                if shapes["images"][1:] != (grid.IMAGE_SIZE, grid.IMAGE_SIZE, 3) or \
                        shapes["spectra"][1:] != (grid.N_PIXELS,) or \
                        any(s[0] != n for s in shapes.values()):
                    raise InputError(f"{path}: group {g!r} has shapes {shapes}; the paper's file "
                                     f"has images (N, {grid.IMAGE_SIZE}, {grid.IMAGE_SIZE}, 3) "
                                     f"and spectra (N, {grid.N_PIXELS}) with N rows each")
                gids.append(np.full(n, int(g)))
                rows.append(np.arange(n))
                tids.append(f[g]["targetids"][:].astype(np.int64))
                z.append(f[g]["redshifts"][:].astype(np.float64))
                codes.append(reference_split(n))
        if not groups:
            raise InputError(f"{path} has no groups '0'...'9'; it is not the paper's file")
        self.label_names = pick_labels(label_names, ["Z"], path)
        self.image_shape = (3, grid.IMAGE_SIZE, grid.IMAGE_SIZE)
        self.meta = {"source_layout": NAME, "train_fraction": PAPER_TRAIN_FRACTION}
        table = Table()
        table["targetid"] = np.concatenate(tids)
        table["split"] = np.concatenate(codes)
        if "Z" in self.label_names:
            table["Z"] = np.concatenate(z)
        self._table = table
        self.n = len(table)
        self._group = np.concatenate(gids)
        self._row = np.concatenate(rows)

    def read(self, files, ref):
        f = files[0]
        g = str(self._group[ref])
        row = int(self._row[ref])
        flux, ivar = _spectra(f[f"{g}/spectra"][row])
        item = {"targetid": np.int64(f[f"{g}/targetids"][row]), "spectrum": flux,
                "spectrum_ivar": ivar, "image": _images(f[f"{g}/images"][row])}
        if "Z" in self.label_names:
            item["Z"] = f[f"{g}/redshifts"][row]
        return item

    def read_rows(self, files, refs, fields=tuple(ARRAY_FIELDS)):
        """Arrays of the rows ``refs``, read group by group."""
        refs = np.asarray(refs, dtype=np.int64)
        out = {field: np.zeros((refs.size,) + ((grid.N_PIXELS,) if field != "image" else
                                               self.image_shape), np.float32)
               for field in fields}
        for g in np.unique(self._group[refs]):
            where = np.flatnonzero(self._group[refs] == g)
            rows = self._row[refs[where]]
            if "flux" in fields or "ivar" in fields:
                flux, ivar = _spectra(read_rows(files[0][f"{g}/spectra"], rows))
                for field, values in (("flux", flux), ("ivar", ivar)):
                    if field in fields:
                        out[field][where] = values
            if "image" in fields:
                out["image"][where] = _images(read_rows(files[0][f"{g}/images"], rows))
        return out
