import numpy as np
import pytest
import torch

from astroclip.inputs import grid
from astroclip.models.presets import SPECTRUM_PRESETS, get_preset
from astroclip.models.spectrum import (SpectrumEmbedder, SpectrumEncoder, masked_mse,
                                       random_token_mask)

TINY = dict(embed_dim=16, num_layers=2, num_heads=2)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(3)
    return SpectrumEncoder(**TINY).eval()


def _flux(rng, n=3):
    wave = grid.WAVELENGTH
    f = rng.uniform(1, 4, (n, 1)) * (wave / 6000.0) ** rng.uniform(-2, 1, (n, 1))
    f = f + 5 * np.exp(-0.5 * ((wave - 6564.6 * 1.1) / 3) ** 2)
    return torch.as_tensor(f + rng.normal(0, 0.2, f.shape), dtype=torch.float32)


def test_paper_preset_has_43_2_million_parameters():
    with torch.device("meta"):
        model = SpectrumEncoder(**get_preset("spectrum", "paper"))
    n = model.num_parameters()
    assert round(n / 1e6, 1) == 43.2
    assert n == 43_177_750  # 17,664 embed + 614,400 positions + 6 x 7,087,872 blocks + LN + head
    with torch.device("meta"):
        released = SpectrumEncoder(**get_preset("spectrum", "released"))
    assert released.num_parameters() == n
    assert {"paper", "released", "small"} <= set(SPECTRUM_PRESETS)
    with pytest.raises(ValueError, match="unknown spectrum preset 'huge'.*small"):
        get_preset("spectrum", "huge")


def test_tokenisation_follows_method(rng, tiny):
    flux = _flux(rng)
    tokens = tiny.tokenize(flux)
    assert tokens.shape == (3, 778, 22) and tiny.n_tokens == 778
    f = flux.double().numpy()
    mu = f.mean(1)
    sigma = np.maximum(f.std(1, ddof=1), 0.2)
    x = (f - mu[:, None]) / sigma[:, None]
    t = tokens.double().numpy()
    np.testing.assert_allclose(t[:, 0, 0], (mu - 2) / 2, rtol=1e-5)
    np.testing.assert_allclose(t[:, 0, 1], (sigma - 2) / 8, rtol=1e-5, atol=1e-6)
    assert np.all(t[:, 0, 2:] == 0) and np.all(t[:, 1:, :2] == 0)
    for j in (0, 1, 400, 776):  # token j + 1 holds pixels 10 j ... 10 j + 19
        np.testing.assert_allclose(t[:, j + 1, 2:], x[:, 10 * j:10 * j + 20], atol=1e-5)
    # the standardisation floor: a flat spectrum gets sigma = 0.2
    flat = tiny.tokenize(torch.full((1, 7781), 3.0))
    assert float(flat[0, 0, 1]) == pytest.approx((0.2 - 2) / 8)
    # untokenize inverts tokenize on every covered pixel
    _, mu_t, sigma_t = tiny.standardize(flux)
    back = tiny.untokenize(tokens, mu_t, sigma_t)
    torch.testing.assert_close(back[:, :7780], flux[:, :7780], atol=1e-4, rtol=1e-5)
    assert torch.isnan(back[:, 7780]).all()  # the last pixel is in no full window


def test_forward_shapes_and_batch_independence(rng, tiny):
    flux = _flux(rng, 4)
    out = tiny(flux)
    assert out.shape == (4, 778, 16)
    alone = tiny(flux[2:3])
    torch.testing.assert_close(out[2:3], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiny(flux.double()), out)          # any float dtype in
    torch.testing.assert_close(tiny(flux.round().int())[0], tiny(flux.round())[0])
    tokens = tiny.tokenize(flux)
    pred = tiny.predict_tokens(tokens)
    assert pred.shape == (4, 778, 22)
    emb, maps = tiny.encode_tokens(tokens, return_attention=True)
    torch.testing.assert_close(emb, out, atol=1e-5, rtol=1e-5)
    assert len(maps) == 2 and maps[0].shape == (4, 2, 778, 778)
    wl = tiny.token_wavelengths()
    assert np.isnan(wl[0]) and wl[1] == pytest.approx(grid.WAVELENGTH[0] + 9.5 * 0.8)
    assert wl.shape == (778,) and np.all(np.diff(wl[1:]) == pytest.approx(8.0))


@torch.no_grad()
def test_initialisation_statistics():
    torch.manual_seed(0)
    model = SpectrumEncoder(embed_dim=64, num_layers=3, num_heads=4)
    for name, p in model.blocks.named_parameters():
        if name.endswith("bias") and "layernorm" not in name:
            assert float(p.detach().abs().max()) == 0.0, name
    w = model.blocks[1].mlp.decoder.weight      # fan_in 256
    std = (2 * 256 * 3) ** -0.5
    assert float(w.std()) == pytest.approx(std, rel=0.1)
    assert float(w.abs().max()) <= 3 * std + 1e-7
    w = model.blocks[0].attention.attention.weight   # fan_in 64
    assert float(w.std()) == pytest.approx((2 * 64 * 3) ** -0.5, rel=0.1)
    for emb in (model.data_embed.weight, model.position_embed.weight):
        assert float(emb.std()) == pytest.approx(64 ** -0.5, rel=0.15)
        assert float(emb.abs().max()) <= 3 * 64 ** -0.5 + 1e-7


