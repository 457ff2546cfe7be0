"""Layout "mmu": a Multimodal Universe DESI file paired with a Legacy Survey file."""

import h5py
import numpy as np
import pytest
from astropy.utils.exceptions import AstropyUserWarning

from astroclip.data.datasets import MultimodalUniverseDataset, PairedDataset, convert_to_paired
from astroclip.data.paired import read_paired_dataset

from ._make import _write_mmu


@pytest.mark.parametrize("match", ["id", "sky"])
def test_multimodal_universe_pairs(tmp_path, rng, match):
    spath, ipath, t = _write_mmu(tmp_path, rng)
    with pytest.warns(AstropyUserWarning, match="1 spectra and 1 images without a partner"):
        ds = MultimodalUniverseDataset(spath, ipath, match=match)
    assert ds.layout == "mmu" and len(ds) == 5
    assert ds.match_report == {"n_spectra": 6, "n_images": 6, "n_matched": 5,
                               "n_unmatched_spectra": 1, "n_unmatched_images": 1}
    item = ds[0]  # spectrum row 1 pairs with image row n_img - 1 = 4
    assert int(item["targetid"]) == t["ids"][1]
    assert item["image"].shape == (3, 152, 152)
    np.testing.assert_array_equal(item["image"].numpy(), t["images"][4][[0, 1, 3], 4:156, 4:156])
    spec = item["spectrum"].numpy()
    ivar = item["spectrum_ivar"].numpy()
    assert np.all(ivar[100:110] == 0) and np.all(spec[100:110] == 0)
    np.testing.assert_array_equal(spec[:100], t["flux"][1, :100])
    assert "Z" in item
    # the tuple form with layout auto-detection gives the same pairs
    with pytest.warns(AstropyUserWarning):
        auto = PairedDataset((spath, ipath), split="test", crop=96)
    assert len(auto) == 1 and auto[0]["image"].shape == (3, 96, 96)
    out = tmp_path / "mmu_converted.h5"
    assert convert_to_paired(ds, out, progress=False) == 5
    table, arrays = read_paired_dataset(out)
    np.testing.assert_array_equal(table["targetid"], t["ids"][1:])
    np.testing.assert_allclose(table["ra"], ds.table["ra"])
    np.testing.assert_array_equal(arrays["image"][0], item["image"].numpy())


def test_multimodal_universe_bad_files(tmp_path, rng):
    spath, ipath, _ = _write_mmu(tmp_path, rng, scale=0.5)
    with pytest.raises(ValueError, match="image_scale .* differs"):
        MultimodalUniverseDataset(spath, ipath)
    (tmp_path / "b").mkdir()
    spath, ipath, _ = _write_mmu(tmp_path / "b", rng, bands=("des-g", "des-r", "des-i"))
    with pytest.raises(ValueError, match=r"lack \['z'\]"):
        MultimodalUniverseDataset(spath, ipath)
    with pytest.raises(ValueError, match="give the DESI file first"):
        MultimodalUniverseDataset(ipath, spath)
    with pytest.raises(ValueError, match="single file of a pairing"):
        PairedDataset(spath)
    with h5py.File(spath, "a") as f:
        del f["spectrum_lambda"]
        f["spectrum_lambda"] = np.linspace(3000, 9000, 7781)
    with pytest.raises(ValueError, match="not the DESI grid"):
        MultimodalUniverseDataset(spath, ipath)
    with h5py.File(spath, "a") as f:
        del f["spectrum_ivar"]
    with pytest.raises(ValueError, match=r"lacks the required fields \['spectrum_ivar'\]"):
        MultimodalUniverseDataset(spath, ipath)


def test_multimodal_universe_pair_read_in_blocks(tmp_path, rng):
    spath, ipath, t = _write_mmu(tmp_path, rng)
    with pytest.warns(AstropyUserWarning, match="without a partner"):
        table, arrays = read_paired_dataset((spath, ipath), rows=[3, 0])
    np.testing.assert_array_equal(table["targetid"], t["ids"][[4, 1]])
    assert arrays["image"].shape == (2, 3, 152, 152) and arrays["flux"].shape == (2, 7781)
    np.testing.assert_array_equal(arrays["flux"][1, :100], t["flux"][1, :100])
