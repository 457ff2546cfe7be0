"""Batched, seedable galaxy augmentations."""

import numpy as np
import pytest
import torch
from scipy import stats

from astroclip.data import augment as A
from astroclip.inputs import grid
from astroclip.inputs.images import center_crop


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def blob(n=1, size=41, sigma=2.0, c=3):
    t = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-0.5 * (t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) / sigma**2)
    return g.expand(n, c, size, size).clone()


def second_moment(img):
    """Mean squared radius of a centred (C, H, W) image, per channel."""
    size = img.shape[-1]
    t = torch.arange(size, dtype=torch.float64) - size // 2
    r2 = t.view(-1, 1) ** 2 + t.view(1, -1) ** 2
    img = img.double()
    return (img * r2).sum((-2, -1)) / img.sum((-2, -1))


def test_flips():
    x = torch.randn(6, 3, 8, 8)
    assert torch.equal(A.random_flip(x, p=0.0), x)
    assert torch.equal(A.random_flip(x, p=1.0), x.flip(-1).flip(-2))
    y = A.random_flip(x, generator=gen(1))
    for i in range(6):
        options = (x[i], x[i].flip(-1), x[i].flip(-2), x[i].flip(-1).flip(-2))
        assert any(torch.equal(y[i], v) for v in options)


def test_rot90_each_image_is_a_rotation_and_seeded():
    x = torch.randn(16, 3, 8, 8)
    y = A.random_rot90(x, generator=gen(2))
    ks = []
    for i in range(16):
        match = [k for k in range(4) if torch.equal(y[i], torch.rot90(x[i], k, dims=(-2, -1)))]
        assert len(match) == 1
        ks.append(match[0])
    assert len(set(ks)) > 1  # per-image draws
    assert torch.equal(y, A.random_rot90(x, generator=gen(2)))
    assert not torch.equal(y, A.random_rot90(x, generator=gen(3)))
    with pytest.raises(ValueError, match="square"):
        A.random_rot90(torch.zeros(1, 3, 4, 6))


def test_arbitrary_rotation():
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(A.random_rotation(x, max_angle=0.0), x, atol=1e-5)
    # an elongated source changes orientation but keeps its flux and radial profile
    size = 41
    t = torch.arange(size, dtype=torch.float32) - size // 2
    ell = torch.exp(-0.5 * (t.view(1, -1) ** 2 / 16 + t.view(-1, 1) ** 2 / 2))
    ell = ell.expand(8, 3, size, size)
    y = A.random_rotation(ell, generator=gen(0))
    assert torch.allclose(y.sum((-2, -1)), ell.sum((-2, -1)), rtol=0.02)
    # bilinear interpolation widens the profile slightly (< 8 %)
    assert torch.allclose(second_moment(y[:, 0]), second_moment(ell[:, 0]), rtol=0.08)
    # orientation: x-variance differs between images (different angles)
    xvar = (y[:, 0] * t.view(1, 1, -1) ** 2).sum((-2, -1)) / y[:, 0].sum((-2, -1))
    assert float(xvar.max() - xvar.min()) > 4.0


def test_sample_lognormal_matches_scipy():
    for band in grid.BANDS:
        params = grid.PSF_SIGMA_LOGNORMAL[band]
        v = A.sample_lognormal(params, 20000, generator=gen(0)).numpy()
        ref = stats.lognorm(*params)
        assert np.median(v) == pytest.approx(ref.median(), rel=0.02)
        assert np.percentile(v, 90) == pytest.approx(ref.ppf(0.9), rel=0.03)


def test_psf_blur_width_and_flux():
    x = torch.zeros(1, 3, 41, 41)
    x[..., 20, 20] = 1.0
    y = A.psf_blur(x, sigma=2.0)
    assert torch.allclose(y.sum((-2, -1)), torch.ones(1, 3), atol=1e-5)
    # a 2D Gaussian of sigma s has <r^2> = 2 s^2
    expected = torch.full((3,), 8.0, dtype=torch.float64)
    assert torch.allclose(second_moment(y[0]), expected, rtol=0.02)
    # drawn sigmas follow the survey distribution per band
    pts = torch.zeros(400, 3, 41, 41)
    pts[..., 20, 20] = 1.0
    yb = A.psf_blur(pts, generator=gen(4))
    sig = torch.sqrt(second_moment(yb.flatten(0, 1)).view(400, 3) / 2).numpy()
    for i, band in enumerate(grid.BANDS):
        ref = stats.lognorm(*grid.PSF_SIGMA_LOGNORMAL[band])
        assert np.median(sig[:, i]) == pytest.approx(ref.median(), rel=0.05)
    # p=0 leaves images untouched
    assert torch.equal(A.psf_blur(pts[:4], generator=gen(4), p=0.0), pts[:4])


