import numpy as np
import pytest
import torch
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import CCDData, NDData
from astropy.wcs import WCS

from astroclip.inputs import grid
from astroclip.exceptions import InputError
from astroclip.inputs.images import (PreparedImages, center_crop, color_map, normalize_band,
                                     prepare_images)

REF = grid.PIXEL_SCALE.to_value(u.arcsec)


def make_wcs(n, scale=REF, ra=150.0, dec=2.0):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cdelt = [-scale / 3600, scale / 3600]
    return w


def galaxy(n, x0=None, y0=None, sigma=4.0, amp=(1.0, 2.0, 3.0, 4.0)):
    """(len(amp), n, n) Gaussian blobs, band k scaled by amp[k]."""
    x0 = (n - 1) / 2 if x0 is None else x0
    y0 = (n - 1) / 2 if y0 is None else y0
    y, x = np.mgrid[:n, :n]
    g = np.exp(-0.5 * ((x - x0) ** 2 + (y - y0) ** 2) / sigma**2)
    return np.stack([a * g for a in amp])


def cutout_hdu(data, *, bands="grz", scale=REF, bunit=None):
    """A Legacy Survey cutout-service style HDU: cube, BANDS + BAND0.. keywords, WCS."""
    header = make_wcs(data.shape[-1], scale).to_header()
    header["BANDS"] = bands
    for i, b in enumerate(bands):
        header[f"BAND{i}"] = b
    if bunit:
        header["BUNIT"] = bunit
    return fits.PrimaryHDU(data.astype(np.float32), header=header)


def test_array_band_selection_and_crop(rng):
    cube = rng.normal(size=(2, 4, 160, 160))  # g, r, i, z
    out = prepare_images(cube, bands="griz", unit="nanomaggy")
    assert isinstance(out, PreparedImages) and len(out) == 2
    assert out.images.shape == (2, 3, 152, 152) and out.images.dtype == np.float32
    np.testing.assert_allclose(out.images, cube[:, [0, 1, 3], 4:156, 4:156], rtol=1e-6)
    assert list(out.meta["input_bands"]) == ["g,r,i,z"] * 2
    assert np.all(out.meta["n_filled"] == 0) and np.all(np.isnan(out.meta["pixel_scale"]))
    # reordering: z, r, g planes come out as g, r, z
    out2 = prepare_images(cube[0, [3, 1, 0]], bands=["DES-Z", "DES-R", "DES-G"],
                          unit=u.nanomaggy, size=96)
    np.testing.assert_allclose(out2.images[0], cube[0, [0, 1, 3], 32:128, 32:128], rtol=1e-6)
    assert prepare_images(cube[0, :, :150, :151], bands="griz", unit="nanomaggy",
                          size=None).images.shape == (1, 3, 150, 151)
    # prepared images go through unchanged; different sizes need size=
    np.testing.assert_array_equal(prepare_images(out, size=96).images,
                                  out.images[:, :, 28:124, 28:124])
    with pytest.raises(ValueError, match="different sizes"):
        prepare_images([cube[0], cube[1, :, :155, :155]], bands="griz", unit="nanomaggy",
                       size=None)


@pytest.mark.parametrize("unit, factor", [
    ("nanomaggy", 1.0),
    (u.maggy, 1e-9),
    (u.Jy, 3631e-9),
    (u.uJy, 3631e-3),
    (u.erg / u.s / u.cm**2 / u.Hz, 3631e-9 * 1e-23),
    (u.nanomaggy / u.pix, 1.0),
    (u.nanomaggy / u.arcsec**2, 1.0 / REF**2),
])
def test_units_give_identical_output(rng, unit, factor):
    nmgy = rng.uniform(0.1, 5, size=(1, 3, 152, 152))
    ref = prepare_images(nmgy, bands="grz", unit="nanomaggy").images
    out = prepare_images(nmgy * factor, bands="grz", unit=unit).images
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    q = prepare_images(u.Quantity(nmgy * factor, unit), bands="grz").images
    np.testing.assert_allclose(q, ref, rtol=1e-5)


