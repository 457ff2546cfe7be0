"""Smoke test of the core install (``pip install astroclip``, no extras).

Run by ``.ci/run`` in a virtualenv that holds the core dependencies only: it
imports the package, saves a tiny random-weight model, loads it back and embeds
a spectrum given as a `specutils.Spectrum` and an image given as `NDData`.  A
hard dependency hidden in that path (Lightning, FAISS, matplotlib, ...) fails
here.  It also checks that an optional feature names its extra when missing.
"""

import importlib.util
import sys
import tempfile
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from astropy.nddata import NDData
from specutils import Spectrum

import astroclip
from astroclip.exceptions import OptionalDependencyError
from astroclip.inputs import grid
from astroclip.models.clip import AstroCLIP
from astroclip.models.weights import save_model

OPTIONAL = ("lightning", "faiss", "matplotlib", "sklearn", "kcorrect", "speclite")


def main():
    present = [m for m in OPTIONAL if importlib.util.find_spec(m) is not None]
    assert not present, f"the core environment should not hold {present}"

    torch.manual_seed(0)
    model = AstroCLIP(
        image=dict(backbone="resnet", embed_dim=16, crop_size=32,
                   backbone_kwargs=dict(layers=(1, 1, 1, 1), width=4, mlp_hidden=32)),
        spectrum=dict(backbone=dict(embed_dim=16, num_layers=1, num_heads=2, window=20,
                                    stride=10), pooling=dict(num_heads=2)))
    folder = Path(tempfile.mkdtemp()) / "tiny"
    save_model(model, folder)

    rng = np.random.default_rng(0)
    wave = grid.WAVELENGTH * u.AA
    flux = (5 + rng.normal(0, 0.5, (2, wave.size))) * grid.FLUX_UNIT
    spec = Spectrum(flux=flux, spectral_axis=wave)
    e_spec = astroclip.embed_spectrum(spec, model=folder, progress=False)
    assert e_spec.shape == (2, 16) and np.all(np.isfinite(e_spec)), e_spec

    pixels = rng.normal(0.05, 0.01, (3, 152, 152)).astype(np.float32)
    image = NDData(pixels, unit=grid.NANOMAGGY)
    e_img = astroclip.embed_image(image, bands="grz", model=folder, progress=False)
    assert e_img.shape == (1, 16) and np.all(np.isfinite(e_img)), e_img

    try:
        astroclip.SimilarityIndex
    except OptionalDependencyError as exc:
        assert 'pip install "astroclip[search]"' in str(exc), exc
    else:
        raise AssertionError("SimilarityIndex imported without faiss")
    try:
        astroclip.align
    except OptionalDependencyError as exc:
        assert 'pip install "astroclip[train]"' in str(exc), exc
    else:
        raise AssertionError("align imported without lightning")
    print(f"core smoke test passed: astroclip {astroclip.__version__}, spectrum embedding "
          f"{e_spec.shape}, image embedding {e_img.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
