"""Layout "astroclip": the checks of our paired file, and a reader that reads only what is asked."""

import h5py
import numpy as np
import pytest

from astroclip.data.layouts import open_layout
from astroclip.data.layouts.astroclip import FORMAT, identify
from astroclip.data.paired import read_paired_dataset
from astroclip.exceptions import InputError

from ..test_paired import _chunk, _write


def test_missing_fields_newer_versions_and_other_formats(tmp_path, rng):
    path = tmp_path / "pairs.h5"
    _write(path, [_chunk(rng, 3)])
    with h5py.File(path, "a") as f:
        assert identify(f) and f.attrs["format"] == FORMAT
        del f["spectrum/ivar"]
        del f["split"]
    with pytest.raises(InputError, match=r"lacks the required fields \['spectrum/ivar', "
                                         r"'split'\].*rebuild it"):
        read_paired_dataset(path)
    newer = tmp_path / "newer.h5"
    _write(newer, [_chunk(rng, 2)])
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(InputError, match="format_version 99.*upgrade astroclip"):
        read_paired_dataset(newer)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InputError, match=r"other\.h5 is not an astroclip paired file .*"
                                         "PairedDatasetWriter"):
        read_paired_dataset(other, layout="astroclip")


def test_reader_reads_the_rows_asked_for(tmp_path, rng):
    chunk = _chunk(rng, 9)
    path = tmp_path / "pairs.h5"
    _write(path, [chunk])
    reader = open_layout(path, label_names=["Z"])
    assert (reader.layout, reader.n, reader.label_names) == ("astroclip", 9, ["Z"])
    with reader.open() as files:
        table = reader.read_table(files, [8, 1])
        arrays = reader.read_rows(files, [8, 1], fields=("ivar",))
        np.testing.assert_array_equal(reader.split_codes(files), chunk["split"])
    assert table.colnames == ["targetid", "ra", "dec", "split", "Z"]
    np.testing.assert_array_equal(table["targetid"], chunk["targetid"][[8, 1]])
    assert set(arrays) == {"ivar"}
    np.testing.assert_array_equal(arrays["ivar"], chunk["ivar"][[8, 1]])
    with reader.open() as files:
        item = reader.read(files, 4)
    np.testing.assert_array_equal(item["image"], chunk["image"][4])
