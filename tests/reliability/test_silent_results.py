"""Item 3 of issue 16: no silently wrong labels, unflagged sky fibres, ignored masks or NaN."""

import warnings

import astropy.units as u
import h5py
import numpy as np
import pytest
import torch
from astropy.table import MaskedColumn, Table
from astropy.utils.masked import Masked

import astroclip
from astroclip import api
from astroclip.data.paired import PairedDatasetWriter, read_paired_dataset
from astroclip.exceptions import AstroclipWarning, InputError, ModelFormatError, NonFiniteError
from astroclip.inputs import grid
from astroclip.inputs.images import PreparedImages, prepare_images

from ..test_api import fake_images, fake_spectra
from .conftest import desi_coadd, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")
WAVE = grid.wavelength_grid()


# ------------------------------------------------------------------ duplicate identifiers
def test_evaluation_refuses_duplicate_targetids_in_the_labels(tmp_path):
    from astroclip.evaluation import labelled_embeddings

    labels = write_pairs(tmp_path / "labels.h5", n=8)
    with h5py.File(labels, "a") as f:
        f["targetid"][3] = f["targetid"][2]  # two rows claim TARGETID 102
    with pytest.raises(InputError, match="102") as info:
        labelled_embeddings((np.arange(100, 108), {"image": np.zeros((8, 4))}), labels)
    assert str(labels) in str(info.value) and "one row per targetid" in str(info.value)


@pytest.mark.parametrize("where", ["within a chunk", "across appends"])
def test_writer_refuses_duplicate_targetids(tmp_path, where, rng):
    n = 4
    chunk = dict(ra=np.zeros(n), dec=np.zeros(n), flux=fake_spectra(n, rng),
                 ivar=np.ones((n, grid.N_PIXELS)), image=np.zeros((n, 3, 8, 8)), split="train")
    path = tmp_path / "pairs.h5"
    with PairedDatasetWriter(path, image_size=8) as w:
        if where == "within a chunk":
            ids, message = [1, 2, 3, 2], "appear more than once"
        else:
            w.append(targetid=[1, 2, 3, 4], **chunk)
            ids, message = [5, 6, 4, 7], "already in"
        with pytest.raises(InputError, match=message) as info:
            w.append(targetid=ids, **chunk)
        assert str(path) in str(info.value) and "unique" in str(info.value)
        w.append(targetid=[10, 11, 12, 13], **chunk)  # the writer is still usable
    table, _ = read_paired_dataset(path, fields=())
    assert len(set(table["targetid"])) == len(table)


# ------------------------------------------------------------------ sky and empty fibres
def test_catalog_flags_the_unusable_desi_fibres(tmp_path, model_path):
    out = tmp_path / "emb.fits"
    with pytest.warns(AstroclipWarning, match="4 of 5 rows"):
        astroclip.embed_catalog(desi_coadd("coadd-5-169-thru20210419.fits"), out=out,
                                model=model_path, modality="spectrum", progress=False)
    t = Table.read(out)
    assert list(t["valid"]) == [False, False, False, False, True]
    assert "no valid pixel" in t["problem"][1] and not t["problem"][4]


def test_catalog_flags_sky_fibres_as_not_targets(tmp_path, model_path):
    out = tmp_path / "emb.h5"
    with pytest.warns(AstroclipWarning, match="3 of 5 rows"):
        astroclip.embed_catalog(desi_coadd(), out=out, model=model_path, modality="spectrum",
                                progress=False)
    with h5py.File(out) as f:
        valid = f["valid"][:]
        problem = [p.decode() for p in f["problem"][:]]
    assert valid.tolist() == [False, False, True, False, True]
    assert "sky fibre" in problem[3]


def test_embed_spectrum_array_warns_about_invalid_rows(model_path):
    with pytest.warns(AstroclipWarning, match="4 of 5 spectra.*as_table=True"):
        emb = astroclip.embed_spectrum(desi_coadd("coadd-5-169-thru20210419.fits"),
                                       model=model_path, progress=False)
    assert emb.shape == (5, 16)


def test_embed_spectrum_table_from_a_paired_file_has_flags(tmp_path, model_path):
    path = write_pairs(tmp_path / "p.h5", n=4)
    with h5py.File(path, "a") as f:
        f["spectrum/ivar"][1] = 0  # a spectrum without any valid pixel
        f["spectrum/flux"][1] = 0
    t = astroclip.embed_spectrum(path, model=model_path, as_table=True, progress=False)
    assert list(t["VALID"]) == [True, False, True, True]
    assert "no valid pixel" in t["PROBLEM"][1]


# ------------------------------------------------------------------ masks
def _spectra_with_junk(rng):
    flux = fake_spectra(3, rng)
    mask = np.zeros(flux.shape, bool)
    mask[0, :3000] = True
    junk = flux.copy()
    junk[mask] = 1e6
    return flux, junk, mask


