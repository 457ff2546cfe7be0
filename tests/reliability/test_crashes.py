"""Item 4 of issue 16: clear errors (named object, the fix) instead of crashes and riddles."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import h5py
import numpy as np
import pytest
import torch

import astroclip
from astroclip import api
from astroclip.cli import main
from astroclip.exceptions import (AstroclipWarning, DataFileError, DeviceUnavailableError,
                                  InputError, ModelFormatError, OptionalDependencyError)
from astroclip.models.weights import save_model

from ..test_api import fake_images, tiny_model
from .conftest import write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model_copy(tmp_path, model_path):
    import shutil
    return shutil.copytree(model_path, tmp_path / "copy")


# ------------------------------------------------------------------ weights and configs
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.bfloat16])
def test_weights_of_another_float_dtype_are_cast_with_a_warning(tmp_path, dtype):
    model = tiny_model().to(dtype)
    folder = save_model(model, tmp_path / "m")
    with pytest.warns(AstroclipWarning, match="float32") as record:
        loaded = astroclip.load_model(folder, device="cpu")
    assert str(dtype).split(".")[-1] in str(record[0].message)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    emb = astroclip.embed_image(fake_images(2, np.random.default_rng(0)), bands="grz",
                                unit="nanomaggy", model=folder, progress=False)
    assert np.isfinite(emb).all()


def test_truncated_weights_name_the_file_and_the_fix(model_copy):
    path = model_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFormatError, match="truncated or corrupt") as info:
        astroclip.load_model(model_copy, device="cpu")
    assert str(path) in str(info.value) and "copy" in str(info.value)


@pytest.mark.parametrize("text, problem", [("{not json", "not valid JSON"),
                                           ("[1, 2, 3]", "not a JSON object"),
                                           ('{"format": "astroclip-weights"}', "no 'class'")])
def test_broken_config_names_the_file_and_the_fix(model_copy, text, problem):
    (model_copy / "config.json").write_text(text)
    with pytest.raises(ModelFormatError, match=problem) as info:
        astroclip.load_model(model_copy, device="cpu")
    assert str(model_copy / "config.json") in str(info.value)
    assert "save_model" in str(info.value)


def test_one_broken_folder_does_not_break_list_models(model_path, private_model_dir):
    from astroclip.registry import register_model
    register_model(model_path, "good")
    bad = register_model(model_path, "bad")
    (bad / "config.json").write_text("{oops")
    table = astroclip.list_models()
    rows = {name: row for name, row in zip(table["name"], table)}
    assert rows["good"]["available"] and not rows["bad"]["available"]
    assert "not valid JSON" in rows["bad"]["description"]
