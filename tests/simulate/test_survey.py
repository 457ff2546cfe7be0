"""The mock survey end to end: HDF5 file, determinism, torch Dataset, CLI, bad input."""

import hashlib

import numpy as np
import pytest

from astroclip.simulate import (LABEL_NAMES, MockSurveyDataset, SurveyConfig, generate_chunk,
                                simulate_catalog, simulate_survey)

OPTS = dict(image_size=32, neighbours=0.5)


@pytest.fixture(scope="module")
def survey_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mock") / "mock.h5"
    simulate_survey(10, out=path, seed=3, chunk_size=4, workers=1, progress=False, **OPTS)
    return path


def test_file_layout_and_truth(survey_file):
    from astroclip.data.paired import read_paired_dataset

    table, arrays = read_paired_dataset(survey_file)
    assert len(table) == 10 and list(table["targetid"]) == list(range(10))
    assert arrays["flux"].shape == (10, 7781) and arrays["image"].shape == (10, 3, 32, 32)
    assert set(LABEL_NAMES) <= set(table.colnames)
    assert set(np.unique(table["split"])) <= {0, 1, 2}
    assert table.meta["format"] == "astroclip-paired"
    _, truth = generate_chunk(SurveyConfig(seed=3, **OPTS), 0, 10)
    for name in ("Z", "LOG_MSTAR", "FLUX_R", "R_HALF", "EXPTIME"):
        assert np.array_equal(np.asarray(table[name]), np.asarray(truth[name]))
    # catalogue-only rows are the same galaxies
    cat = simulate_catalog(10, seed=3, **OPTS)
    assert np.array_equal(cat["FLUX_G"], truth["FLUX_G"])
    # BGS selection on extinction-corrected r
    r0 = 22.5 - 2.5 * np.log10(cat["FLUX_R"] / cat["MW_TRANSMISSION_R"])
    assert np.all(r0 < 19.5 + 1e-3)


def test_same_seed_same_bytes_any_workers(survey_file, tmp_path):
    from astroclip.data.paired import read_paired_dataset

    other = tmp_path / "again.h5"
    simulate_survey(10, out=other, seed=3, chunk_size=3, workers=2, progress=False, **OPTS)
    t1, a1 = read_paired_dataset(survey_file)
    t2, a2 = read_paired_dataset(other)
    for key in a1:
        assert a1[key].tobytes() == a2[key].tobytes()
    for name in t1.colnames:
        assert np.array_equal(np.asarray(t1[name]), np.asarray(t2[name]))
    # and the very same file bytes
    assert hashlib.sha256(survey_file.read_bytes()).digest() == \
        hashlib.sha256(other.read_bytes()).digest()
    different = tmp_path / "seed4.h5"
    simulate_survey(10, out=different, seed=4, progress=False, **OPTS)
    _, a3 = read_paired_dataset(different)
    assert not np.array_equal(a1["image"], a3["image"])


def test_dataset_items_equal_file_rows(survey_file):
    import torch

    from astroclip.data.paired import read_paired_dataset

    table, arrays = read_paired_dataset(survey_file)
    ds = MockSurveyDataset(10, seed=3, **OPTS)
    assert len(ds) == 10
    for i in (0, 7, -1):
        item = ds[i]
        row = i % 10
        assert item["targetid"].dtype == torch.int64 and int(item["targetid"]) == row
        assert torch.equal(item["spectrum"], torch.from_numpy(arrays["flux"][row]))
        assert torch.equal(item["spectrum_ivar"], torch.from_numpy(arrays["ivar"][row]))
        assert torch.equal(item["image"], torch.from_numpy(arrays["image"][row]))
        assert item["Z"].dtype == torch.float32 and item["Z"].ndim == 0
        assert float(item["Z"]) == pytest.approx(table["Z"][row], rel=1e-6)
    with pytest.raises(IndexError):
        ds[10]
    test = MockSurveyDataset(10, seed=3, split="train", labels=["Z"], **OPTS)
    assert len(test) == int(np.sum(table["split"] == 0))
    assert sorted(test[0]) == ["Z", "image", "spectrum", "spectrum_ivar", "targetid"]


