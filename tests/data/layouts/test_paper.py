"""Layout "paper": the paper's published paired file, read lazily, in blocks and by the api."""

import h5py
import numpy as np
import pytest
import torch

from astroclip.data.datasets import PairedDataset, convert_to_paired
from astroclip.data.layouts import PAPER_TRAIN_FRACTION, identify_layout, open_layout
from astroclip.data.paired import read_paired_dataset

from ._make import _write_paper


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


def test_paper_file_read_in_blocks_like_item_by_item(tmp_path, rng):
    path = tmp_path / "astroclip_desi.1.1.5.h5"
    truth = _write_paper(path, rng)
    assert identify_layout(path) == "paper"
    ds = PairedDataset(path)
    rows = [16, 2, 11, 2]  # across both groups, unsorted, repeated
    table, arrays = read_paired_dataset(path, rows=rows)
    assert table.meta["source_layout"] == "paper" and table.colnames == ["targetid", "split", "Z"]
    for k, r in enumerate(rows):
        item = ds[r]
        assert int(table["targetid"][k]) == int(item["targetid"])
        np.testing.assert_array_equal(arrays["image"][k], item["image"].numpy())
        np.testing.assert_array_equal(arrays["flux"][k], item["spectrum"].numpy())
        np.testing.assert_array_equal(arrays["ivar"][k], item["spectrum_ivar"].numpy())
    sky, _, _, tids = truth[1]
    np.testing.assert_array_equal(arrays["image"][0], sky[6])
    test, _ = read_paired_dataset(path, split="test", fields=[])
    assert len(test) == 17 - sum(int(np.floor(PAPER_TRAIN_FRACTION * n)) for n in (10, 7))
    assert open_layout(path, label_names=[]).label_names == []
    ds.close()


def test_the_api_embeds_the_paper_file_through_the_registry(tmp_path, rng):
    from astroclip import embed_catalog, embed_image, embed_spectrum
    from astroclip.data.embeddings import read_embeddings

    from ...test_api import tiny_model

    path = tmp_path / "astroclip_desi.1.1.5.h5"
    _write_paper(path, rng, sizes=(5, 4))
    model = tiny_model()
    spectra = embed_spectrum(path, model=model, device="cpu", progress=False)
    images = embed_image(path, model=model, device="cpu", progress=False)
    assert spectra.shape[0] == images.shape[0] == 9
    out = embed_catalog(path, out=tmp_path / "emb.h5", model=model, chunk_size=4,
                        device="cpu", progress=False)
    ids, emb, _ = read_embeddings(out)
    np.testing.assert_array_equal(ids, read_paired_dataset(path, fields=[])[0]["targetid"])
    np.testing.assert_allclose(emb["spectrum"], spectra, atol=1e-5)
    np.testing.assert_allclose(emb["image"], images, atol=1e-5)
