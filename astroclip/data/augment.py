"""Galaxy image augmentations, batched in torch and seedable.

Every function takes a batch ``(B, C, H, W)`` of images in nanomaggies (bands g,
r, z in ``astroclip.inputs.grid.BANDS`` order), draws its random numbers from an
optional `torch.Generator` (on the images' device), and returns a new tensor;
each image of the batch gets its own random draw.  The augmentations are those of
the image pretraining of Stein et al. (2021) that the AstroCLIP paper adopts (section 3.2):
flips, 90-degree and arbitrary rotations, PSF blur and added noise drawn from
the survey-fitted lognormal distributions (``grid.PSF_SIGMA_LOGNORMAL``,
``grid.NOISE_SIGMA_LOGNORMAL``), galactic-extinction reddening, size scaling,
jitter and crop.

`Augment` chains them; `alignment_augment` (flips and rotations, as the paper's
alignment) and `pretraining_augment` (the full MoCo v2 list) build the two
pipelines used by the training stages.

Examples
--------
>>> import torch
>>> from astroclip.data.augment import alignment_augment
>>> g = torch.Generator().manual_seed(0)
>>> alignment_augment()(torch.rand(4, 3, 152, 152), generator=g).shape
torch.Size([4, 3, 152, 152])
"""

import math

import torch
import torch.nn.functional as F

from astroclip.inputs import grid

__all__ = [
    "EXTINCTION_COEFFICIENTS", "random_flip", "random_rot90", "random_rotation",
    "sample_lognormal", "psf_blur", "add_noise", "redden", "random_scale", "jitter_crop",
    "Augment", "alignment_augment", "pretraining_augment",
]

#: Galactic extinction A_b / E(B-V) of the DECam g, r, z bands used by the Legacy
#: Survey DR9 (Schlafly & Finkbeiner 2011 coefficients, legacysurvey.org/dr9/catalogs).
EXTINCTION_COEFFICIENTS = {"g": 3.214, "r": 2.165, "z": 1.211}


def _check(images):
    if not torch.is_tensor(images) or images.ndim != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"augmentations take a batch tensor (B, C, H, W), got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point (nanomaggies), got {images.dtype}")
    return images


def _bands(images, bands):
    bands = grid.BANDS if bands is None else tuple(bands)
    if len(bands) != images.shape[1]:
        raise ValueError(f"images have {images.shape[1]} channels but bands={bands}; pass the "
                         "band of each channel")
    return bands


def _uniform(n, low, high, *, generator, device):
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def random_flip(images, *, generator=None, p=0.5):
    """Flip each image left-right and up-down, each with probability ``p``.

    Examples
    --------
    >>> import torch
    >>> from astroclip.data.augment import random_flip
    >>> x = torch.arange(4.).view(1, 1, 2, 2)
    >>> random_flip(x, p=1.0)[0, 0].tolist()
    [[3.0, 2.0], [1.0, 0.0]]
    """
    x = _check(images)
    b = x.shape[0]
    h = torch.rand(b, generator=generator, device=x.device) < p
    v = torch.rand(b, generator=generator, device=x.device) < p
    x = torch.where(h.view(-1, 1, 1, 1), x.flip(-1), x)
    return torch.where(v.view(-1, 1, 1, 1), x.flip(-2), x)


def random_rot90(images, *, generator=None):
    """Rotate each (square) image by a random multiple of 90 degrees.

    Examples
    --------
    >>> import torch
    >>> from astroclip.data.augment import random_rot90
    >>> x = torch.rand(8, 3, 5, 5)
    >>> y = random_rot90(x, generator=torch.Generator().manual_seed(1))
    >>> torch.allclose(x.sum((1, 2, 3)), y.sum((1, 2, 3)))
    True
    """
    x = _check(images)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"90-degree rotations need square images, got {tuple(x.shape[-2:])}")
    k = torch.randint(0, 4, (x.shape[0],), generator=generator, device=x.device)
    out = x
    for j in (1, 2, 3):
        out = torch.where((k == j).view(-1, 1, 1, 1), torch.rot90(x, j, dims=(-2, -1)), out)
    return out