@pytest.mark.parametrize("kind", ["numpy.ma", "astropy Masked"])
def test_masked_spectra_are_honoured(model_path, rng, kind):
    flux, junk, mask = _spectra_with_junk(rng)
    expected = astroclip.embed_spectrum(flux * grid.FLUX_UNIT, wavelength=WAVE, mask=mask,
                                        model=model_path, progress=False)
    if kind == "numpy.ma":  # (a MaskedArray times a unit loses its mask: give flux_unit=)
        masked, unit = np.ma.masked_array(junk, mask=mask), grid.FLUX_UNIT
    else:
        masked, unit = Masked(junk * grid.FLUX_UNIT, mask=mask), None
    got = astroclip.embed_spectrum(masked, wavelength=WAVE, flux_unit=unit, model=model_path,
                                   progress=False)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_masked_table_column_of_spectra_is_honoured(model_path, rng):
    flux, junk, mask = _spectra_with_junk(rng)
    expected = astroclip.embed_spectrum(flux * grid.FLUX_UNIT, wavelength=WAVE, mask=mask,
                                        model=model_path, progress=False)
    table = Table({"TARGETID": [1, 2, 3]})
    table["flux"] = MaskedColumn(junk, mask=mask, unit=grid.FLUX_UNIT)
    got = astroclip.embed_spectrum(table, model=model_path, progress=False)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["numpy.ma", "astropy Masked"])
def test_masked_images_are_filled(rng, kind):
    images = fake_images(2, rng)
    mask = np.zeros(images.shape, bool)
    mask[0, :, 70:80, 70:80] = True
    junk = images.copy()
    junk[mask] = 1e6
    masked = (np.ma.masked_array(junk, mask=mask) if kind == "numpy.ma"
              else Masked(junk * u.nanomaggy, mask=mask))
    prepared = prepare_images(masked, bands="grz", unit="nanomaggy" if kind == "numpy.ma"
                              else None)
    assert prepared.images.max() < 1
    assert prepared.images[0, 0, 75, 75] == 0
    assert list(prepared.meta["n_filled"]) == [300, 0]


# ------------------------------------------------------------------ NaN embeddings
def test_nan_weights_are_refused_at_load(tmp_path):
    from safetensors.torch import load_file, save_file

    from astroclip.models.weights import save_model

    from ..test_api import tiny_model

    folder = save_model(tiny_model(), tmp_path / "nan-model")
    state = load_file(folder / "model.safetensors")
    name = sorted(k for k in state if k.endswith("weight"))[0]
    state[name][0] = float("nan")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFormatError, match="NaN or infinite") as info:
        astroclip.load_model(folder, device="cpu")
    assert name in str(info.value) and "model.safetensors" in str(info.value)


def test_a_huge_pixel_is_an_error_naming_the_row_not_nan(model_path, rng):
    flux = fake_spectra(3, rng)
    flux[1, 100] = 1e25
    with pytest.raises(NonFiniteError, match="row 1 .*fluxes near 1e25"):
        astroclip.embed_spectrum(flux * grid.FLUX_UNIT, wavelength=WAVE, model=model_path,
                                 progress=False)


def test_standardisation_statistics_do_not_overflow():
    from astroclip.models.spectrum import SpectrumEncoder

    model = SpectrumEncoder(embed_dim=16, num_layers=1, num_heads=2)
    flux = torch.ones(2, grid.N_PIXELS)
    flux[1, 100] = 1e25
    x, mu, sigma = model.standardize(flux)
    assert torch.isfinite(x).all() and torch.isfinite(mu).all() and torch.isfinite(sigma).all()
    assert float(sigma[1]) == pytest.approx(1e25 / np.sqrt(grid.N_PIXELS), rel=1e-3)
    assert float(sigma[0]) == pytest.approx(model.min_std)


def test_nan_pixels_in_prepared_images_are_an_error(model_path, rng):
    images = fake_images(4, rng)
    images[2, 1, 76, 76] = np.nan
    with pytest.raises(NonFiniteError, match="row 2") as info:
        astroclip.embed_image(PreparedImages(images), model=model_path, progress=False)
    assert "prepare_images" in str(info.value)


def test_nan_image_in_a_paired_file_is_an_error(tmp_path, model_path):
    path = write_pairs(tmp_path / "p.h5", n=6)
    with h5py.File(path, "a") as f:
        image = f["image"][4]
        image[0, 70, 70] = np.nan
        f["image"][4] = image
    with pytest.raises(NonFiniteError, match="row 4") as info:
        astroclip.embed_catalog(path, out=tmp_path / "e.h5", model=model_path, chunk_size=4,
                                progress=False)
    assert str(path) in str(info.value)
    # the first chunk was done and is kept for a resume once the file is fixed
    assert (tmp_path / "e.h5.parts" / "chunk_0000000.npz").exists()


def test_nan_output_of_the_model_names_the_rows(rng):
    def broken(batch):  # NaN for the input row holding 5
        out = torch.ones(len(batch), 4)
        out[batch[:, 0] == 5] = float("nan")
        return out

    rows = np.arange(6.0)[:, None].repeat(3, axis=1)
    with pytest.raises(NonFiniteError, match="row 5 .*the inputs are finite"):
        api._run_batches(broken, rows, batch_size=4, device="cpu", progress=False,
                         desc="spectra")


# ------------------------------------------------------------------ few-shot MLP
def test_diverging_fewshot_head_restarts_with_a_lower_rate():
    from astroclip.evaluation import fewshot_regression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    y = x[:, 0] ** 2
    with pytest.warns(AstroclipWarning, match="diverged"):
        pred = fewshot_regression(x[:200], y[:200], x[200:], lr=10.0, max_epochs=20,
                                  device="cpu", progress=False)
    assert np.isfinite(pred).all() and np.abs(pred).max() < 50


def test_fewshot_head_that_cannot_converge_raises():
    from astroclip.evaluation import fewshot_regression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)) * 1e20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstroclipWarning)
        with pytest.raises(NonFiniteError, match="standardize=True"):
            fewshot_regression(x[:200], x[:200, 0] / 1e20, x[200:], standardize=False,
                               max_epochs=5, device="cpu", progress=False)
