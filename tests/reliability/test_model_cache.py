"""Item 5 of issue 16: the model cache hands out models the caller cannot corrupt by accident."""

import json
import shutil

import numpy as np
import pytest
import torch

import astroclip
from astroclip import api
from astroclip.inputs import grid
from astroclip.models.factory import create_model as load_folder

from ..test_api import fake_spectra

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def flux(rng):
    return fake_spectra(3, rng) * grid.FLUX_UNIT


def _embed(flux, model):
    return astroclip.embed_spectrum(flux, wavelength=grid.wavelength_grid(), model=model,
                                    device="cpu", progress=False)


@pytest.mark.parametrize("change", ["half", "fine-tune", "train mode", "replace a layer"])
def test_changing_a_loaded_model_does_not_change_later_calls(model_path, flux, change):
    before = _embed(flux, model_path)
    mine = astroclip.load_model(model_path, device="cpu")
    if change == "half":
        mine.half()
    elif change == "fine-tune":
        with torch.no_grad():
            for p in mine.parameters():
                p.mul_(3.0)
    elif change == "train mode":
        mine.train()
    else:
        mine.spectrum_encoder = torch.nn.Identity()
    after = _embed(flux, model_path)
    assert np.array_equal(before, after)
    again = astroclip.load_model(model_path, device="cpu")
    assert again is not mine and not again.training
    assert all(p.dtype == torch.float32 for p in again.parameters())


def test_each_load_is_a_separate_model_with_its_provenance(model_path):
    a = astroclip.load_model(model_path, device="cpu")
    b = astroclip.load_model(model_path, device="cpu")
    assert a is not b
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
    assert api.model_info(a) == api.model_info(b)
    assert len(api.model_info(a)["weights_sha256"]) == 64


def test_an_edited_config_is_read_again(tmp_path, model_path, flux):
    folder = shutil.copytree(model_path, tmp_path / "model")
    before = _embed(flux, folder)
    doc = json.loads((folder / "config.json").read_text())
    doc["config"]["spectrum"]["pooling"]["num_heads"] = 4  # same tensors, other computation
    (folder / "config.json").write_text(json.dumps(doc))
    after = _embed(flux, folder)
    expected = _embed(flux, load_folder(folder))
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, expected, atol=1e-6)


def test_replaced_weights_are_read_again(tmp_path, model_path, other_model_path, flux):
    folder = shutil.copytree(model_path, tmp_path / "model")
    before = _embed(flux, folder)
    shutil.copy(other_model_path / "model.safetensors", folder / "model.safetensors")
    after = _embed(flux, folder)
    np.testing.assert_allclose(after, _embed(flux, other_model_path), atol=1e-6)
    assert not np.allclose(before, after)
    assert api.model_info(astroclip.load_model(folder, device="cpu"))["weights_sha256"] == \
        api.model_info(astroclip.load_model(other_model_path, device="cpu"))["weights_sha256"]