def test_ab_magnitudes():
    mags = np.full((3, 152, 152), 22.5)
    mags[1] = 20.0
    out = prepare_images(mags, bands="grz", unit="mag(AB)").images
    np.testing.assert_allclose(out[0, 0], 1.0, rtol=1e-12)
    np.testing.assert_allclose(out[0, 1], 10.0, rtol=1e-6)


def test_nddata_cube_and_band_list(rng):
    cube = rng.normal(size=(3, 152, 152))
    nd = NDData(cube * 3631e-9, unit=u.Jy, meta={"bands": ["g", "r", "z"]})
    np.testing.assert_allclose(prepare_images(nd).images[0], cube, rtol=1e-5, atol=1e-6)
    # one CCDData per band, shuffled, band names in meta (FILTER as DECam writes it)
    planes = [CCDData(cube[k], unit="nanomaggy", meta={"FILTER": f"{b} DECam SDSS c0001"})
              for k, b in zip((2, 0, 1), "zgr")]
    out = prepare_images(planes)
    np.testing.assert_allclose(out.images[0], cube, rtol=1e-6)
    assert out.meta["input_bands"][0] == "z,g,r"
    # masked pixels are filled and counted
    mask = np.zeros((3, 152, 152), dtype=bool)
    mask[1, :2, :5] = True
    masked = NDData(cube, unit="nanomaggy", mask=mask, meta={"BANDS": "grz"})
    out = prepare_images(masked)
    assert out.meta["n_filled"][0] == 10 and out.meta["n_filled_r"][0] == 10
    assert np.all(out.images[0, 1, :2, :5] == 0)
    # a list of cubes is a batch
    assert len(prepare_images([nd, masked])) == 2


def test_fits_files_and_hdus(tmp_path, rng):
    cube = rng.normal(size=(3, 152, 152))
    hdu = cutout_hdu(cube)
    path = tmp_path / "cutout.fits"
    hdu.writeto(path)
    with pytest.raises(u.UnitsError, match="unit='nanomaggy'"):
        prepare_images(path)  # the cutout service writes no BUNIT
    out = prepare_images(str(path), unit="nanomaggy")
    np.testing.assert_allclose(out.images[0], cube, rtol=1e-6)
    assert out.meta["source"][0] == str(path)
    assert out.meta["pixel_scale"][0] == pytest.approx(REF)
    assert not out.meta["resampled"][0]
    # BUNIT in the header, image in an extension, HDU and HDUList inputs
    ext = fits.ImageHDU(cube.astype(np.float32), header=cutout_hdu(cube).header)
    ext.header["BUNIT"] = "nanomaggies"
    fits.HDUList([fits.PrimaryHDU(), ext]).writeto(tmp_path / "ext.fits")
    np.testing.assert_allclose(prepare_images(tmp_path / "ext.fits").images[0], cube,
                               rtol=1e-6)
    with fits.open(tmp_path / "ext.fits") as hdul:
        np.testing.assert_allclose(prepare_images(hdul).images[0], cube, rtol=1e-6)
    np.testing.assert_allclose(prepare_images(hdu, unit="nanomaggy").images[0], cube, rtol=1e-6)
    # griz cube via BAND0..BAND3
    griz = cutout_hdu(np.concatenate([cube[:2], cube[2:] + 7, cube[2:]]), bands="griz",
                      bunit="nanomaggy")
    batch = prepare_images([griz, str(path)], unit="nanomaggy")
    np.testing.assert_allclose(batch.images, np.stack([cube, cube]), rtol=1e-6)