@pytest.mark.parametrize("placement,length", [("anywhere", 30), ("per_section", 50)])
def test_mask_statistics(placement, length):
    g = torch.Generator().manual_seed(0)
    n_draws = 2000
    mask = random_token_mask(n_draws, 778, n_runs=6, run_length=length, placement=placement,
                             generator=g)
    assert mask.dtype == torch.bool and mask.shape == (n_draws, 778)
    assert not mask[:, 0].any()                              # statistics token kept
    assert (mask.sum(1) == 6 * length).all()                 # exactly 6 runs' worth
    m = mask[:, 1:].numpy().astype(np.int8)
    starts = (np.diff(m, axis=1, prepend=0) == 1).sum(1)     # contiguous runs per row
    assert starts.max() <= 6
    if placement == "per_section":
        section = 777 // 6
        for k in range(6):                                   # one whole run in each sixth
            part = m[:, k * section:(k + 1) * section]
            assert (part.sum(1) == length).all()
            assert ((np.diff(part, axis=1, prepend=0) == 1).sum(1) == 1).all()
        assert starts.min() >= 1
    else:
        assert (starts == 6).mean() > 0.5                     # runs mostly separate
        # every token can be masked, and the interior is hit with the expected
        # frequency (6 * 30 / 777 on average; flat away from the ends)
        freq = m.mean(0)
        assert freq.min() > 0
        assert freq[100:-100].mean() == pytest.approx(180 / 777, rel=0.05)
        assert np.abs(freq[200:-200] - freq[200:-200].mean()).max() < 0.06
    again = random_token_mask(n_draws, 778, n_runs=6, run_length=length, placement=placement,
                              generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def test_mask_errors():
    with pytest.raises(ValueError, match="do not fit"):
        random_token_mask(1, 100, n_runs=6, run_length=30)
    with pytest.raises(ValueError, match="placement"):
        random_token_mask(1, 778, placement="middle")
    with pytest.raises(ValueError, match="mask_placement"):
        SpectrumEncoder(**TINY, mask_placement="middle")


def test_masked_loss_only_counts_masked_entries(rng, tiny):
    flux = _flux(rng, 2)
    tokens = tiny.tokenize(flux)
    mask = tiny.random_mask(2, generator=torch.Generator().manual_seed(1))
    masked = tiny.mask_tokens(tokens, mask)
    assert torch.all(masked[mask] == 0) and torch.equal(masked[~mask], tokens[~mask])
    pred = torch.randn_like(tokens, requires_grad=True)
    loss = masked_mse(pred, tokens, mask)
    manual = ((pred.detach() - tokens)[..., 2:][mask] ** 2).mean()
    torch.testing.assert_close(loss.detach(), manual)
    loss.backward()
    assert float(pred.grad[~mask].abs().max()) == 0.0
    assert float(pred.grad[..., :2].abs().max()) == 0.0
    assert float(pred.grad[mask][:, 2:].abs().min()) > 0.0
    out = tiny.masked_prediction(flux, mask)
    torch.testing.assert_close(out["loss"], masked_mse(out["prediction"], tokens, mask))


def test_reconstruct(rng, tiny):
    flux = _flux(rng, 2)
    mask = tiny.random_mask(2, generator=torch.Generator().manual_seed(2))
    pred, hidden = tiny.reconstruct(flux, mask)
    assert pred.shape == hidden.shape == (2, 7781)
    # a masked run of 30 tokens hides 290 pixels completely (the overlaps are seen)
    assert 6 * 290 <= int(hidden[0].sum()) <= 6 * 300
    idx = torch.nonzero(mask[0]).flatten()[0]  # first masked token: its middle pixels hidden
    start = (int(idx) - 1) * 10
    assert bool(hidden[0, start + 10:start + 20].all())


def test_bad_inputs(tiny):
    with pytest.raises(ValueError, match="7781 pixels on the DESI grid.*prepare_spectra"):
        tiny(torch.zeros(2, 7000))
    bad = torch.ones(3, 7781)
    bad[1, 5] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite.*rows \[1\]"):
        tiny(bad)
    bad[1, 5] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny(bad)
    with pytest.raises(ValueError, match=r"flux\[None\]"):
        tiny(torch.ones(7781))
    with pytest.raises(ValueError, match=r"shape \(batch, 7781\)"):
        tiny(torch.ones(2, 1, 7781))
    with pytest.raises(TypeError, match="torch.as_tensor"):
        tiny(np.ones((2, 7781)))
    with pytest.raises(ValueError, match="tokens must have shape"):
        tiny.encode_tokens(torch.zeros(1, 10, 20))
    with pytest.raises(ValueError, match="max_len"):
        SpectrumEncoder(**TINY, max_len=500)


def test_embedder(rng):
    model = SpectrumEmbedder(backbone=TINY, pooling=dict(embed_dim=8, num_heads=4,
                                                         residual=True)).eval()
    flux = _flux(rng, 3)
    z = model(flux)
    assert z.shape == (3, 8)
    w = model.attention_maps(flux)
    assert w.shape == (3, 4, 778)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4))
    assert model.config["pooling"]["input_dim"] == 16
