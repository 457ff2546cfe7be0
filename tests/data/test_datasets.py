import h5py
import numpy as np
import pytest
import torch
from astropy.utils.exceptions import AstropyUserWarning

from astroclip.inputs import grid
from astroclip.data.hdf5 import PairedDatasetWriter
from astroclip.data.datasets import (PAPER_TRAIN_FRACTION, MultimodalUniverseDataset,
                                     PairedDataset, convert_to_paired)
from astroclip.data.hdf5 import read_paired_dataset

S = 16


@pytest.fixture
def paired_file(tmp_path, rng):
    n = 12
    data = dict(targetid=np.arange(n, dtype=np.int64) + 500, ra=rng.uniform(0, 10, n),
                dec=rng.uniform(0, 10, n),
                flux=rng.normal(size=(n, grid.N_PIXELS)).astype(np.float32),
                ivar=rng.uniform(0, 1, (n, grid.N_PIXELS)).astype(np.float32),
                image=rng.normal(size=(n, 3, S, S)).astype(np.float32),
                split=np.array([0, 0, 0, 1, 2, 0, 0, 1, 2, 0, 0, 0]),
                labels={"Z": rng.uniform(0, 1, n), "LOG_MSTAR": rng.uniform(8, 12, n)})
    path = tmp_path / "pairs.h5"
    with PairedDatasetWriter(path, label_names=("Z", "LOG_MSTAR"), image_size=S,
                             chunk_rows=4) as writer:
        for sl in (slice(0, 5), slice(5, 12)):
            chunk = {k: v[sl] for k, v in data.items() if k != "labels"}
            writer.append(**chunk, labels={k: v[sl] for k, v in data["labels"].items()})
    return path, data


def test_items_match_file(paired_file):
    path, data = paired_file
    ds = PairedDataset(path)
    assert ds.layout == "astroclip" and len(ds) == 12
    assert ds.label_names == ["Z", "LOG_MSTAR"]
    item = ds[3]
    assert set(item) == {"targetid", "spectrum", "spectrum_ivar", "image", "Z", "LOG_MSTAR"}
    assert item["targetid"].dtype == torch.int64 and item["targetid"].ndim == 0
    assert int(item["targetid"]) == 503
    assert item["spectrum"].dtype == torch.float32 and item["spectrum"].shape == (7781,)
    np.testing.assert_array_equal(item["spectrum"].numpy(), data["flux"][3])
    np.testing.assert_array_equal(item["spectrum_ivar"].numpy(), data["ivar"][3])
    np.testing.assert_array_equal(item["image"].numpy(), data["image"][3])
    assert item["Z"].dtype == torch.float32 and item["Z"].ndim == 0
    assert float(item["Z"]) == pytest.approx(data["labels"]["Z"][3], rel=1e-6)
    np.testing.assert_array_equal(ds[-1]["image"].numpy(), data["image"][-1])
    with pytest.raises(IndexError):
        ds[12]
    np.testing.assert_array_equal(ds.table["targetid"], data["targetid"])


def test_split_crop_labels_transform(paired_file):
    path, data = paired_file
    ds = PairedDataset(path, split="train", crop=8, label_names=["Z"],
                       transform=lambda item: {**item, "twice": 2 * item["Z"]})
    train = np.nonzero(data["split"] == 0)[0]
    assert len(ds) == len(train)
    item = ds[1]
    assert int(item["targetid"]) == data["targetid"][train[1]]
    np.testing.assert_array_equal(item["image"].numpy(), data["image"][train[1]][:, 4:12, 4:12])
    assert "LOG_MSTAR" not in item and float(item["twice"]) == pytest.approx(2 * float(item["Z"]))
    assert len(PairedDataset(path, split=["val", "test"])) == 4
    with pytest.raises(ValueError, match=r"no label columns \['SFR'\]"):
        PairedDataset(path, label_names=["SFR"])
    with pytest.raises(ValueError, match="crop=32 is larger"):
        PairedDataset(path, crop=32)


def test_dataloader_with_workers(paired_file):
    path, data = paired_file
    ds = PairedDataset(path)
    ds[0]  # opens the file in the parent: workers must not reuse that handle
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    batches = list(loader)
    ids = torch.cat([b["targetid"] for b in batches]).numpy()
    np.testing.assert_array_equal(ids, data["targetid"])
    images = torch.cat([b["image"] for b in batches]).numpy()
    np.testing.assert_array_equal(images, data["image"])
    assert batches[0]["Z"].shape == (5,)
    ds.close()


def _write_paper(path, rng, sizes=(10, 7)):
    truth = []
    with h5py.File(path, "w") as f:
        for g, n in enumerate(sizes):
            sky = rng.normal(size=(n, 3, 152, 152)).astype(np.float32)  # (band, y, x)
            spectra = rng.normal(size=(n, 7781)).astype(np.float32)
            spectra[:, :3] = np.nan
            grp = f.create_group(str(g))
            grp["images"] = sky.transpose(0, 3, 2, 1)  # stored (x, y, band)
            grp["spectra"] = spectra
            grp["redshifts"] = rng.uniform(0, 0.5, n).astype(np.float32)
            grp["targetids"] = np.arange(n, dtype=np.int64) + 1000 * g
            truth.append((sky, spectra, grp["redshifts"][:], grp["targetids"][:]))
    return truth