def test_pixel_scale_resampling_conserves_flux():
    n = 140
    scale = 0.30  # coarser than 0.262: more output pixels
    data = galaxy(n, sigma=5.0, amp=(1.0, 2.0, 3.0))
    hdu = cutout_hdu(data, scale=scale, bunit="nanomaggy")
    out = prepare_images(hdu, size=152)
    assert out.meta["resampled"][0] and out.meta["pixel_scale"][0] == pytest.approx(scale)
    np.testing.assert_allclose(out.images[0].sum(axis=(1, 2)), data.sum(axis=(1, 2)), rtol=5e-3)
    # centred and wider in pixels by the scale ratio
    prof = out.images[0, 1].sum(axis=0)
    centre = (prof * np.arange(152)).sum() / prof.sum()
    assert centre == pytest.approx(75.5, abs=0.3)
    width = np.sqrt((prof * (np.arange(152) - centre) ** 2).sum() / prof.sum())
    assert width == pytest.approx(5.0 * scale / REF, rel=0.03)
    # within the 1 % tolerance nothing is resampled
    near = prepare_images(cutout_hdu(galaxy(152, amp=(1, 2, 3)), scale=REF * 1.005,
                                     bunit="nanomaggy"))
    assert not near.meta["resampled"][0]
    # far from 0.262: a clear error, unless explicitly allowed
    far = cutout_hdu(galaxy(100, amp=(1, 2, 3)), scale=2 * REF, bunit="nanomaggy")
    with pytest.raises(ValueError, match=r"pixel scale 0.5240\"/px is far from"):
        prepare_images(far)
    ok = prepare_images(far, max_scale_ratio=2.5)
    np.testing.assert_allclose(ok.images[0].sum(axis=(1, 2)),
                               galaxy(100, amp=(1, 2, 3)).sum(axis=(1, 2)), rtol=5e-3)


def test_skycoord_centres_cutout():
    n = 300
    w = make_wcs(n)
    x0, y0 = 200.0, 90.0  # the galaxy is off-centre
    data = galaxy(n, x0=x0, y0=y0, amp=(1, 2, 3))
    position = w.pixel_to_world(x0, y0)
    nd = NDData(data, unit="nanomaggy", wcs=w, meta={"BANDS": "grz"})
    out = prepare_images(nd, center=position, size=96)
    img = out.images[0, 2]
    assert np.unravel_index(np.argmax(img), img.shape) in {(47, 47), (48, 48), (47, 48),
                                                           (48, 47)}
    np.testing.assert_allclose(img.sum(), data[2].sum(), rtol=1e-4)
    # arrays take a wcs= and one centre per image
    two = prepare_images(np.stack([data, data]), bands="grz", unit="nanomaggy", wcs=w,
                         center=SkyCoord([position, position]), size=64)
    assert two.images.shape == (2, 3, 64, 64)
    # partial overlap: the missing pixels are filled and counted
    edge = prepare_images(nd, center=w.pixel_to_world(5.0, 150.0), size=64)
    assert edge.meta["n_filled_g"][0] > 0 and np.isfinite(edge.images).all()
    with pytest.raises(ValueError, match="not on the image"):
        prepare_images(nd, center=SkyCoord(10 * u.deg, -40 * u.deg), size=64)
    with pytest.raises(ValueError, match="2 centres for 1 images"):
        prepare_images(nd, center=SkyCoord([position, position]), size=64)
    with pytest.raises(TypeError, match="center must be an astropy SkyCoord"):
        prepare_images(nd, center=(150.0, 2.0), size=64)
    with pytest.raises(ValueError, match="needs a WCS"):
        prepare_images(data, bands="grz", unit="nanomaggy", center=position, size=64)


