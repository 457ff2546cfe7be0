"""Denoising masked pretraining with a pooled bottleneck (the quickstart's "cpu" recipe)."""

import numpy as np
import pytest
import torch

from astroclip.models.presets import get_preset
from astroclip.models.spectrum import SpectrumEmbedder
from astroclip.api import load_model
from astroclip.models.weights import read_model_config
from astroclip.training.runs import find_resume_checkpoint
from astroclip.training.spectra import BottleneckDecoder, SpectrumPretraining, pretrain_spectra

from .test_spectra_training import _Crash, make_spectra

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")

BOTTLENECK = dict(pooling=dict(embed_dim=16, num_heads=4, residual=True), hidden=32, bin=8)
RECIPE = dict(target="model", renoise=True, bottleneck=BOTTLENECK)


def _arrays(rng, n):
    model = make_spectra(rng, n)
    ivar = np.full_like(model, 4.0)
    ivar[:, 100:110] = 0.0
    flux = np.where(ivar > 0, model + rng.normal(0, 0.5, model.shape), 0).astype(np.float32)
    return {"flux": flux, "flux_model": model, "ivar": ivar}


def test_cpu_preset_shapes():
    cfg = get_preset("spectrum", "cpu")
    emb = SpectrumEmbedder(backbone=cfg, pooling=dict(embed_dim=128, num_heads=4,
                                                      residual=True)).eval()
    flux = torch.rand(3, 7781) + 1.0
    assert emb.backbone.tokenize(flux).shape == (3, 195, 42)
    assert emb.backbone(flux).shape == (3, 195, cfg["embed_dim"])
    z, w = emb(flux, return_weights=True)
    assert z.shape == (3, 128) and w.shape == (3, 4, 195)
    assert emb.backbone.random_mask(3).sum(1).tolist() == [48, 48, 48]


def test_bottleneck_targets():
    dec = BottleneckDecoder(8, hidden=16, bin=4)
    clean = torch.arange(2 * 7781, dtype=torch.float32).reshape(2, 7781)
    t = dec.targets(clean, torch.ones(2, 1), torch.full((2, 1), np.e))
    assert t.shape == (2, 1945 + 2)
    assert float(t[0, 0]) == pytest.approx(1.5) and float(t[1, 1]) == pytest.approx(7781 + 5.5)
    assert float(t[0, -2]) == pytest.approx(np.arcsinh(1.0))
    assert float(t[0, -1]) == pytest.approx(1.0)


class _Fixed(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, hidden):
        return self.value


def test_denoising_target_is_the_clean_spectrum(rng):
    """With target="model" the loss is scored against the noiseless tokens: a model
    that predicts them exactly scores zero, the noisy tokens do not."""
    arrays = _arrays(rng, 4)
    mod = SpectrumPretraining(dict(embed_dim=16, num_layers=1, num_heads=2), target="model")
    batch = {"spectrum": torch.as_tensor(arrays["flux"]),
             "spectrum_model": torch.as_tensor(arrays["flux_model"])}
    m = mod.model
    x, mu, sigma = m.standardize(batch["spectrum"])
    clean = (batch["spectrum_model"] - mu) / sigma
    tokens = m.tokenize(batch["spectrum"])
    clean_tokens = torch.cat([tokens[:, :1], torch.nn.functional.pad(
        clean.unfold(1, m.window, m.stride), (2, 0))], 1)
    # a head that outputs the clean tokens exactly
    m.head = _Fixed(clean_tokens)
    loss, _ = mod._step(batch, generator=torch.Generator().manual_seed(0))
    assert float(loss) == 0.0
    m.head = _Fixed(tokens)
    loss, _ = mod._step(batch, generator=torch.Generator().manual_seed(0))
    assert float(loss) > 0.1
    with pytest.raises(ValueError, match="spectrum_model"):
        mod._step({"spectrum": batch["spectrum"]})