def test_dataset_in_a_dataloader():
    import torch

    ds = MockSurveyDataset(6, seed=1, labels=["Z", "LOG_MSTAR"], image_size=24)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["spectrum"].shape == (3, 7781) and batch["image"].shape == (3, 3, 24, 24)
    assert batch["Z"].shape == (3,)


def test_image_flux_and_colour_gradient():
    config = SurveyConfig(seed=5, neighbours=0.0, image_size=152)
    arrays, truth = generate_chunk(config, 0, 16)
    flux = np.stack([truth["FLUX_G"], truth["FLUX_R"], truth["FLUX_Z"]], 1)
    total = arrays["image"].sum(axis=(2, 3), dtype=np.float64)
    noise = np.stack([truth[f"NOISE_SIGMA_{b}"] for b in "GRZ"], 1) * 152
    assert np.all(np.abs(total - flux) < 5 * noise + 0.02 * flux)
    # bulges are older and redder than discs: g - r is redder in the centre
    from astroclip.simulate.population import draw_population, galaxy_rngs
    from astroclip.simulate.images import render_images
    from astroclip.simulate.spectra import model_spectra
    from astroclip.simulate.photometry import filter_weights

    pop = draw_population(galaxy_rngs(5, range(16)), **config.limits)
    b, d, e = model_spectra(pop)
    w = filter_weights()
    img, _ = render_images(pop, b @ w, (d + e) @ w, galaxy_rngs(5, range(16)), size=96,
                           neighbours=0, noise=False)
    y, x = np.mgrid[:96, :96]
    r = np.hypot(x - 48, y - 48)
    inner = img[:, :, r < 2].sum(-1)
    outer = img[:, :, (r > 5) & (r < 15)].sum(-1)
    gr_in = -2.5 * np.log10(inner[:, 0] / inner[:, 1])
    gr_out = -2.5 * np.log10(outer[:, 0] / outer[:, 1])
    mixed = (truth["BT_R"] > 0.15) & (truth["BT_R"] < 0.85)
    assert mixed.sum() >= 3
    assert np.mean(gr_in[mixed] - gr_out[mixed]) > 0.0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n=0), ValueError, "positive"),
    (dict(n=-3), ValueError, "positive"),
    (dict(n=2.5), TypeError, "integer"),
    (dict(n=2, zmin=0.4, zmax=0.2), ValueError, "impossible redshift"),
    (dict(n=2, zmax=3.0), ValueError, "outside"),
    (dict(n=2, rmin=19.0, rmax=18.0), ValueError, "impossible magnitude"),
    (dict(n=2, rmax=40.0), ValueError, "plausible"),
    (dict(n=2, zmin=0.5, rmax=11.0), ValueError, "no galaxy"),
    (dict(n=2, zmxa=0.3), TypeError, "did you mean 'zmax'"),
    (dict(n=2, split=(0.5, 0.5, 0.5)), ValueError, "split"),
    (dict(n=2, workers=0), ValueError, "workers"),
])
def test_bad_input(tmp_path, kwargs, error, match):
    n = kwargs.pop("n")
    with pytest.raises(error, match=match):
        simulate_survey(n, out=tmp_path / "x.h5", progress=False, **kwargs)
    assert not (tmp_path / "x.h5").exists()


def test_existing_output(survey_file):
    before = hashlib.sha256(survey_file.read_bytes()).hexdigest()
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate_survey(2, out=survey_file, progress=False)
    assert hashlib.sha256(survey_file.read_bytes()).hexdigest() == before


def test_cli(tmp_path, capsys):
    from astroclip.cli import main

    out = tmp_path / "cli.h5"
    args = ["simulate", "--n", "3", "--out", str(out), "--seed", "2", "--image-size", "24",
            "--no-progress"]
    assert main(args) == 0
    assert out.exists()
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--zmin", "0.3", "--zmax", "0.1"]) == 1
    assert "impossible redshift" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--bogus"])
