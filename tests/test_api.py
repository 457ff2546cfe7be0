import os
import signal
import subprocess
import sys
import textwrap
import time

import astropy.units as u
import h5py
import numpy as np
import pytest
import torch
from astropy.table import Table

import astroclip
from astroclip import api
from astroclip.inputs import grid
from astroclip.models.clip import AstroCLIP
from astroclip.models.weights import save_model


def tiny_model():
    torch.manual_seed(1)
    return AstroCLIP(
        image=dict(backbone="resnet", embed_dim=16, crop_size=32,
                   backbone_kwargs=dict(layers=(1, 1, 1, 1), width=4, mlp_hidden=32)),
        spectrum=dict(backbone=dict(embed_dim=16, num_layers=1, num_heads=2, window=20,
                                    stride=10), pooling=dict(num_heads=2)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(tiny_model(), path)
    return path


def fake_spectra(n, rng):
    wave = grid.WAVELENGTH
    z = rng.uniform(0.05, 0.4, n)
    flux = 5 + rng.normal(0, 0.5, (n, grid.N_PIXELS))
    for i in range(n):
        flux[i] += 30 * np.exp(-0.5 * ((wave - 6563 * (1 + z[i])) / 3) ** 2)
    return flux.astype(np.float32)


def fake_images(n, rng):
    return rng.normal(0, 0.01, (n, 3, 152, 152)).astype(np.float32) + 0.05


def test_embed_spectrum_quantity_and_batch_independence(model_dir, rng):
    flux = fake_spectra(9, rng) * grid.FLUX_UNIT
    e1 = astroclip.embed_spectrum(flux, wavelength=grid.wavelength_grid(), model=model_dir,
                                  batch_size=1, progress=False)
    e7 = astroclip.embed_spectrum(flux, wavelength=grid.wavelength_grid(), model=model_dir,
                                  batch_size=7, progress=False)
    assert e1.shape == (9, 16) and e1.dtype == np.float32
    assert np.max(np.abs(e1 - e7)) < 1e-5
    # units do not matter: the same spectra in W/m2/nm give the same embeddings
    e_si = astroclip.embed_spectrum(flux.to(u.W / u.m**2 / u.nm),
                                    wavelength=grid.wavelength_grid().to(u.nm),
                                    model=model_dir, progress=False)
    assert np.max(np.abs(e1 - e_si)) < 1e-4
    # distinct spectra give distinct embeddings
    assert np.linalg.norm(e1[0] - e1[1]) > 1e-4


def test_embed_spectrum_normalised_and_table(model_dir, rng):
    flux = fake_spectra(4, rng) * grid.FLUX_UNIT
    t = astroclip.embed_spectrum(flux, wavelength=grid.wavelength_grid(), model=model_dir,
                                 normalize=True, as_table=True, progress=False,
                                 meta=Table({"TARGETID": np.arange(4) + 100}))
    assert list(t["TARGETID"]) == [100, 101, 102, 103]
    np.testing.assert_allclose(np.linalg.norm(t["spectrum_embedding"], axis=1), 1, rtol=1e-5)
    assert len(t.meta["spectrum_weights_sha256"]) == 64
    assert t.meta["spectrum_astroclip_version"] == astroclip.__version__


def test_embed_spectrum_real_desi_file(model_dir):
    import specutils
    path = os.path.join(os.path.dirname(specutils.__file__),
                        "io/default_loaders/tests/desi_test_data/coadd-sv3-dark-26065.fits")
    t = astroclip.embed_spectrum(path, model=model_dir, as_table=True, progress=False)
    assert "TARGETID" in t.colnames
    assert np.all(np.isfinite(t["spectrum_embedding"]))


def test_embed_image_arrays_table_and_batch_independence(model_dir, rng):
    imgs = fake_images(5, rng)
    e1 = astroclip.embed_image(imgs, bands="grz", unit="nanomaggy", model=model_dir,
                               batch_size=1, progress=False)
    e5 = astroclip.embed_image(imgs, bands="grz", unit="nanomaggy", model=model_dir,
                               batch_size=5, progress=False)
    assert e1.shape == (5, 16)
    assert np.max(np.abs(e1 - e5)) < 1e-5
    table = Table({"ID": np.arange(5), "image": imgs * u.nanomaggy})
    t = astroclip.embed_image(table, bands="grz", model=model_dir, as_table=True,
                              progress=False)
    assert list(t["ID"]) == list(range(5))
    assert np.max(np.abs(t["image_embedding"] - e1)) < 1e-5


def test_load_model_errors(tmp_path, model_dir):
    with pytest.raises(ValueError, match="unknown model"):
        astroclip.load_model("definitely-not-a-model")
    # weights that do not match the architecture of config.json
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    cfg = (model_dir / "config.json").read_text().replace('"embed_dim": 16', '"embed_dim": 24')
    (bad / "config.json").write_text(cfg)
    with pytest.raises(ValueError):
        astroclip.load_model(bad)


def test_spectrum_only_model_cannot_embed_images(tmp_path, rng):
    from astroclip.exceptions import InputError
    from astroclip.models.heads import MLP
    from astroclip.models.spectrum import SpectrumEncoder

    enc = SpectrumEncoder(embed_dim=16, num_layers=1, num_heads=2)
    with pytest.raises(InputError, match=r"cannot embed image data.*embed_spectrum"):
        api._encoder(enc, "image")
    # a bare spectrum transformer embeds with the mean of its output tokens
    flux = fake_spectra(3, rng)
    emb = astroclip.embed_spectrum(flux * grid.FLUX_UNIT, wavelength=grid.wavelength_grid(),
                                   model=enc, progress=False, device="cpu")
    with torch.no_grad():
        tokens = enc.eval()(torch.from_numpy(flux))
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(emb, tokens.mean(1).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=r"'MLP' \(MLP\) cannot embed spectrum data: it has no "
                                         r"encode_spectrum method"):
        astroclip.embed_spectrum(flux * grid.FLUX_UNIT, wavelength=grid.wavelength_grid(),
                                 model=MLP(4, (8,), 2), progress=False, device="cpu")

    class Tokens(torch.nn.Module):      # an embedding method that forgot to pool
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def encode_spectrum(self, flux):
            return flux[:, :10, None].expand(-1, -1, 4) * self.w

    with pytest.raises(InputError, match=r"Tokens returned an output of shape \(3, 10, 4\) for "
                                         r"a batch of 3; an embedding must be \(batch, d\)"):
        astroclip.embed_spectrum(flux * grid.FLUX_UNIT, wavelength=grid.wavelength_grid(),
                                 model=Tokens(), progress=False, device="cpu")


def _write_paired(path, n, rng):
    from astroclip.data.paired import PairedDatasetWriter
    with PairedDatasetWriter(path, label_names=("Z",)) as w:
        for start in range(0, n, 7):
            m = min(7, n - start)
            w.append(targetid=np.arange(start, start + m) + 1000, ra=np.zeros(m),
                     dec=np.zeros(m), flux=fake_spectra(m, rng),
                     ivar=np.ones((m, grid.N_PIXELS), np.float32),
                     image=fake_images(m, rng), split=np.zeros(m, np.int8),
                     labels={"Z": np.zeros(m)})


def test_embed_catalog_hdf5_matches_direct_and_resumes(tmp_path, model_dir, rng,
                                                        monkeypatch):
    src = tmp_path / "survey.h5"
    _write_paired(src, 20, rng)
    out = tmp_path / "emb.h5"
    ref = astroclip.embed_catalog(src, out=tmp_path / "ref.h5", model=model_dir,
                                  chunk_size=6, progress=False)
    with h5py.File(ref) as f:
        ref_ids = f["targetid"][:]
        ref_spec = f["spectrum_embedding"][:]
        ref_img = f["image_embedding"][:]
    assert list(ref_ids) == list(range(1000, 1020))
    direct = astroclip.embed_spectrum(src, model=model_dir, progress=False)
    assert np.max(np.abs(direct - ref_spec)) < 1e-5

    # crash during the third chunk, then resume
    calls = {"n": 0}
    real = api._run_batches

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_run_batches", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        astroclip.embed_catalog(src, out=out, model=model_dir, chunk_size=6, progress=False)
    assert not out.exists()
    assert len(list((tmp_path / "emb.h5.parts").glob("chunk_*.npz"))) == 2
    monkeypatch.setattr(api, "_run_batches", real)
    astroclip.embed_catalog(src, out=out, model=model_dir, chunk_size=6, progress=False)
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["targetid"][:], ref_ids)
        np.testing.assert_array_equal(f["spectrum_embedding"][:], ref_spec)
        np.testing.assert_array_equal(f["image_embedding"][:], ref_img)
    assert not (tmp_path / "emb.h5.parts").exists()
    with pytest.raises(FileExistsError):
        astroclip.embed_catalog(src, out=out, model=model_dir, progress=False)


def test_embed_catalog_killed_process_resumes(tmp_path, model_dir, rng):
    src = tmp_path / "survey.h5"
    _write_paired(src, 24, rng)
    out = tmp_path / "emb.fits"
    script = textwrap.dedent(f"""
        import time
        import astroclip
        from astroclip import api
        real = api._run_batches
        def slow(*a, **k):
            r = real(*a, **k)
            time.sleep(0.4)
            return r
        api._run_batches = slow
        astroclip.embed_catalog({str(src)!r}, out={str(out)!r}, model={str(model_dir)!r},
                                modality="spectrum", chunk_size=4, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    parts = tmp_path / "emb.fits.parts"
    deadline = time.time() + 120
    while (time.time() < deadline and proc.poll() is None
           and len(list(parts.glob("chunk_*.npz"))) < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(list(parts.glob("chunk_*.npz")))
    assert 2 <= n_done < 6, "the process should have been killed mid-way"
    assert not out.exists()
    astroclip.embed_catalog(src, out=out, model=model_dir, modality="spectrum",
                            chunk_size=4, progress=False)
    t = Table.read(out)
    assert list(t["targetid"]) == list(range(1000, 1024))
    direct = astroclip.embed_spectrum(src, model=model_dir, progress=False)
    assert np.max(np.abs(np.asarray(t["spectrum_embedding"]) - direct)) < 1e-5


def test_embed_catalog_bad_inputs(tmp_path, model_dir, rng):
    flux = fake_spectra(3, rng) * grid.FLUX_UNIT
    with pytest.raises(ValueError, match="modality"):
        astroclip.embed_catalog(flux, out=tmp_path / "a.h5", modality="radio",
                                model=model_dir)
    with pytest.raises(ValueError, match="format"):
        astroclip.embed_catalog(flux, out=tmp_path / "a.txt", model=model_dir)
    with pytest.raises(ValueError, match="differ in length"):
        astroclip.embed_catalog({"spectrum": flux, "image": fake_images(2, rng)},
                                out=tmp_path / "b.h5", model=model_dir,
                                wavelength=grid.wavelength_grid(), bands="grz",
                                unit="nanomaggy", progress=False)


def test_embed_catalog_parquet(tmp_path, model_dir, rng):
    flux = fake_spectra(5, rng) * grid.FLUX_UNIT
    out = tmp_path / "emb.parquet"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pyarrow"):
            astroclip.embed_catalog(flux, out=out, modality="spectrum", model=model_dir,
                                    wavelength=grid.wavelength_grid(), progress=False)
        return
    astroclip.embed_catalog(flux, out=out, modality="spectrum", model=model_dir,
                            wavelength=grid.wavelength_grid(), progress=False)
    import pyarrow.parquet  # astropy reads Parquet only with pandas as well

    assert pyarrow.parquet.read_table(out).num_rows == 5