def test_add_noise_levels():
    x = torch.zeros(3000, 3, 24, 24)
    y = A.add_noise(x, generator=gen(5))
    std = y.std((-2, -1)).numpy()
    for i, band in enumerate(grid.BANDS):
        ref = stats.lognorm(*grid.NOISE_SIGMA_LOGNORMAL[band])
        assert np.median(std[:, i]) == pytest.approx(max(ref.median(), 0), rel=0.03)
    z = A.add_noise(torch.zeros(2, 3, 100, 100), sigma=0.5, generator=gen(0))
    assert float(z.std()) == pytest.approx(0.5, rel=0.02)
    assert torch.equal(A.add_noise(x[:2], p=0.0, generator=gen(1)), x[:2])


def test_redden():
    x = torch.ones(2, 3, 4, 4)
    assert torch.equal(A.redden(x, ebv=0.0), x)
    y = A.redden(x, ebv=0.2)
    for i, band in enumerate(grid.BANDS):
        expected = 10 ** (-0.4 * 0.2 * A.EXTINCTION_COEFFICIENTS[band])
        assert float(y[0, i, 0, 0]) == pytest.approx(expected)
    # g is dimmed most, z least
    assert y[0, 0, 0, 0] < y[0, 1, 0, 0] < y[0, 2, 0, 0]
    r = A.redden(torch.ones(50, 3, 2, 2), generator=gen(0), ebv_range=(0.0, 0.1))
    assert float(r.min()) >= 10 ** (-0.4 * 0.1 * 3.214) - 1e-6 and float(r.max()) <= 1.0
    with pytest.raises(ValueError, match="bands"):
        A.redden(torch.ones(1, 4, 2, 2))
    with pytest.raises(ValueError, match="extinction coefficient"):
        A.redden(torch.ones(1, 3, 2, 2), bands=("g", "r", "y"))


def test_random_scale():
    x = blob(sigma=3.0)
    assert torch.allclose(A.random_scale(x, scale_range=(1.0, 1.0)), x, atol=1e-5)
    y = A.random_scale(x, scale_range=(1.5, 1.5))
    ratio = torch.sqrt(second_moment(y[0]) / second_moment(x[0]))
    assert torch.allclose(ratio, torch.full((3,), 1.5, dtype=torch.float64), rtol=0.03)


def test_jitter_crop():
    x = torch.randn(20, 3, 152, 152)
    assert torch.equal(A.jitter_crop(x, 96), center_crop(x, 96))
    y = A.jitter_crop(x, 96, max_shift=5, generator=gen(0))
    offsets = set()
    for i in range(20):
        found = [(t, c) for t in range(23, 34) for c in range(23, 34)
                 if torch.equal(y[i], x[i, :, t:t + 96, c:c + 96])]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 5
    with pytest.raises(ValueError, match="larger than"):
        A.jitter_crop(x, 200)


def test_augment_chain_seeded_and_checks():
    aug = A.pretraining_augment(96)
    x = torch.rand(4, 3, 152, 152) * 0.1
    a = aug(x, generator=gen(7))
    assert a.shape == (4, 3, 96, 96) and torch.isfinite(a).all()
    assert torch.equal(a, aug(x, generator=gen(7)))
    assert not torch.equal(a, aug(x, generator=gen(8)))
    al = A.alignment_augment()
    b = al(x, generator=gen(1))
    assert b.shape == x.shape
    assert torch.equal(b, al(x, generator=gen(1)))
    assert "random_flip" in repr(al)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        aug(torch.zeros(3, 152, 152))
    with pytest.raises(ValueError, match="floating point"):
        aug(torch.zeros(1, 3, 152, 152, dtype=torch.int32))