def _affine(x, theta, padding_mode):
    grid_ = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid_, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def random_rotation(images, *, generator=None, max_angle=180.0, padding_mode="reflection"):
    """Rotate each image about its centre by an angle uniform in ``[-max_angle, max_angle]``.

    Bilinear interpolation; pixels coming from outside the cutout are filled by
    ``padding_mode`` (``"reflection"``, ``"border"`` or ``"zeros"``).  The corners
    are unaffected by the fill for the centre crops the models use (96 or 144 of 152
    with rotations mostly small or combined with `random_rot90`).

    Examples
    --------
    >>> import torch
    >>> from astroclip.data.augment import random_rotation
    >>> x = torch.ones(2, 3, 16, 16)
    >>> torch.allclose(random_rotation(x), x)
    True
    """
    x = _check(images)
    ang = _uniform(x.shape[0], -max_angle, max_angle, generator=generator, device=x.device)
    ang = ang * (math.pi / 180.0)
    c, s = torch.cos(ang), torch.sin(ang)
    z = torch.zeros_like(c)
    theta = torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1)], 1)
    return _affine(x, theta, padding_mode)


def sample_lognormal(params, n, *, generator=None, device=None):
    """Draw ``n`` values of a ``scipy.stats.lognorm(shape, loc, scale)`` distribution.

    ``loc + scale * exp(shape * N(0, 1))``, in torch (float32).

    Examples
    --------
    >>> import torch
    >>> from astroclip.data.augment import sample_lognormal
    >>> v = sample_lognormal((0.2, 1.0, 2.0), 1000, generator=torch.Generator().manual_seed(0))
    >>> bool((v > 1.0).all())
    True
    """
    shape, loc, scale = (float(v) for v in params)
    z = torch.randn(n, generator=generator, device=device)
    return loc + scale * torch.exp(shape * z)


def _per_band(table, bands, b, *, generator, device):
    return torch.stack([sample_lognormal(table[band], b, generator=generator, device=device)
                        for band in bands], 1)


