"""The layout registry: identify a file, name what is wrong, and take new layouts."""

import h5py
import numpy as np
import pytest
from astropy.table import Table

from astroclip.data import layouts
from astroclip.data.datasets import PairedDataset
from astroclip.data.layouts import (LayoutReader, get_layout, identify_layout, list_layouts,
                                    open_layout, register_layout, resolve_layout)
from astroclip.data.paired import read_paired_dataset
from astroclip.exceptions import InputError
from astroclip.inputs import grid

from ..test_paired import _chunk, _write
from ._make import _write_mmu, _write_paper


def test_every_layout_is_identified(tmp_path, rng):
    assert list_layouts() == ("astroclip", "paper", "mmu")
    ours, paper = tmp_path / "ours.h5", tmp_path / "paper.h5"
    _write(ours, [_chunk(rng, 2)])
    _write_paper(paper, rng, sizes=(2,))
    spath, ipath, _ = _write_mmu(tmp_path, rng)
    assert [identify_layout(p) for p in (ours, paper, spath, ipath)] == [
        "astroclip", "paper", "mmu", "mmu"]
    assert resolve_layout(ours) == "astroclip" and resolve_layout((spath, ipath)) == "mmu"
    with h5py.File(ours) as f:
        assert identify_layout(f) == "astroclip"


def test_files_of_no_layout_and_wrong_numbers_of_files(tmp_path, rng):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    assert identify_layout(other) is None
    with pytest.raises(InputError, match=r"other\.h5 is not a paired file of a known layout; "
                                         r"the known layouts are: an astroclip paired file "
                                         r"\(astroclip\); the paper's .*PairedDatasetWriter"):
        PairedDataset(other)
    # a file of another astroclip format is named by its format attribute
    with h5py.File(other, "a") as f:
        f.attrs["format"] = "astroclip-embeddings"
    with pytest.raises(InputError, match="its format attribute says 'astroclip-embeddings'"):
        read_paired_dataset(other)
    spath, ipath, _ = _write_mmu(tmp_path, rng)
    with pytest.raises(InputError, match=r"desi\.hdf5 is a single file of a pairing \(a "
                                         r"Multimodal Universe file\); give the spectra and the "
                                         r"images files together: PairedDataset\(\(spectra_path"):
        PairedDataset(spath)
    with pytest.raises(InputError, match=r"layout 'mmu' takes 2 file\(s\) \(spectra, images\), "
                                         "not 3"):
        open_layout((spath, ipath, ipath))
    with pytest.raises(InputError, match=r"layout 'astroclip' takes 1 file"):
        open_layout((spath, ipath), layout="astroclip")
    with pytest.raises(InputError, match=r"unknown layout 'fits'; layout must be 'auto' or one "
                                         r"of \['astroclip', 'paper', 'mmu'\]"):
        PairedDataset(other, layout="fits")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PairedDataset(tmp_path / "missing.h5")
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(OSError, match="truncated, corrupt or not HDF5"):
        PairedDataset(broken)


class _FlatReader(LayoutReader):
    """A layout of someone else's: one dataset per quantity, labels in a group."""

    layout = "flat"

    def __init__(self, path, *, label_names=None):
        super().__init__((path,))
        with h5py.File(path) as f:
            self.n = len(f["ids"])
            self.label_names = ["Z"]
            self.image_shape = f["cutouts"].shape[1:]
            self._table = Table({"targetid": f["ids"][:], "split": np.zeros(self.n, np.int8),
                                 "Z": f["z"][:]})

    def read(self, files, ref):
        f = files[0]
        return {"targetid": f["ids"][ref], "spectrum": f["flux"][ref],
                "spectrum_ivar": np.ones(grid.N_PIXELS, np.float32),
                "image": f["cutouts"][ref], "Z": f["z"][ref]}


def test_a_registered_layout_is_read_everywhere(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(layouts, "_REGISTRY", dict(layouts._REGISTRY))
    path = tmp_path / "flat.h5"
    with h5py.File(path, "w") as f:
        f["ids"] = np.arange(4) + 70
        f["z"] = rng.uniform(0, 1, 4)
        f["flux"] = rng.normal(size=(4, grid.N_PIXELS)).astype(np.float32)
        f["cutouts"] = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
    spec = register_layout("flat", identify=lambda f: "cutouts" in f, reader=_FlatReader,
                           description="a flat file")
    assert get_layout("flat") is spec and identify_layout(path) == "flat"
    with pytest.raises(InputError, match="already registered"):
        register_layout("flat", identify=lambda f: False, reader=_FlatReader)
    ds = PairedDataset(path, crop=4)
    assert ds.layout == "flat" and len(ds) == 4 and ds[2]["image"].shape == (3, 4, 4)
    table, arrays = read_paired_dataset(path, rows=[3, 1])
    np.testing.assert_array_equal(table["targetid"], [73, 71])
    np.testing.assert_array_equal(arrays["image"][0], PairedDataset(path)[3]["image"].numpy())
    ds.close()
