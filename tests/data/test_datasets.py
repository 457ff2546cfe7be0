"""PairedDataset over the layout registry (items, splits, crops, workers) and convert_to_paired."""

import numpy as np
import pytest
import torch

from astroclip.data.datasets import PairedDataset
from astroclip.data.paired import PairedDatasetWriter
from astroclip.inputs import grid

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