def test_paper_layout(tmp_path, rng):
    path = tmp_path / "astroclip_desi.1.1.5.h5"
    truth = _write_paper(path, rng)
    ds = PairedDataset(path)
    assert ds.layout == "paper" and len(ds) == 17 and ds.label_names == ["Z"]
    train = PairedDataset(path, split="train")
    test = PairedDataset(path, split="test", crop=96)
    n_train = [int(np.floor(PAPER_TRAIN_FRACTION * n)) for n in (10, 7)]
    assert len(train) == sum(n_train) and len(test) == 17 - sum(n_train)
    # first test row is row 8 of group 0
    item = test[0]
    sky, spectra, z, tids = truth[0]
    assert int(item["targetid"]) == tids[8]
    np.testing.assert_array_equal(item["image"].numpy(), sky[8][:, 28:124, 28:124])
    # group 1 rows follow group 0
    item = ds[12]
    sky, spectra, z, tids = truth[1]
    assert int(item["targetid"]) == 1002
    np.testing.assert_array_equal(item["image"].numpy(), sky[2])
    assert float(item["Z"]) == pytest.approx(z[2])
    ivar = item["spectrum_ivar"].numpy()
    flux = item["spectrum"].numpy()
    assert np.all(ivar[:3] == 0) and np.all(flux[:3] == 0) and np.all(ivar[3:] == 1)
    np.testing.assert_array_equal(flux[3:], spectra[2, 3:])
    assert not torch.isnan(item["spectrum"]).any()
    # conversion to the astroclip format keeps items, split and labels
    out = tmp_path / "converted.h5"
    assert convert_to_paired(path, out, batch_size=4, progress=False) == 17
    conv = PairedDataset(out)
    assert conv.layout == "astroclip" and len(PairedDataset(out, split="train")) == len(train)
    for k in (0, 9, 16):
        a, b = ds[k], conv[k]
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    table, _ = read_paired_dataset(out, fields=[])
    assert np.all(np.isnan(table["ra"])) and table.meta["source_layout"] == "paper"
    for d in (ds, train, test, conv):
        d.close()
    with pytest.raises(ValueError, match="incomplete"):
        with h5py.File(path, "a") as f:
            del f["1/redshifts"]
        PairedDataset(path)


def _write_mmu(tmp_path, rng, n_spec=6, n_img=5, size=160, scale=0.262,
               bands=("des-g", "des-r", "des-i", "des-z")):
    spath, ipath = tmp_path / "desi.hdf5", tmp_path / "legacysurvey.hdf5"
    ids = np.arange(n_spec, dtype=np.int64) + 39627000000000000
    ra, dec = rng.uniform(150, 151, n_spec), rng.uniform(2, 3, n_spec)
    flux = rng.normal(size=(n_spec, 7781)).astype(np.float32)
    mask = np.zeros((n_spec, 7781), dtype=bool)
    mask[:, 100:110] = True
    with h5py.File(spath, "w") as f:
        f["object_id"] = ids
        f["ra"], f["dec"] = ra, dec
        f["Z"] = rng.uniform(0, 1, n_spec)
        f["spectrum_flux"] = flux
        f["spectrum_ivar"] = np.ones((n_spec, 7781), dtype=np.float32)
        f["spectrum_lambda"] = np.tile(grid.WAVELENGTH.astype(np.float32), (n_spec, 1))
        f["spectrum_mask"] = mask
        f["spectrum_lsf_sigma"] = np.full(n_spec, 0.8, dtype=np.float32)
    # images: objects 1..n_img in reverse order (spectrum 0 has no image), plus a stranger
    order = np.arange(n_img, 0, -1)
    images = rng.normal(size=(n_img + 1, len(bands), size, size)).astype(np.float32)
    img_ids = [str(ids[k]).encode() for k in order] + [b"999"]
    with h5py.File(ipath, "w") as f:
        f["object_id"] = np.array(img_ids)
        f["ra"] = np.append(ra[order], 10.0)
        f["dec"] = np.append(dec[order], -10.0)
        f["image_array"] = images
        f["image_band"] = np.tile(np.array([b.encode() for b in bands]), (n_img + 1, 1))
        f["image_ivar"] = np.ones_like(images)
        f["image_mask"] = np.ones(images.shape, dtype=bool)
        f["image_psf_fwhm"] = np.ones((n_img + 1, len(bands)), dtype=np.float32)
        f["image_scale"] = np.full((n_img + 1, len(bands)), scale, dtype=np.float32)
    return spath, ipath, dict(ids=ids, flux=flux, images=images, order=order)


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
    with pytest.raises(ValueError, match="single Multimodal Universe file"):
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


def test_unknown_and_broken_files(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="neither an astroclip paired file"):
        PairedDataset(other)
    with pytest.raises(FileNotFoundError):
        PairedDataset(tmp_path / "missing.h5")
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(OSError, match="truncated, corrupt or not HDF5"):
        PairedDataset(broken)
    with pytest.raises(ValueError, match="layout must be"):
        PairedDataset(other, layout="fits")
