"""Alignment training: learning, frozen parts, exact resume, 2-process DDP, bad input."""

import csv
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from astroclip.exceptions import ModelNotFoundError
from astroclip.models import factory, weights
from astroclip.models.clip import AstroCLIP
from astroclip.models.image import ImageEncoder
from astroclip.models.spectrum import SpectrumEncoder
from astroclip.training.align import align, build_clip_model, collate_pairs

HERE = Path(__file__).resolve().parent

# tiny models: one intra-op thread (the one_thread fixture of tests/conftest.py)
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]


class ToyPairs(torch.utils.data.Dataset):
    """Image-spectrum pairs sharing a 2-d latent ``u``.

    Spectrum: a power-law continuum whose slope is ``u0`` and an emission line
    whose wavelength is ``u1``; image: a round galaxy whose g/z colour is ``u0``
    and whose size is ``u1``; both with Gaussian noise.
    """

    def __init__(self, n, *, seed=0, size=40, noise=0.05):
        rng = np.random.default_rng(seed)
        u = rng.uniform(-1, 1, size=(n, 2))
        wave = np.linspace(3600, 9824, 7781)
        flux = (5 * (wave[None] / 6000.0) ** (1.5 * u[:, :1])
                + 8 * np.exp(-0.5 * ((wave[None] - (5000 + 1250 * (u[:, 1:] + 1))) / 30) ** 2))
        flux += noise * 5 * rng.normal(size=flux.shape)
        t = np.arange(size) - size / 2 + 0.5
        r2 = t[:, None] ** 2 + t[None] ** 2
        sig = 2.5 + 1.5 * (u[:, 1] + 1)
        prof = np.exp(-0.5 * r2[None] / sig[:, None, None] ** 2)
        colour = np.stack([1 - 0.5 * u[:, 0], np.ones(n), 1 + 0.5 * u[:, 0]], 1)
        img = colour[:, :, None, None] * prof[:, None] + noise * rng.normal(size=(n, 3, size, size))
        self.flux = torch.tensor(flux, dtype=torch.float32)
        self.img = torch.tensor(img, dtype=torch.float32)

    def __len__(self):
        return len(self.flux)

    def __getitem__(self, i):
        return {"image": self.img[i], "spectrum": self.flux[i], "targetid": torch.tensor(i)}


