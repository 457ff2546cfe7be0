"""Layout ``"astroclip"``: our paired training-set file (format ``"astroclip-paired"``).

Written by `astroclip.data.paired.PairedDatasetWriter` (``format_version`` 1)::

    /                      attrs: format="astroclip-paired", format_version=1,
                                  bands="g,r,z", flux_unit, image_unit, label_names
    /targetid              int64   (N,)
    /ra, /dec              float64 (N,)    degrees (ICRS); NaN = unknown
    /spectrum/flux         float32 (N, 7781)  1e-17 erg/s/cm2/A
    /spectrum/ivar         float32 (N, 7781)  (1e-17 erg/s/cm2/A)^-2, 0 = no information
    /image                 float32 (N, 3, S, S)  nanomaggies, S = 152 by default
    /split                 int8    (N,)    0 train, 1 val, 2 test (attr split_names)
    /labels/<NAME>         float64 (N,)    catalogue columns (Z, LOG_MSTAR, ...);
                                           NaN = missing; attr unit if any

The reader reads only the rows asked for, so that a chunk of a file of
millions of rows costs what the chunk holds.
"""

import numpy as np
import astropy.units as u
from astropy.table import Table

from ...exceptions import InputError
from ..hdf5 import open_hdf5, read_rows
from ._base import ARRAY_FIELDS, LayoutReader, pick_labels

__all__ = ["NAME", "FORMAT", "FORMAT_VERSION", "REQUIRED_FIELDS", "identify", "check",
           "stored_label_names", "AstroclipReader"]

#: Name of the layout in the registry.
NAME = "astroclip"
#: Value of the root attribute ``format`` of a paired training-set file.
FORMAT = "astroclip-paired"
#: Layout version written by `~astroclip.data.paired.PairedDatasetWriter` (readers accept
#: versions <= this one).
FORMAT_VERSION = 1
#: Datasets every paired file must hold.
REQUIRED_FIELDS = ("targetid", "ra", "dec", "spectrum/flux", "spectrum/ivar", "image", "split")
#: HDF5 dataset of each array field.
DATASETS = {"flux": "spectrum/flux", "ivar": "spectrum/ivar", "image": "image"}


def _format(f):
    fmt = f.attrs.get("format")
    return fmt.decode() if isinstance(fmt, bytes) else fmt


def identify(f):
    """Whether the open HDF5 file ``f`` is an astroclip paired file (its ``format``)."""
    return _format(f) == FORMAT


def check(f, path):
    """Check the version and the fields of an astroclip paired file; return its rows.

    Raises
    ------
    InputError
        Another format, a newer version, missing or inconsistent fields.
    """
    fmt = _format(f)
    if fmt != FORMAT:
        raise InputError(f"{path} is not an astroclip paired file (root attribute "
                         f"format={fmt!r}, expected {FORMAT!r}); write one with "
                         "PairedDatasetWriter")
    version = int(f.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise InputError(f"{path} has format_version {version}, newer than this astroclip "
                         f"reads ({FORMAT_VERSION}); upgrade astroclip")
    missing = [name for name in REQUIRED_FIELDS if name not in f]
    if missing:
        raise InputError(f"{path} lacks the required fields {missing}; the file is "
                         "incomplete: rebuild it with PairedDatasetWriter")
    n = f["targetid"].shape[0]
    labels = [f"labels/{k}" for k in f["labels"].keys()] if "labels" in f else []
    bad = [name for name in list(REQUIRED_FIELDS) + labels if f[name].shape[:1] != (n,)]
    if bad:
        raise InputError(f"{path}: fields {bad} do not have {n} rows like targetid; the "
                         "file is inconsistent: rebuild it")
    return n


def stored_label_names(f):
    """Label names in the writer's order (the ``label_names`` attribute), else sorted."""
    present = sorted(f["labels"].keys()) if "labels" in f else []
    order = f.attrs.get("label_names", "")
    order = order.decode() if isinstance(order, bytes) else str(order)
    ordered = [name for name in order.split(",") if name in present]
    return ordered + [name for name in present if name not in ordered]


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


class AstroclipReader(LayoutReader):
    """Reader of an astroclip paired file.

    Parameters
    ----------
    path : str or path-like
        The file.
    label_names : sequence of str, optional
        Labels to read (all the file has by default).
    """

    layout = NAME

    def __init__(self, path, *, label_names=None):
        super().__init__((path,))
        with open_hdf5(path) as f:
            self.n = check(f, path)
            self.label_names = pick_labels(label_names, stored_label_names(f), path)
            self.image_shape = tuple(f["image"].shape[1:])
            self.meta = {k: _plain(v) for k, v in f.attrs.items()}
            self._units = {name: u.Unit(f["labels"][name].attrs["unit"])
                           for name in self.label_names if "unit" in f["labels"][name].attrs}

    def split_codes(self, files):
        return files[0]["split"][:]

    def read_table(self, files, refs):
        f = files[0]
        index = np.asarray(refs, dtype=np.int64)
        table = Table()
        table["targetid"] = read_rows(f["targetid"], index)
        table["ra"] = u.Quantity(read_rows(f["ra"], index), u.deg)
        table["dec"] = u.Quantity(read_rows(f["dec"], index), u.deg)
        table["split"] = read_rows(f["split"], index)
        for name in self.label_names:
            table[name] = read_rows(f[f"labels/{name}"], index)
            if name in self._units:
                table[name].unit = self._units[name]
        return table

    def read(self, files, ref):
        f = files[0]
        item = {"targetid": np.int64(f["targetid"][ref]),
                "spectrum": f["spectrum/flux"][ref],
                "spectrum_ivar": f["spectrum/ivar"][ref],
                "image": f["image"][ref]}
        for name in self.label_names:
            item[name] = f[f"labels/{name}"][ref]
        return item

    def read_rows(self, files, refs, fields=tuple(ARRAY_FIELDS)):
        index = np.asarray(refs, dtype=np.int64)
        return {field: read_rows(files[0][DATASETS[field]], index) for field in fields}