def test_nonfinite_fill_zero_and_median(rng):
    cube = rng.uniform(1, 2, size=(1, 3, 152, 152))
    cube[0, 0, 10, 10] = np.nan
    cube[0, 2, :3, :4] = np.inf
    out = prepare_images(cube, bands="grz", unit="nanomaggy")
    assert out.meta["n_filled"][0] == 13
    assert (out.meta["n_filled_g"][0], out.meta["n_filled_r"][0],
            out.meta["n_filled_z"][0]) == (1, 0, 12)
    assert out.images[0, 0, 10, 10] == 0 and np.isfinite(out.images).all()
    med = prepare_images(cube, bands="grz", unit="nanomaggy", fill="median")
    assert med.images[0, 0, 10, 10] == pytest.approx(np.nanmedian(cube[0, 0]), rel=1e-6)
    empty = cube.copy()
    empty[0, 1] = np.nan
    with pytest.raises(ValueError, match="band r has no finite pixel"):
        prepare_images(empty, bands="grz", unit="nanomaggy")


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(bands="gr"), ValueError, r"2 band names"),
    (dict(bands="grx"), ValueError, r"unknown band names \['x'\]"),
    (dict(bands="ggz"), ValueError, r"more than once"),
    (dict(bands=None), ValueError, "pass bands="),
    (dict(bands="grz", unit=None), u.UnitsError, "no unit.*unit='nanomaggy'"),
    (dict(bands="grz", unit=u.dimensionless_unscaled), u.UnitConversionError, "zero point"),
    (dict(bands="grz", unit=u.adu), u.UnitConversionError, "zero point"),
    (dict(bands="grz", unit=u.erg / u.s / u.cm**2 / u.AA), u.UnitConversionError,
     "convert it to f_nu"),
    (dict(bands="grz", unit="furlongs"), ValueError, "cannot parse the image unit"),
    (dict(bands="grz", unit="nanomaggy", size=200), ValueError,
     r"smaller than the 200x200 centre crop.*smaller size="),
    (dict(bands="grz", unit="nanomaggy", fill="mean"), ValueError, "fill must be"),
])
def test_bad_array_input(kwargs, exc, match):
    kwargs.setdefault("unit", "nanomaggy")
    with pytest.raises(exc, match=match):
        prepare_images(np.ones((3, 152, 152)), **kwargs)


def test_missing_bands_and_dimensionality():
    with pytest.raises(ValueError, match=r"bands \['z'\] are missing"):
        prepare_images(np.ones((2, 152, 152)), bands="gr", unit="nanomaggy")
    with pytest.raises(ValueError, match="2-D shape"):
        prepare_images(np.ones((152, 152)), bands="g", unit="nanomaggy")
    with pytest.raises(ValueError, match="5-D shape"):
        prepare_images(np.ones((1, 1, 3, 152, 152)), bands="grz", unit="nanomaggy")
    with pytest.raises(ValueError, match="band of each image plane is unknown"):
        prepare_images(NDData(np.ones((3, 152, 152)), unit="nanomaggy"))
    with pytest.raises(ValueError, match="contradicts the band names"):
        prepare_images(NDData(np.ones((3, 152, 152)), unit="nanomaggy",
                              meta={"BANDS": "grz"}), bands="zrg")
    with pytest.raises(u.UnitsError, match="contradicts the unit"):
        prepare_images(NDData(np.ones((3, 152, 152)), unit="Jy", meta={"BANDS": "grz"}),
                       unit="nanomaggy")
    hdu = fits.PrimaryHDU(np.ones((2, 3, 152, 152), dtype=np.float32))
    with pytest.raises(ValueError, match="must be 2-D .* or 3-D"):
        prepare_images(hdu, bands="grz", unit="nanomaggy")
    with pytest.raises(TypeError, match="cannot prepare images from a dict"):
        prepare_images({"g": 1})


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_images(tmp_path / "missing.fits", unit="nanomaggy")
    good = tmp_path / "good.fits"
    cutout_hdu(np.ones((3, 152, 152)), bunit="nanomaggy").writeto(good)
    data = good.read_bytes()
    (tmp_path / "truncated.fits").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated, corrupt or not FITS"):
        prepare_images(tmp_path / "truncated.fits")
    (tmp_path / "corrupt.fits").write_bytes(b"not a fits file at all " * 200)
    with pytest.raises(OSError, match="cannot be read as a FITS image"):
        prepare_images(tmp_path / "corrupt.fits")
    with pytest.raises(ValueError, match="has no HDU 'SCI'"):
        prepare_images(good, hdu="SCI")
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="E", array=np.zeros(3))])]).writeto(table)
    with pytest.raises(ValueError, match="holds no image HDU"):
        prepare_images(table, unit="nanomaggy")


