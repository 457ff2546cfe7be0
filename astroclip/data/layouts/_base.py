"""What every layout reader provides, and helpers shared by the layout modules."""

import contextlib

import numpy as np

from ...exceptions import InputError
from ...inputs import grid
from ..hdf5 import open_hdf5

__all__ = ["LayoutReader", "PAPER_TRAIN_FRACTION", "reference_split", "pick_labels", "decode",
           "ARRAY_FIELDS"]

#: Fraction of each group of the paper's file (and of a Multimodal Universe pairing)
#: that forms the reference training split; the remaining rows are the test split.
PAPER_TRAIN_FRACTION = 0.8
#: Array fields a reader can load for many rows at once, and the item key of each.
ARRAY_FIELDS = {"flux": "spectrum", "ivar": "spectrum_ivar", "image": "image"}


def reference_split(n):
    """int8 codes: first PAPER_TRAIN_FRACTION of n rows train (0), the rest test (2)."""
    codes = np.full(n, 2, dtype=np.int8)
    codes[:int(np.floor(PAPER_TRAIN_FRACTION * n))] = 0
    return codes


def pick_labels(requested, available, path):
    """The label names asked for (all available ones by default), checked."""
    if requested is None:
        return list(available)
    requested = [requested] if isinstance(requested, str) else list(requested)
    missing = [name for name in requested if name not in available]
    if missing:
        raise InputError(f"{path} has no label columns {missing}; available: {list(available)}")
    return requested


def decode(values):
    """Byte or str values (any shape) -> a 1-D array of stripped str."""
    return np.array([v.decode().strip() if isinstance(v, bytes) else str(v).strip()
                     for v in np.asarray(values).reshape(-1)])


class LayoutReader:
    """Rows of one on-disk layout, read on demand (the interface of every layout).

    A reader is made from the file path(s) and checks the layout there; it
    opens no file for good, so that it can be pickled into data-loader worker
    processes.  The ``files`` argument of the reading methods is what `open`
    returns (one open `h5py.File`, or a stand-in indexed the same way, per path).

    Attributes
    ----------
    layout : str
        Name of the layout in the registry.
    paths : tuple of str
        The files.
    n : int
        Number of rows.
    label_names : list of str
        The labels each row has (e.g. ``["Z", "LOG_MSTAR"]``).
    image_shape : tuple of int
        ``(3, S, S)``: the shape of an image as read.
    meta : dict
        File metadata (attributes), given to tables read from the file.
    report : dict or None
        How the rows were made (e.g. the pairing counts of two files).
    """

    layout = None

    def __init__(self, paths):
        self.paths = tuple(str(p) for p in paths)
        self.n = 0
        self.label_names = []
        self.image_shape = None
        self.meta = {}
        self.report = None
        self._table = None

    @contextlib.contextmanager
    def open(self, **kwargs):
        """Open the files (``kwargs`` go to `h5py.File`); yields a tuple of them."""
        with contextlib.ExitStack() as stack:
            yield tuple(stack.enter_context(open_hdf5(p, **kwargs)) for p in self.paths)

    def split_codes(self, files):
        """int8 split code of every row (0 train, 1 val, 2 test)."""
        return np.asarray(self._table["split"])

    def read_table(self, files, refs):
        """Catalogue rows ``refs``: ``targetid``, ``split``, labels (``ra``, ``dec`` if known)."""
        return self._table[np.asarray(refs, dtype=np.int64)]

    def read(self, files, ref):
        """One row as a dict of numpy values.

        Keys ``targetid``, ``spectrum`` and ``spectrum_ivar`` (float32 (7781,)),
        ``image`` (float32 (3, S, S), g, r, z nanomaggies) and one per label.
        """
        raise NotImplementedError

    def read_rows(self, files, refs, fields=tuple(ARRAY_FIELDS)):
        """Arrays of the rows ``refs``: ``{"flux": (n, 7781), "ivar": ..., "image": ...}``."""
        refs = np.asarray(refs, dtype=np.int64)
        items = [self.read(files, int(r)) for r in refs]
        out = {}
        for field in fields:
            key = ARRAY_FIELDS[field]
            shape = self.image_shape if field == "image" else None
            if items:
                out[field] = np.stack([np.asarray(it[key], dtype=np.float32) for it in items])
            else:
                shape = shape if shape is not None else (grid.N_PIXELS,)
                out[field] = np.zeros((0,) + tuple(shape), np.float32)
        return out