def _gaussian_blur(x, sigma):
    """Blur each (image, channel) with its own Gaussian ``sigma`` (B, C) in pixels."""
    b, c, h, w = x.shape
    radius = int(math.ceil(3.0 * float(sigma.max())))
    radius = max(1, min(radius, (min(h, w) - 1) // 2))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, 1, -1) / sigma.to(x.dtype).clamp(min=1e-3).unsqueeze(-1)) ** 2)
    k = (k / k.sum(-1, keepdim=True)).reshape(b * c, 1, -1)
    y = x.reshape(1, b * c, h, w)
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.reshape(b, c, h, w)


def psf_blur(images, *, generator=None, sigma=None, bands=None, p=1.0,
             sigma_range=(0.0, 5.0)):
    """Convolve with a Gaussian PSF whose sigma follows the survey's distribution.

    Parameters
    ----------
    images : `torch.Tensor`
        ``(B, C, H, W)``.
    generator : `torch.Generator`, optional
        Source of randomness.
    sigma : `torch.Tensor` or float, optional
        Kernel sigma in pixels, ``(B, C)`` or scalar.  By default drawn per image
        and band from ``grid.PSF_SIGMA_LOGNORMAL`` and clipped to ``sigma_range``.
    bands : sequence of str, optional
        Band of each channel (default ``grid.BANDS``).
    p : float, optional
        Probability that an image is blurred.

    Examples
    --------
    >>> import torch
    >>> from astroclip.data.augment import psf_blur
    >>> x = torch.zeros(1, 3, 21, 21); x[..., 10, 10] = 1.0
    >>> y = psf_blur(x, sigma=1.5)
    >>> round(float(y[0, 0].sum()), 4), bool(y[0, 0, 10, 10] < 0.1)
    (1.0, True)
    """
    x = _check(images)
    b, c = x.shape[:2]
    if sigma is None:
        sig = _per_band(grid.PSF_SIGMA_LOGNORMAL, _bands(x, bands), b, generator=generator,
                        device=x.device).clamp(*sigma_range)
    else:
        sig = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(b, c)
    y = _gaussian_blur(x, sig)
    if p < 1.0:
        keep = torch.rand(b, generator=generator, device=x.device) >= p
        y = torch.where(keep.view(-1, 1, 1, 1), x, y)
    return y


def add_noise(images, *, generator=None, sigma=None, bands=None, p=1.0):
    """Add Gaussian sky noise whose level follows the survey's distribution.

    Parameters
    ----------
    sigma : `torch.Tensor` or float, optional
        Noise sigma in nanomaggies, ``(B, C)`` or scalar.  By default drawn per image
        and band from ``grid.NOISE_SIGMA_LOGNORMAL`` (negative draws, possible
        because of the fitted negative ``loc``, are set to 0).
    bands, generator, p
        As in `psf_blur`.

    Examples
    --------
    >>> import torch
    >>> from astroclip.data.augment import add_noise
    >>> y = add_noise(torch.zeros(1, 3, 200, 200), sigma=0.01,
    ...               generator=torch.Generator().manual_seed(0))
    >>> round(float(y.std()), 3)
    0.01
    """
    x = _check(images)
    b, c = x.shape[:2]
    if sigma is None:
        sig = _per_band(grid.NOISE_SIGMA_LOGNORMAL, _bands(x, bands), b, generator=generator,
                        device=x.device).clamp(min=0.0)
    else:
        sig = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(b, c)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    y = x + noise * sig.to(x.dtype).view(b, c, 1, 1)
    if p < 1.0:
        keep = torch.rand(b, generator=generator, device=x.device) >= p
        y = torch.where(keep.view(-1, 1, 1, 1), x, y)
    return y


def redden(images, *, generator=None, ebv=None, ebv_range=(0.0, 0.1), bands=None):
    """Galactic-extinction reddening: multiply band b by ``10**(-0.4 R_b E(B-V))``.

    ``R_b`` are `EXTINCTION_COEFFICIENTS`; ``E(B-V)`` is drawn uniformly in
    ``ebv_range`` per image unless given (``(B,)`` or scalar; negative values
    de-redden).

    Examples
    --------
    >>> import torch
    >>> from astroclip.data.augment import redden
    >>> y = redden(torch.ones(1, 3, 2, 2), ebv=0.1)
    >>> [round(float(v), 3) for v in y[0, :, 0, 0]]
    [0.744, 0.819, 0.894]
    """
    x = _check(images)
    bands = _bands(x, bands)
    try:
        r = torch.tensor([EXTINCTION_COEFFICIENTS[band] for band in bands], device=x.device)
    except KeyError as exc:
        raise ValueError(f"no extinction coefficient for band {exc}; known bands: "
                         f"{sorted(EXTINCTION_COEFFICIENTS)}") from None
    b = x.shape[0]
    if ebv is None:
        e = _uniform(b, *ebv_range, generator=generator, device=x.device)
    else:
        e = torch.as_tensor(ebv, dtype=torch.float32, device=x.device).expand(b)
    factor = torch.pow(10.0, -0.4 * e.view(-1, 1) * r.view(1, -1))
    return x * factor.to(x.dtype).view(b, -1, 1, 1)


def random_scale(images, *, generator=None, scale_range=(0.9, 1.1), padding_mode="reflection"):
    """Magnify each image about its centre by a factor log-uniform in ``scale_range``.

    The output keeps the input size; pixel values (surface brightness) are
    interpolated bilinearly, so a factor > 1 makes the galaxy appear larger.

    Examples
    --------
    >>> import torch
    >>> from astroclip.data.augment import random_scale
    >>> x = torch.zeros(1, 1, 33, 33); x[..., 12:21, 12:21] = 1.0
    >>> y = random_scale(x, scale_range=(2.0, 2.0))
    >>> bool(y.sum() > 3 * x.sum())
    True
    """
    x = _check(images)
    lo, hi = (math.log(float(v)) for v in scale_range)
    s = torch.exp(_uniform(x.shape[0], lo, hi, generator=generator, device=x.device))
    inv = 1.0 / s
    z = torch.zeros_like(s)
    theta = torch.stack([torch.stack([inv, z, z], -1), torch.stack([z, inv, z], -1)], 1)
    return _affine(x, theta, padding_mode)


def jitter_crop(images, size, *, generator=None, max_shift=0):
    """Crop ``size x size`` around the centre shifted by up to ``max_shift`` pixels.

    Each image gets its own integer shift (uniform in ``[-max_shift, max_shift]``
    on each axis, limited to stay inside the cutout); no interpolation.

    Examples
    --------
    >>> import torch
    >>> from astroclip.data.augment import jitter_crop
    >>> x = torch.arange(36.).view(1, 1, 6, 6)
    >>> jitter_crop(x, 2)[0, 0].tolist()
    [[14.0, 15.0], [20.0, 21.0]]
    """
    x = _check(images)
    b, c, h, w = x.shape
    size = int(size)
    if size > h or size > w:
        raise ValueError(f"crop size {size} is larger than the {h}x{w} images")
    # same centre as torchvision's / astroclip.inputs.images.center_crop
    top0, left0 = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    if max_shift:
        dy = torch.randint(-max_shift, max_shift + 1, (b,), generator=generator, device=x.device)
        dx = torch.randint(-max_shift, max_shift + 1, (b,), generator=generator, device=x.device)
        top = (top0 + dy).clamp(0, h - size)
        left = (left0 + dx).clamp(0, w - size)
    else:
        top = torch.full((b,), top0, device=x.device)
        left = torch.full((b,), left0, device=x.device)
    ar = torch.arange(size, device=x.device)
    rows = (top.view(b, 1) + ar.view(1, -1)).view(b, 1, size, 1).expand(b, c, size, w)
    cols = (left.view(b, 1) + ar.view(1, -1)).view(b, 1, 1, size).expand(b, c, size, size)
    return torch.gather(torch.gather(x, 2, rows), 3, cols)


class Augment:
    """A seedable chain of batched augmentations.

    Parameters
    ----------
    steps : sequence of callable
        Functions ``f(images, generator=...) -> images`` applied in order.

    Examples
    --------
    >>> import functools, torch
    >>> from astroclip.data.augment import Augment, random_flip, add_noise
    >>> aug = Augment([random_flip, functools.partial(add_noise, sigma=0.01)])
    >>> x = torch.zeros(2, 3, 8, 8)
    >>> a = aug(x, generator=torch.Generator().manual_seed(3))
    >>> b = aug(x, generator=torch.Generator().manual_seed(3))
    >>> torch.equal(a, b)
    True
    """

    def __init__(self, steps):
        self.steps = list(steps)

    def __call__(self, images, *, generator=None):
        x = _check(images)
        for step in self.steps:
            x = step(x, generator=generator)
        return x

    def __repr__(self):
        names = [getattr(s, "__name__", None) or repr(s) for s in self.steps]
        return f"Augment([{', '.join(names)}])"


def _partial(fn, **kw):
    def step(x, *, generator=None):
        return fn(x, generator=generator, **kw)
    step.__name__ = fn.__name__
    return step


def alignment_augment(*, rotate=True, max_angle=180.0):
    """The alignment stage's augmentation: random flips and rotations (paper section 3.2).

    Parameters
    ----------
    rotate : bool, optional
        Add random 90-degree rotations and an arbitrary rotation (reflection fill).
    max_angle : float, optional
        Largest angle of the arbitrary rotation.

    Returns
    -------
    `Augment`
    """
    steps = [random_flip]
    if rotate:
        steps += [random_rot90]
        if max_angle:
            steps += [_partial(random_rotation, max_angle=max_angle)]
    return Augment(steps)


def pretraining_augment(crop_size, *, max_shift=8, scale_range=(0.9, 1.1),
                        ebv_range=(0.0, 0.1), blur=True, noise=True, p_blur=0.5, p_noise=0.5):
    """Stein et al. (2021)'s MoCo v2 augmentations: galactic reddening, flips, rotations,
    size scaling, PSF blur, Gaussian noise, then jitter and crop to ``crop_size``.

    Returns
    -------
    `Augment`

    Examples
    --------
    >>> import torch
    >>> from astroclip.data.augment import pretraining_augment
    >>> aug = pretraining_augment(96)
    >>> aug(torch.rand(2, 3, 152, 152), generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3, 96, 96])
    """
    steps = [_partial(redden, ebv_range=ebv_range), random_flip, random_rot90,
             _partial(random_rotation, max_angle=180.0),
             _partial(random_scale, scale_range=scale_range)]
    if blur:
        steps.append(_partial(psf_blur, p=p_blur))
    if noise:
        steps.append(_partial(add_noise, p=p_noise))
    steps.append(_partial(jitter_crop, size=crop_size, max_shift=max_shift))
    return Augment(steps)