def test_normalize_band():
    assert [normalize_band(b) for b in ("G", b"r", "DES-Z", "decam_g", "  i ")] == \
        ["g", "r", "z", "g", "i"]


def _color_map_reference(img):
    """Per-pixel, per-band loop implementation of the formula of method.md section 1."""
    out = np.zeros_like(img, dtype=np.float64)
    _, h, w = img.shape
    for y in range(h):
        for x in range(w):
            vals = {b: img[k, y, x] * grid.COLOR_SCALES[b] + grid.COLOR_M
                    for k, b in enumerate("grz")}
            intensity = sum(max(0.0, v) for v in vals.values()) / 3
            if intensity == 0:
                intensity = 1e-6
            fi = np.arcsinh(grid.COLOR_Q * intensity) / np.sqrt(grid.COLOR_Q)
            for b, v in vals.items():
                out[grid.COLOR_RGB_PLANE[b], y, x] = min(1.0, max(0.0, v * fi / intensity))
    return out


def test_color_map_matches_formula(rng):
    images = rng.normal(0, 0.3, size=(2, 3, 9, 7))
    images[0, :, 0, 0] = -1.0  # all bands negative: I = 0 -> 1e-6
    images[1, :, 1, 1] = 50.0  # saturates
    out = color_map(images)
    assert isinstance(out, np.ndarray) and out.shape == images.shape
    for k in range(2):
        np.testing.assert_allclose(out[k], _color_map_reference(images[k]), rtol=1e-12,
                                   atol=1e-12)
    assert out.min() >= 0 and out.max() <= 1 and out[1, :, 1, 1].tolist() == [1, 1, 1]
    single = color_map(images[0].astype(np.float32))
    assert single.dtype == np.float32 and single.shape == (3, 9, 7)
    np.testing.assert_allclose(single, out[0], rtol=1e-5, atol=1e-6)


def test_color_map_torch(rng):
    images = rng.normal(0, 0.3, size=(2, 3, 8, 8))
    ref = color_map(images)
    t = torch.tensor(images, dtype=torch.float64, requires_grad=True)
    out = color_map(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    out.sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    assert color_map(t.detach().float()).dtype == torch.float32
    with pytest.raises(ValueError, match="color_map needs"):
        color_map(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="color_map needs"):
        color_map(np.zeros((8, 8)))


def test_center_crop_is_the_torchvision_centre():
    x = torch.arange(152.0).view(1, 1, 1, 152).expand(1, 3, 152, 152)
    y = center_crop(x, 96)
    assert y.shape == (1, 3, 96, 96)
    assert float(y[0, 0, 0, 0]) == 28.0 and float(y[0, 0, 0, -1]) == 123.0
    # odd margins: torchvision's offsets round((H - size) / 2), for arrays and tensors alike
    a = np.arange(11 * 11).reshape(11, 11)
    for size in range(1, 12):
        top = int(round((11 - size) / 2))
        np.testing.assert_array_equal(center_crop(a, size), a[top:top + size, top:top + size])
        np.testing.assert_array_equal(center_crop(torch.from_numpy(a), size).numpy(),
                                      center_crop(a, size))
    with pytest.raises(InputError, match=r"cutouts: 90x90 px, smaller than the 96x96 centre "
                                         r"crop; give larger cutouts"):
        center_crop(torch.zeros(1, 3, 90, 90), 96, name="cutouts")