def test_renoise_draws_fresh_noise_where_ivar_is_positive(rng):
    arrays = _arrays(rng, 2)
    mod = SpectrumPretraining(dict(embed_dim=16, num_layers=1, num_heads=2), target="model",
                              renoise=True)
    batch = {k2: torch.as_tensor(arrays[k1]) for k1, k2 in (
        ("flux", "spectrum"), ("flux_model", "spectrum_model"), ("ivar", "spectrum_ivar"))}
    a, _ = mod._inputs(batch, torch.Generator().manual_seed(1))
    b, _ = mod._inputs(batch, torch.Generator().manual_seed(2))
    assert bool((a[:, 100:110] == 0).all())
    resid = (a - batch["spectrum_model"])[:, 200:]
    assert float(resid.std()) == pytest.approx(0.5, rel=0.05)   # ivar 4 -> sigma 0.5
    assert float((a - b).abs().max()) > 0.1


def test_bottleneck_run_saves_an_embedder_and_resumes_exactly(tmp_path, rng):
    data = _arrays(rng, 24)
    kw = dict(model_config=dict(embed_dim=16, num_layers=1, num_heads=2, window=40, stride=40,
                                mask_run_length=8), max_steps=6, batch_size=4, lr=1e-3,
              warmup_steps=2, checkpoint_every=2, val_every=None, progress=False, seed=5,
              **RECIPE)
    full = pretrain_spectra(data, out=tmp_path / "full", **kw)
    assert isinstance(full, SpectrumEmbedder)
    doc = read_model_config(tmp_path / "full")
    assert doc["class"] == "SpectrumEmbedder" and doc["metadata"]["target"] == "model"
    flux = torch.as_tensor(data["flux"][:3])
    torch.testing.assert_close(load_model(tmp_path / "full")(flux), full(flux))
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain_spectra(data, out=tmp_path / "cut", callbacks=[_Crash(3)], **kw)
    assert find_resume_checkpoint(tmp_path / "cut") is not None
    with pytest.raises(ValueError, match="target"):
        pretrain_spectra(data, out=tmp_path / "cut", **dict(kw, target="observed"))
    resumed = pretrain_spectra(data, out=tmp_path / "cut", **kw)
    w = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (full, resumed)]
    assert float((w[0] - w[1]).abs().max()) <= 1e-6
    # determinism: the same run twice gives the same weights, another seed does not
    again = pretrain_spectra(data, out=tmp_path / "again", **kw)
    other = pretrain_spectra(data, out=tmp_path / "other", **dict(kw, seed=6))
    w2 = torch.cat([p.detach().flatten() for p in again.parameters()])
    w3 = torch.cat([p.detach().flatten() for p in other.parameters()])
    assert float((w[0] - w2).abs().max()) <= 1e-6 and float((w[0] - w3).abs().max()) > 1e-4


def test_bad_recipe(tmp_path, rng):
    with pytest.raises(ValueError, match="target"):
        pretrain_spectra(_arrays(rng, 4), out=tmp_path, target="clean", max_steps=1)


def test_conv_stem_tokens_shapes_and_determinism():
    from astroclip.models.spectrum import ConvStem, SpectrumEncoder

    cfg = dict(get_preset("spectrum", "cpu"), stem_channels=(4, 8, 8, 16))
    torch.manual_seed(0)
    a = SpectrumEncoder(**cfg).eval()
    torch.manual_seed(0)
    b = SpectrumEncoder(**cfg).eval()
    flux = torch.rand(2, 7781) + 1.0
    out = a(flux)
    assert out.shape == (2, 195, cfg["embed_dim"]) and a.config["stem_channels"] == [4, 8, 8, 16]
    torch.testing.assert_close(out, b(flux))
    # a token's embedding depends on its own pixels and their neighbours only
    flux2 = flux.clone()
    flux2[:, 4000] += 5.0
    changed = (a.encode_tokens(a.tokenize(flux2))[0] - a.encode_tokens(a.tokenize(flux))[0])
    assert changed.abs().max() > 0
    pixels = a.tokenize(flux)[:, 1:, 2:]
    pixels2 = pixels.clone()
    pixels2[:, 100, 17] += 5.0
    emb = a.stem(pixels2) - a.stem(pixels)
    moved = torch.nonzero(emb[0].abs().amax(1) > 1e-6).flatten().tolist()
    assert 100 in moved and max(moved) - min(moved) <= 2
    assert "stem_channels" not in SpectrumEncoder(**get_preset("spectrum", "paper")).config
    with pytest.raises(ValueError, match="stride == window"):
        ConvStem((4,), window=20, stride=10, embed_dim=8)