def tiny_parts(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    image = ImageEncoder(backbone="resnet", embed_dim=32, crop_size=32,
                         backbone_kwargs=dict(layers=(1, 1, 1, 1), width=8, mlp_hidden=64))
    spectrum = SpectrumEncoder(embed_dim=32, num_layers=1, num_heads=2, window=40, stride=40,
                               dropout=dropout)
    return image, spectrum


def read_log(run):
    rows = list(csv.DictReader(open(Path(run) / "logs" / "metrics.csv")))
    train = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    val = [{k: float(v) for k, v in r.items() if v != ""} for r in rows if r.get("val_loss")]
    return train, val


COMMON = dict(progress=False, accelerator="cpu", workers=0)


@pytest.fixture(scope="module")
def toy():
    return ToyPairs(512, seed=0), ToyPairs(64, seed=1)


# ----------------------------------------------------------------- it learns
def test_short_run_learns_and_retrieves(tmp_path, toy):
    train, val = toy
    image, spectrum = tiny_parts()
    model = align(train, val_data=val, out=tmp_path / "run", image_model=image,
                  spectrum_model=spectrum, freeze="none", batch_size=32, epochs=5, lr=3e-3,
                  **COMMON)
    tl, vl = read_log(tmp_path / "run")
    assert len(vl) == 5  # one validation per epoch (16 steps)
    assert np.mean(tl[-3:]) < np.mean(tl[:3]) - 0.5
    assert vl[-1]["val_loss"] < vl[0]["val_loss"] - 0.5
    # chance: top-1 1/64, top-5 5/64
    assert vl[-1]["val_image_to_spectrum_top1"] > 5 / 64
    assert vl[-1]["val_image_to_spectrum_top5"] > 0.4
    assert vl[-1]["val_spectrum_to_image_top5"] > 0.3
    assert vl[-1]["val_pairs"] == 64
    # the saved model is the returned one
    again = factory.create_model(tmp_path / "run")
    assert isinstance(again, AstroCLIP)
    x, f = val.img[:4], val.flux[:4]
    with torch.no_grad():
        assert torch.allclose(again.encode_image(x), model.encode_image(x), atol=1e-6)
        assert torch.allclose(again.encode_spectrum(f), model.encode_spectrum(f), atol=1e-6)
    assert (tmp_path / "run" / "last.ckpt").is_file()
    # the figures of the run
    import matplotlib.pyplot as plt
    from astroclip.plotting.training import plot_cross_modal_retrievals, plot_training_curves
    fig = plot_training_curves(tmp_path / "run", smooth=3)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3
    with torch.no_grad():
        zi, zs = model.encode_image(val.img), model.encode_spectrum(val.flux)
    fig2 = plot_cross_modal_retrievals(val.img.numpy(), val.flux.numpy(), zi, zs, k=2)
    assert len(fig2.axes) == 6
    plt.close("all")


def test_frozen_parameters_stay_unchanged(tmp_path, toy):
    train, _ = toy
    image, spectrum = tiny_parts()
    before_img = {k: v.clone() for k, v in image.state_dict().items()}
    before_spec = {k: v.clone() for k, v in spectrum.state_dict().items()}
    model = align(train, out=tmp_path / "run", image_model=image, spectrum_model=spectrum,
                  batch_size=32, max_steps=3, lr=1e-2, **COMMON)  # freeze="paper"
    after_img = model.image_encoder.state_dict()
    after_spec = model.spectrum_encoder.backbone.state_dict()
    for k, v in before_img.items():
        if k.startswith("backbone.fc."):
            assert not torch.equal(v, after_img[k]), k  # dense head trained
        else:
            assert torch.equal(v, after_img[k]), k  # convolutions and BN statistics frozen
    for k, v in before_spec.items():
        assert torch.equal(v, after_spec[k]), k
    assert model.config["freeze"] == {"image": "backbone", "spectrum": "backbone"}


# ------------------------------------------------------------------- resume
class Kill(Callback):
    class Killed(Exception):
        pass

    def __init__(self, at_step):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise self.Killed(f"killed at step {trainer.global_step}")


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, toy):
    train, val = toy
    kw = dict(val_data=val, freeze="none", batch_size=16, accumulate=2, max_steps=8,
              checkpoint_every=2, val_every=3, lr=3e-3, seed=3, **COMMON)

    def run(out, **extra):
        image, spectrum = tiny_parts(dropout=0.1)
        return align(train, out=out, image_model=image, spectrum_model=spectrum, **kw, **extra)

    full = run(tmp_path / "full")
    with pytest.raises(Kill.Killed):
        run(tmp_path / "cut", callbacks=[Kill(5)])
    assert (tmp_path / "cut" / "last.ckpt").is_file()
    assert not (tmp_path / "cut" / "config.json").exists()
    ckpt = torch.load(tmp_path / "cut" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    resumed = run(tmp_path / "cut", resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------- DDP
DDP_SCRIPT = """
import os
import sys
import torch
sys.path.insert(0, {here!r})
from test_align import ToyPairs, tiny_parts
from astroclip.training.align import align

torch.set_num_threads(1)
image, spectrum = tiny_parts()
model = align(ToyPairs(128), val_data=ToyPairs(24, seed=1), out={out!r} + "/run",
              image_model=image, spectrum_model=spectrum, freeze="none", batch_size=16,
              max_steps=4, val_every=2, lr=3e-3, accelerator="cpu", devices=2, strategy="ddp",
              gather_negatives=True, progress=False)
rank = os.environ["RANK"]  # set by torchrun
torch.save(model.state_dict(), {out!r} + f"/rank{{rank}}.pt")
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_ends_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(here=str(HERE), out=str(tmp_path))))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), str(script)],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # the run trained (weights moved from the common initialisation) and was saved once
    image, _ = tiny_parts()
    assert not torch.equal(r0["image_encoder.backbone.conv1.weight"], image.backbone.conv1.weight)
    saved = factory.create_model(tmp_path / "run")
    assert torch.equal(saved.state_dict()["image_encoder.backbone.conv1.weight"],
                       r0["image_encoder.backbone.conv1.weight"])
    meta = weights.read_model_config(tmp_path / "run")["metadata"]
    assert meta["world_size"] == 2 and meta["steps"] == 4
    _, val = read_log(tmp_path / "run")
    assert val and val[-1]["val_pairs"] == 24  # the sharded validation saw every pair once


# ---------------------------------------------------------------- bad input
def test_bad_input(tmp_path, toy):
    train, _ = toy
    image, spectrum = tiny_parts()
    kw = dict(image_model=image, spectrum_model=spectrum, max_steps=2, **COMMON)
    with pytest.raises(ValueError, match="at least 2"):
        align(torch.utils.data.Subset(train, [0]), out=tmp_path / "a", **kw)
    with pytest.raises(ValueError, match="at least 2"):
        align(torch.utils.data.Subset(train, []), out=tmp_path / "b", **kw)
    with pytest.raises(ValueError, match="does not split"):
        align(train, out=tmp_path / "c", batch_size=30, accumulate=4, **kw)
    with pytest.raises(ValueError, match="at least 2 pairs per loss"):
        align(train, out=tmp_path / "d", batch_size=1, **kw)
    with pytest.raises(ValueError, match="larger than the training set"):
        align(torch.utils.data.Subset(train, range(8)), out=tmp_path / "e", batch_size=16, **kw)
    with pytest.raises(ValueError, match="'image'"):
        collate_pairs([{"spectrum": torch.zeros(7781)}])
    with pytest.raises(ValueError, match="different shapes"):
        collate_pairs([{"image": torch.zeros(3, 8, 8), "spectrum": torch.zeros(7781)},
                       {"image": torch.zeros(3, 9, 9), "spectrum": torch.zeros(7781)}])
    # images smaller than the model's crop, and spectra off the grid
    small = _ListData([{"image": torch.zeros(3, 20, 20), "spectrum": torch.zeros(7781)}] * 8)
    with pytest.raises(ValueError, match="smaller than"):
        align(small, out=tmp_path / "f", batch_size=4, **kw)
    offgrid = _ListData([{"image": torch.zeros(3, 40, 40), "spectrum": torch.zeros(5000)}] * 8)
    with pytest.raises(ValueError, match="7781 pixels"):
        align(offgrid, out=tmp_path / "g", batch_size=4, **kw)


class _ListData(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_bad_models_and_folders(tmp_path, toy):
    train, _ = toy
    # a ViT (DINOv2 layout) checkpoint given for the ResNet architecture
    vit = ImageEncoder(backbone="vit", embed_dim=16, backbone_kwargs=dict(
        img_size=48, embed_dim=32, depth=1, num_heads=2))
    torch.save(vit.backbone.state_dict(), tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="another architecture"):
        build_clip_model(preset="small", image_model=tmp_path / "vit.pth")
    with pytest.raises(ModelNotFoundError, match="unknown image model 'no-such-model'"):
        build_clip_model(preset="small", image_model="no-such-model")
    with pytest.raises(ModelNotFoundError, match="unknown clip model 'huge'.*small-vit"):
        build_clip_model(preset="huge")
    # a finished run is not overwritten silently; resuming another configuration is refused
    image, spectrum = tiny_parts()
    align(train, out=tmp_path / "run", image_model=image, spectrum_model=spectrum,
          batch_size=32, max_steps=1, **COMMON)
    with pytest.raises(FileExistsError, match="overwrite"):
        align(train, out=tmp_path / "run", image_model=image, spectrum_model=spectrum,
              batch_size=32, max_steps=1, resume=False, **COMMON)
    image2 = ImageEncoder(backbone="resnet", embed_dim=32, crop_size=32,
                          backbone_kwargs=dict(layers=(1, 1, 1, 1), width=16, mlp_hidden=64))
    with pytest.raises(ValueError, match="another model configuration"):
        align(train, out=tmp_path / "run", image_model=image2, spectrum_model=spectrum,
              batch_size=32, max_steps=2, resume=True, **COMMON)


# ----------------------------------------------------------- file + command line
def test_command_line_on_a_training_file(tmp_path):
    from astroclip.cli import main
    from astroclip.data.paired import PairedDatasetWriter

    pairs = ToyPairs(48, seed=5)
    path = tmp_path / "train.h5"
    with PairedDatasetWriter(path, image_size=40) as w:
        w.append(targetid=np.arange(48), ra=np.zeros(48), dec=np.zeros(48),
                 flux=pairs.flux.numpy(), ivar=np.ones((48, 7781), np.float32),
                 image=pairs.img.numpy(), split=np.r_[np.zeros(40), np.ones(8)].astype(np.int8))
    image, spectrum = tiny_parts()
    weights.save_model(image, tmp_path / "img")
    weights.save_model(spectrum, tmp_path / "spec")
    rc = main(["align", "--data", str(path), "--out", str(tmp_path / "run"),
               "--image-model", str(tmp_path / "img"), "--spectrum-model", str(tmp_path / "spec"),
               "--batch-size", "8", "--max-steps", "5", "--freeze", "image=none,spectrum=backbone",
               "--accelerator", "cpu", "--no-progress"])
    assert rc == 0
    model = factory.create_model(tmp_path / "run")
    assert model.freeze == {"image": "none", "spectrum": "backbone"}
    # the spectrum transformer came from the saved folder and stayed frozen
    assert all(torch.equal(v, model.spectrum_encoder.backbone.state_dict()[k])
               for k, v in spectrum.state_dict().items())
    _, val = read_log(tmp_path / "run")
    assert val and val[-1]["val_pairs"] == 8  # the file's val rows
    assert main(["align", "--data", str(path), "--out", str(tmp_path / "run"), "--no-resume",
                 "--accelerator", "cpu", "--no-progress"]) == 1  # refuses to clobber
