import csv
import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from astroclip.cli import main
from astroclip.inputs import grid
from astroclip.models.spectrum import SpectrumEncoder
from astroclip.models.factory import create_model as load_model
from astroclip.models.weights import read_model_config
from astroclip.training.runs import find_resume_checkpoint
from astroclip.training.sampling import StepBatchSampler, step_seed
from astroclip.training.schedule import warmup_cosine_lambda
from astroclip.training.spectra import FluxDataset, pretrain_spectra

TINY = dict(embed_dim=32, num_layers=1, num_heads=2)

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")


def make_spectra(rng, n):
    """Power-law continua with redshifted emission/absorption lines and noise."""
    wave = grid.WAVELENGTH[None]
    z = rng.uniform(0.0, 0.5, (n, 1))
    flux = rng.uniform(1, 5, (n, 1)) * (wave / 6000.0) ** rng.uniform(-2, 1, (n, 1))
    for line, amp in [(6564.6, 3), (5008.2, 2), (4862.7, 1), (3728.5, 2), (3934.8, -0.5)]:
        flux = flux + amp * rng.uniform(0, 2, (n, 1)) * np.exp(
            -0.5 * ((wave - line * (1 + z)) / 4) ** 2)
    return (flux + rng.normal(0, 0.1, flux.shape)).astype(np.float32)


def _masked_loss(model, flux, seed=9):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return float(model.masked_prediction(flux, model.random_mask(len(flux), generator=g))["loss"])


# ------------------------------------------------------------------ common pieces
def test_warmup_cosine():
    f = warmup_cosine_lambda(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="min_lr_ratio"):
        warmup_cosine_lambda(warmup_steps=1, total_steps=10, min_lr_ratio=2)


def test_step_batch_sampler_is_a_function_of_the_step():
    sampler = StepBatchSampler(23, 5, seed=4)
    it = iter(sampler)
    batches = [next(it) for _ in range(20)]
    # every pass over the data visits each item once (23 items, 100 drawn)
    stream = np.concatenate(batches)
    for e in range(4):
        assert sorted(stream[23 * e:23 * (e + 1)]) == list(range(23))
    assert list(stream[:23]) != list(stream[23:46])          # reshuffled each pass
    # starting later gives exactly the later batches (what a resume needs)
    late = iter(StepBatchSampler(23, 5, seed=4, start=lambda: 7))
    assert [next(late) for _ in range(3)] == batches[7:10]
    # two ranks split each global batch of 2 x 5 items
    r0 = iter(StepBatchSampler(23, 5, seed=4, num_replicas=2, rank=0))
    r1 = iter(StepBatchSampler(23, 5, seed=4, num_replicas=2, rank=1))
    for b in range(3):
        assert next(r0) + next(r1) == batches[2 * b] + batches[2 * b + 1]
    assert next(iter(StepBatchSampler(23, 5, seed=5))) != batches[0]
    assert step_seed(1, 2, 3) != step_seed(1, 3, 2)
    with pytest.raises(ValueError, match="empty"):
        StepBatchSampler(0, 5)


# ------------------------------------------------------------------ training
def test_short_run_decreases_loss_and_writes_our_format(tmp_path, rng):
    train = make_spectra(rng, 64)
    val = torch.as_tensor(make_spectra(rng, 12))
    torch.manual_seed(0)
    before = _masked_loss(SpectrumEncoder(**TINY), val)
    model = pretrain_spectra(train, val_data=val, out=tmp_path, model_config=TINY,
                             max_steps=30, batch_size=8, lr=3e-3, val_every=15,
                             checkpoint_every=10, progress=False, seed=0)
    after = _masked_loss(model, val)
    assert after < 0.75 * before
    rows = list(csv.DictReader(open(tmp_path / "logs" / "metrics.csv")))
    train_losses = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    val_losses = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
    assert len(val_losses) == 2 and len(train_losses) >= 5
    assert np.mean(train_losses[-3:]) < train_losses[0]
    doc = read_model_config(tmp_path)
    assert doc["class"] == "SpectrumEncoder" and doc["metadata"]["steps"] == 30
    assert doc["config"]["embed_dim"] == 32 and doc["config"]["mask_run_length"] == 30
    loaded = load_model(tmp_path)
    torch.testing.assert_close(loaded(val[:2]), model(val[:2]))
    assert find_resume_checkpoint(tmp_path) is not None
    assert not list(tmp_path.glob(".*.tmp"))                 # no half-written checkpoint left
    # figures from the trained model
    from astroclip.plotting.spectra import plot_mask_filling, plot_spectrum_attention
    fig = plot_mask_filling(model, val[0].numpy(), seed=1, redshift=0.2)
    assert len(fig.axes) >= 2 and fig.axes[0].get_xlabel().startswith("wavelength")
    assert sum(1 for p in fig.axes[0].patches) >= 1          # shaded masked regions
    fig2 = plot_spectrum_attention(model, val[0].numpy())
    assert len([a for a in fig2.axes if a.get_ylabel() == "weight"]) == TINY["num_heads"]
    import matplotlib.pyplot as plt
    plt.close("all")


