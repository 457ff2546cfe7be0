"""HDF5 access: errors naming the file and the fix, split codes, rows in any order."""

import h5py
import numpy as np
import pytest

from astroclip.data.hdf5 import open_hdf5, read_rows, split_codes
from astroclip.data.paired import read_paired_dataset

from .test_paired import _chunk, _write


def test_split_codes():
    assert split_codes("val") == 1
    assert split_codes(["TRAIN", b"test", 1]).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="codes are 0"):
        split_codes([3])


def test_missing_truncated_corrupt_files(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_paired_dataset(tmp_path / "nope.h5")
    good = tmp_path / "good.h5"
    _write(good, [_chunk(rng, 6)])
    data = good.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated, corrupt or not HDF5"):
        read_paired_dataset(truncated)
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(OSError, match="cannot be read as HDF5"):
        read_paired_dataset(corrupt)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(OSError, match="it is empty"):
        open_hdf5(empty)


def test_read_rows_any_order_and_repeats(tmp_path):
    path = tmp_path / "rows.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(40).reshape(20, 2)
    with open_hdf5(path) as f:
        np.testing.assert_array_equal(read_rows(f["x"], np.array([5, 1, 5, 19])),
                                      np.arange(40).reshape(20, 2)[[5, 1, 5, 19]])
        np.testing.assert_array_equal(read_rows(f["x"], np.arange(20)), f["x"][...])
        assert read_rows(f["x"], np.array([], dtype=np.int64)).shape == (0, 2)
