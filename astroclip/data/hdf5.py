"""HDF5 access shared by every file of the package, and the train/val/test split codes.

`open_hdf5` opens an HDF5 file with errors that say what is wrong (missing,
truncated, locked) and what to do; `read_rows` reads rows in any order from a
dataset; `split_codes` turns split names into the int8 codes 0 (train), 1 (val),
2 (test) that every layout of `astroclip.data.layouts` gives its rows.
"""

from pathlib import Path

import numpy as np

from ..exceptions import DataFileError, InputError

__all__ = ["SPLIT_NAMES", "open_hdf5", "split_codes", "read_rows"]

#: Names of the split codes 0, 1, 2.
SPLIT_NAMES = ("train", "val", "test")


def open_hdf5(path, mode="r", **kwargs):
    """Open an HDF5 file with errors that say what is wrong and what to do.

    Parameters
    ----------
    path : str or path-like
        File to open.
    mode : str, optional
        h5py mode (``"r"`` by default).
    **kwargs
        Passed to `h5py.File` (e.g. ``rdcc_nbytes``).

    Returns
    -------
    `h5py.File`

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataFileError
        (an `OSError`) If the file is truncated, corrupt, not HDF5 at all, or
        locked by a process writing it.

    Examples
    --------
    >>> from astroclip.data.hdf5 import open_hdf5
    >>> open_hdf5("no/such/file.h5")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no/such/file.h5 does not exist; check the path ...
    """
    import h5py

    path = Path(path)
    if "r" in mode and not path.exists():
        raise FileNotFoundError(f"{path} does not exist; check the path (or build the file "
                                "first, e.g. with astroclip.data.paired.PairedDatasetWriter)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an HDF5 file; give the file path")
    try:
        return h5py.File(path, mode, **kwargs)
    except OSError as exc:
        if isinstance(exc, BlockingIOError) or "unable to lock file" in str(exc):
            raise DataFileError(
                exc.errno, f"{path} is open for writing by another process (the HDF5 file "
                "lock is held); wait for the writer to finish (or stop it) and try again") \
                from exc
        size = path.stat().st_size if path.exists() else 0
        hint = "it is empty" if size == 0 else f"{size} bytes"
        raise DataFileError(f"{path} cannot be read as HDF5 ({hint}; h5py says: {exc}). The "
                            "file is truncated, corrupt or not HDF5: download or rebuild "
                            "it") from exc


def split_codes(split):
    """Turn split names or codes into the int8 codes of the file.

    Parameters
    ----------
    split : str, int or sequence of them
        ``"train"``/``"val"``/``"test"`` or 0/1/2 (one value or one per row).

    Returns
    -------
    `numpy.ndarray`
        int8 codes (0-d for a single value).

    Examples
    --------
    >>> from astroclip.data.hdf5 import split_codes
    >>> split_codes(["train", "test", 1]).tolist()
    [0, 2, 1]
    """
    arr = np.asarray(split, dtype=object)
    flat = arr.reshape(-1)
    out = np.empty(flat.shape, dtype=np.int8)
    for i, value in enumerate(flat):
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            key = value.strip().lower()
            key = {"validation": "val", "valid": "val"}.get(key, key)
            if key not in SPLIT_NAMES:
                raise InputError(f"unknown split {value!r}; use one of {SPLIT_NAMES} "
                                 "(or the codes 0, 1, 2)")
            out[i] = SPLIT_NAMES.index(key)
        else:
            try:
                code = int(value)
            except (TypeError, ValueError):
                raise InputError(f"unknown split {value!r}; use one of {SPLIT_NAMES} "
                                 "or the codes 0, 1, 2") from None
            if code != value or code not in (0, 1, 2):
                raise InputError(f"unknown split code {value!r}; codes are 0 (train), 1 (val), "
                                 "2 (test)")
            out[i] = code
    return out.reshape(arr.shape)


def read_rows(ds, index):
    """Read rows ``index`` (any order, repeats allowed) from an h5py dataset.

    Parameters
    ----------
    ds : `h5py.Dataset`
        A dataset whose first axis is the rows.
    index : `numpy.ndarray` of int
        Rows to read, in the order wanted.

    Returns
    -------
    `numpy.ndarray`
        ``ds[index]``, read as one contiguous block when the rows are close together.
    """
    if index.size == 0:
        return np.empty((0,) + ds.shape[1:], dtype=ds.dtype)
    if index.size == ds.shape[0] and np.array_equal(index, np.arange(ds.shape[0])):
        return ds[...]
    uniq, inverse = np.unique(index, return_inverse=True)
    if uniq[-1] - uniq[0] + 1 == uniq.size:
        data = ds[uniq[0]:uniq[-1] + 1]
    else:
        data = ds[uniq]
    return data[inverse]