class _Crash(Callback):
    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_resume_equals_uninterrupted(tmp_path, rng):
    data = make_spectra(rng, 20)
    cfg = dict(TINY, dropout=0.1)   # dropout and masks must replay exactly too
    kw = dict(model_config=cfg, max_steps=7, batch_size=4, lr=1e-3, warmup_steps=2,
              checkpoint_every=2, val_every=None, progress=False, seed=3,
              accumulate=1)
    full = pretrain_spectra(data, out=tmp_path / "full", **kw)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain_spectra(data, out=tmp_path / "cut", callbacks=[_Crash(5)], **kw)
    ckpt = find_resume_checkpoint(tmp_path / "cut")
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 4
    with pytest.raises(FileExistsError, match="resume=True"):
        pretrain_spectra(data, out=tmp_path / "cut", **dict(kw, seed=3), resume=False)
    with pytest.raises(ValueError, match="model_config"):
        pretrain_spectra(data, out=tmp_path / "cut", **dict(kw, model_config=TINY))
    resumed = pretrain_spectra(data, out=tmp_path / "cut", **kw)
    diff = float((_weights(full) - _weights(resumed)).abs().max())
    assert diff <= 1e-6
    assert read_model_config(tmp_path / "cut")["metadata"]["steps"] == 7
    # a different seed gives a different run (the comparison above can fail)
    other = pretrain_spectra(data, out=tmp_path / "other", **dict(kw, seed=4))
    assert float((_weights(full) - _weights(other)).abs().max()) > 1e-4


def test_pretrain_from_hdf5_with_the_cli(tmp_path, rng):
    from astroclip.data.paired import PairedDatasetWriter
    path = tmp_path / "train.h5"
    n = 12
    flux = make_spectra(rng, n)
    with PairedDatasetWriter(path, label_names=["Z"], image_size=8) as writer:
        writer.append(targetid=np.arange(n), ra=np.zeros(n), dec=np.zeros(n), flux=flux,
                      ivar=np.ones_like(flux), image=np.zeros((n, 3, 8, 8), np.float32),
                      split=["train"] * 9 + ["val"] * 3, labels={"Z": np.zeros(n)})
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["pretrain-spectra", "--data", str(path), "--out", str(out), "--preset",
                   "small", "--max-steps", "2", "--batch-size", "3", "--val-every", "2",
                   "--no-progress", "--device", "cpu"])
    assert rc == 0
    doc = read_model_config(out)
    assert doc["config"]["embed_dim"] == 128 and doc["metadata"]["steps"] == 2
    rows = list(csv.DictReader(open(out / "logs" / "metrics.csv")))
    assert any(r.get("val_loss") for r in rows)               # the val rows were used
    # finished run: a new run in the same folder must be asked for
    assert main(["pretrain-spectra", "--data", str(path), "--out", str(out),
                 "--max-steps", "2", "--no-resume", "--no-progress"]) == 1


def test_bad_training_inputs(tmp_path, rng):
    data = make_spectra(rng, 4)
    with pytest.raises(ValueError, match="unknown spectrum model 'giant'.*did you mean"):
        pretrain_spectra(data, out=tmp_path / "a", preset="giant")
    with pytest.raises(FileNotFoundError, match="astroclip simulate"):
        pretrain_spectra(tmp_path / "missing.h5", out=tmp_path / "b")
    with pytest.raises(ValueError, match="max_steps"):
        pretrain_spectra(data, out=tmp_path / "c", max_steps=0)

    class NoSpectrum(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": torch.zeros(3)}

    with pytest.raises(ValueError, match="'spectrum' entry"):
        pretrain_spectra(NoSpectrum(), out=tmp_path / "d", model_config=TINY, max_steps=1,
                         batch_size=2, progress=False)
    with pytest.raises(ValueError, match="prepare_spectra"):
        pretrain_spectra(FluxDataset(np.ones((4, 7000))), out=tmp_path / "e",
                         model_config=TINY, max_steps=1, batch_size=2, progress=False)
