"""Legacy Survey-style cutouts -> g, r, z images in nanomaggies for the models.

`prepare_images` accepts `~astropy.nddata.NDData`/`~astropy.nddata.CCDData`
(one per band, or a cube with band names), FITS files or HDUs with the bands on
the first axis and band names in the header (``BANDS = 'grz'`` and ``BAND0``,
``BAND1`` ... as written by the Legacy Survey cutout service; ``BAND`` or
``FILTER`` for one band), Quantities, and numpy arrays with ``bands=`` and
``unit=``.  It returns float32 ``(N, 3, H, W)`` arrays in nanomaggies, bands g, r,
z in that order, at the Legacy Survey pixel scale (0.262"/px) and centre-cropped
to the model size.  `color_map` turns such images into the RGB planes of the
Legacy Survey viewer used by the released image encoder.
"""

import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import NDData, Cutout2D
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from . import grid
from .._arrays import split_masked
from ..exceptions import InputError

__all__ = ["PreparedImages", "prepare_images", "color_map", "read_image_file",
           "normalize_band", "center_crop"]

# band names we recognise; the models use grid.BANDS, the others are dropped
_KNOWN_BANDS = ("u", "g", "r", "i", "z", "y", "w1", "w2", "w3", "w4", "nuv", "fuv")
_UNIT_ALIASES = {"nanomaggies": "nanomaggy", "nanomaggys": "nanomaggy",
                 "nanomaggies/pixel": "nanomaggy", "nanomaggy/pixel": "nanomaggy",
                 "maggies": "maggy"}
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fits.fz", ".fit.gz")


@dataclass
class PreparedImages:
    """Images ready for the image encoder.

    Attributes
    ----------
    images : `numpy.ndarray`
        float32 ``(N, 3, H, W)``, nanomaggies per pixel, bands g, r, z, 0.262"/px.
    meta : `~astropy.table.Table`
        One row per image: ``source`` (where it came from), ``input_bands`` (band
        names of the input planes), ``pixel_scale`` (input scale, arcsec/px; NaN when
        the input had no WCS and no ``pixel_scale`` was given), ``resampled``,
        ``n_filled`` (non-finite pixels replaced, all bands) and ``n_filled_g``,
        ``n_filled_r``, ``n_filled_z``.
    """

    images: np.ndarray
    meta: Table = field(default_factory=Table)

    def __len__(self):
        return len(self.images)


def normalize_band(name):
    """Short lower-case band name: ``"DES-G"``, ``"decam_g"``, ``"g DECam SDSS c0001"`` -> ``"g"``.

    Examples
    --------
    >>> from astroclip.inputs.images import normalize_band
    >>> [normalize_band(b) for b in ("G", "des-r", "decam_z", "g DECam SDSS c0001 4720.0")]
    ['g', 'r', 'z', 'g']
    """
    if isinstance(name, bytes):
        name = name.decode()
    text = str(name).strip().lower()
    if not text:
        return text
    text = text.split()[0]  # "g DECam SDSS c0001 4720.0 1520.0" (DECam FILTER keyword)
    for sep in ("-", "_"):
        text = text.rsplit(sep, 1)[-1]
    return text.strip("'")


def _get(meta, key):
    """Case-insensitive lookup in a dict or FITS header."""
    if meta is None:
        return None
    if isinstance(meta, fits.Header):
        return meta.get(key)
    for k, v in meta.items():
        if str(k).lower() == key.lower():
            return v
    return None


def _bands_from_meta(meta, n_planes):
    """Band names of the planes from a header/meta, or None."""
    if meta is None:
        return None
    names = [_get(meta, f"BAND{i}") for i in range(n_planes)]
    if all(n is not None for n in names):
        return [str(n) for n in names]
    bands = _get(meta, "BANDS")
    if bands is not None:
        if isinstance(bands, (list, tuple, np.ndarray)):
            return [str(b) for b in bands]
        text = str(bands).strip()
        if "," in text or " " in text:
            return [b for b in text.replace(",", " ").split() if b]
        if len(text) == n_planes:  # "grz"
            return list(text)
        return [text]
    if n_planes == 1:
        for key in ("BAND", "FILTER"):
            value = _get(meta, key)
            if value is not None:
                return [str(value)]
    return None


def _resolve_bands(names, n_planes, source):
    """Indices of g, r, z among the named planes, with clear errors."""
    if names is None:
        raise InputError(f"{source}: the band of each image plane is unknown; give "
                         f"bands=... (e.g. bands='grz' or bands=['g', 'r', 'i', 'z']) or put "
                         "BANDS/BAND0.. keywords in the header (or 'bands' in NDData.meta)")
    names = _split_bands(names)
    short = [normalize_band(b) for b in names]
    if len(short) != n_planes:
        raise InputError(f"{source}: {len(short)} band names {list(names)} for {n_planes} "
                         "image planes (bands are the first axis of a cube); give one name "
                         "per plane")
    unknown = [b for b, s in zip(names, short) if s not in _KNOWN_BANDS]
    if unknown:
        raise InputError(f"{source}: unknown band names {unknown}; name the planes with "
                         f"bands=... using {_KNOWN_BANDS} (the models use {grid.BANDS}; "
                         "other bands are dropped)")
    dup = sorted({s for s in short if short.count(s) > 1})
    if dup:
        raise InputError(f"{source}: bands {dup} appear more than once in {list(names)}")
    missing = [b for b in grid.BANDS if b not in short]
    if missing:
        raise InputError(f"{source}: bands {missing} are missing (input has {short}); the "
                         f"models need {grid.BANDS}: supply cutouts in those bands")
    return [short.index(b) for b in grid.BANDS], short


def _parse_unit(unit, source):
    if unit is None:
        return None
    if isinstance(unit, str):
        key = unit.strip().lower().replace(" ", "")
        unit = _UNIT_ALIASES.get(key, unit.strip())
    try:
        return u.Unit(unit)
    except ValueError:
        raise InputError(f"{source}: cannot parse the image unit {unit!r}; give unit= as an "
                         "astropy unit (e.g. 'nanomaggy', u.Jy, 'erg/(s cm2 Hz)')") from None


def _to_nanomaggies(data, unit, pixel_area, source):
    """Convert a per-pixel (or per-area) flux array to nanomaggies per pixel."""
    if unit is None:
        raise u.UnitsError(f"{source}: the images have no unit; pass unit= (Legacy Survey "
                           "cutouts are in nanomaggies: unit='nanomaggy'), or give a Quantity / "
                           "NDData with a unit / a FITS header with BUNIT")
    if isinstance(unit, u.FunctionUnitBase):
        if not isinstance(unit, u.MagUnit) or unit.physical_unit != u.AB:
            raise u.UnitConversionError(f"{source}: magnitudes in {unit} are not AB; convert "
                                        "them to AB magnitudes or nanomaggies first")
        # exact definition of the maggy: m_AB = 22.5 - 2.5 log10(flux / nanomaggy)
        return 10 ** (-0.4 * (np.asarray(data, dtype=np.float64) - 22.5))
    if unit == u.dimensionless_unscaled or unit == u.ct or u.ct in unit.bases or \
            u.adu in unit.bases or u.electron in unit.bases:
        raise u.UnitConversionError(
            f"{source}: images in {unit.to_string() or 'dimensionless'} units need a "
            "photometric zero point; calibrate them to nanomaggies (or Jy) first and pass "
            "unit='nanomaggy'")
    # per-pixel units: drop the "/ pix"
    if u.pix in unit.bases:
        unit = unit * u.pix
    if (unit * u.sr).is_equivalent(u.Jy, grid.NANOMAGGY_EQUIVALENCY) or \
            (unit * u.sr).is_equivalent(u.nanomaggy, grid.NANOMAGGY_EQUIVALENCY):
        # surface brightness: multiply by the solid angle of one input pixel
        unit = unit * pixel_area
    try:
        factor = unit.to(u.nanomaggy, equivalencies=grid.NANOMAGGY_EQUIVALENCY)
    except u.UnitConversionError:
        raise u.UnitConversionError(
            f"{source}: cannot convert images in {unit} to nanomaggies; give a flux per "
            "pixel in nanomaggy, maggy, Jy, erg/(s cm2 Hz), or AB magnitudes (f_lambda "
            "needs a band wavelength: convert it to f_nu first)") from None
    data = np.asarray(data)
    # float32 inputs stay float32 (the output precision): a batch is not doubled in memory
    dtype = np.float32 if data.dtype in (np.float32, np.float16) else np.float64
    data = data.astype(dtype, copy=False)
    return data if factor == 1 else data * dtype(factor)


def _celestial(wcs):
    if wcs is None:
        return None
    if not isinstance(wcs, WCS):
        raise TypeError(f"wcs must be an astropy.wcs.WCS, got {type(wcs).__name__}")
    if not wcs.has_celestial:
        return None
    return wcs.celestial


def _pixel_scale(wcs, source):
    """Mean pixel side in arcsec from a celestial WCS; errors on non-square pixels."""
    scales = proj_plane_pixel_scales(wcs) * 3600.0  # deg -> arcsec
    if abs(scales[0] / scales[1] - 1) > 0.01:
        raise InputError(f"{source}: the pixels are not square ({scales[0]:.4f}\" x "
                         f"{scales[1]:.4f}\"); resample the image to square pixels first")
    return float(np.mean(scales))


@dataclass
class _Item:
    """One input image before the common processing."""
    data: np.ndarray           # (B, H, W) float64 in nanomaggies
    band_index: list
    input_bands: list
    wcs: object
    source: str
    pixel_scale: float         # arcsec/px or nan


def read_image_file(path, *, hdu=None):
    """Read an image cube and its header from a FITS file, with clear errors.

    Parameters
    ----------
    path : str or path-like
        FITS file.
    hdu : int or str, optional
        HDU to read; by default the first one that holds an image.

    Returns
    -------
    data : `numpy.ndarray`
    header : `~astropy.io.fits.Header`
        The image HDU's header, with the primary header's keywords it lacks
        (band names, BUNIT) merged in.

    Raises
    ------
    FileNotFoundError, OSError
        Missing, truncated or corrupt file.

    Examples
    --------
    >>> from astroclip.inputs.images import read_image_file
    >>> data, header = read_image_file("cutout.fits")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; check the path of the FITS cutout")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False) as hdul:
                hdul.verify("silentfix")
                data, header = _image_from_hdul(hdul, hdu, str(path))
                data = np.array(data)  # read it now, before the file closes
        for w in caught:
            if "truncated" in str(w.message) or "corrupt" in str(w.message):
                raise OSError(str(w.message))
    except (OSError, TypeError, ValueError, IndexError, KeyError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(str(path)):
            raise
        raise OSError(f"{path} cannot be read as a FITS image ({exc}); the file is truncated, "
                      "corrupt or not FITS: download it again") from exc
    return data, header


def _image_from_hdul(hdul, hdu, source):
    if hdu is not None:
        try:
            chosen = hdul[hdu]
        except (KeyError, IndexError):
            raise InputError(f"{source} has no HDU {hdu!r}; it has {len(hdul)} HDUs "
                             f"{[h.name for h in hdul]}") from None
    else:
        chosen = next((h for h in hdul if getattr(h, "is_image", False) and h.data is not None
                       and h.data.ndim >= 2), None)
        if chosen is None:
            raise InputError(f"{source} holds no image HDU; give a FITS cutout with the "
                             "image in an HDU (bands on the first axis)")
    data = chosen.data
    if data is None:
        raise InputError(f"{source}: HDU {hdu} has no data")
    header = chosen.header.copy()
    primary = hdul[0].header
    if chosen is not hdul[0]:
        for key in ("BUNIT", "BANDS", "BAND", "FILTER") + tuple(f"BAND{i}" for i in range(16)):
            if key in primary and key not in header:
                header[key] = primary[key]
    return data, header


def _is_path(obj):
    return isinstance(obj, (str, os.PathLike))


def _from_header_data(data, header, bands, unit, wcs, source, pixel_scale):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"{source}: a FITS image must be 2-D (one band) or 3-D (bands, y, "
                         f"x), got {data.ndim}-D with shape {data.shape}")
    names = _bands_from_meta(header, data.shape[0])
    if bands is not None:
        names = _check_band_override(bands, names, source)
    index, short = _resolve_bands(names, data.shape[0], source)
    header_unit = header.get("BUNIT") if header is not None else None
    unit = _merge_units(_parse_unit(header_unit, source), unit, source)
    if wcs is None and header is not None:
        wcs = _wcs_from_header(header)
        if wcs is not None and not wcs.has_celestial:
            wcs = None
    return _finish_item(data, index, short, unit, wcs, source, pixel_scale)


def _wcs_from_header(header):
    """Celestial WCS of a (2-D or cube) header, or None when it has none."""
    if not any(k in header for k in ("CTYPE1", "CD1_1", "CDELT1", "PC1_1")):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _celestial(WCS(header, naxis=2))
    except Exception:
        return None


def _split_bands(bands):
    """``"grz"`` -> g, r, z; ``"g, r, z"`` or ``"DES-G DES-R"`` split on commas/spaces."""
    if isinstance(bands, str):
        if "," in bands or " " in bands.strip():
            return [b for b in bands.replace(",", " ").split() if b]
        return list(bands)
    return [b.decode() if isinstance(b, bytes) else str(b) for b in bands]


def _check_band_override(bands, names, source):
    if names is None:
        return bands
    given = [normalize_band(b) for b in _split_bands(bands)]
    if given != [normalize_band(b) for b in names]:
        raise InputError(f"{source}: bands={list(bands)} contradicts the band names of the "
                         f"input {list(names)}; drop bands= or fix the header")
    return names


def _merge_units(own, given, source):
    given = _parse_unit(given, source) if given is not None else None
    if own is not None and given is not None and own != given:
        raise u.UnitsError(f"{source}: unit={given} contradicts the unit of the input ({own}); "
                           "drop unit= or fix the input's unit")
    return own if own is not None else given


def _finish_item(data, index, short, unit, wcs, source, pixel_scale):
    wcs = _celestial(wcs)
    if wcs is not None:
        scale = _pixel_scale(wcs, source)
    elif pixel_scale is not None:
        scale = u.Quantity(pixel_scale, u.arcsec).value
    else:
        scale = np.nan
    area = (scale if np.isfinite(scale) else grid.PIXEL_SCALE.to_value(u.arcsec)) ** 2
    data = _to_nanomaggies(np.asarray(data), unit, area * u.arcsec**2, source)
    return _Item(data=data, band_index=index, input_bands=short, wcs=wcs, source=source,
                 pixel_scale=scale)


def _from_nddata(nd, bands, unit, source, pixel_scale):
    data = np.asarray(nd.data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"{source}: NDData must be 2-D (one band) or 3-D (bands, y, x), got "
                         f"shape {np.shape(nd.data)}")
    names = _bands_from_meta(nd.meta, data.shape[0])
    if bands is not None:
        names = _check_band_override(bands, names, source)
    index, short = _resolve_bands(names, data.shape[0], source)
    unit = _merge_units(nd.unit, unit, source)
    if nd.mask is not None:
        data = np.where(np.broadcast_to(np.asarray(nd.mask, dtype=bool), data.shape), np.nan,
                        data)
    wcs = nd.wcs if isinstance(nd.wcs, WCS) else None
    return _finish_item(data, index, short, unit, wcs, source, pixel_scale)


def _from_band_list(objs, bands, unit, source, pixel_scale):
    """A list of single-band NDData/HDUs: the bands of one image."""
    planes, names, units, wcs = [], [], [], None
    for k, obj in enumerate(objs):
        if isinstance(obj, NDData):
            d, meta, own = np.asarray(obj.data), obj.meta, obj.unit
            w = obj.wcs if isinstance(obj.wcs, WCS) else None
            if obj.mask is not None:
                d = np.where(np.asarray(obj.mask, dtype=bool), np.nan, d)
        else:
            d, meta = np.asarray(obj.data), obj.header
            own = _parse_unit(meta.get("BUNIT"), source)
            w = _wcs_from_header(meta)
        if d.ndim != 2:
            raise InputError(f"{source}: band plane {k} has shape {d.shape}; a list of "
                             "single-band images needs 2-D planes")
        name = _bands_from_meta(meta, 1)
        names.append(name[0] if name else None)
        planes.append(d)
        units.append(own)
        wcs = wcs or w
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise InputError(f"{source}: band planes have different shapes {sorted(shapes)}; "
                         "resample them onto one pixel grid first")
    if bands is not None:
        names = _check_band_override(bands, None if None in names else names, source)
    elif None in names:
        names = None
    if len({str(x) for x in units}) > 1:
        raise u.UnitsError(f"{source}: band planes have different units {units}; convert them "
                           "to one unit first")
    merged = _merge_units(units[0], unit, source)
    index, short = _resolve_bands(names, len(planes), source)
    return _finish_item(np.stack(planes), index, short, merged, wcs, source, pixel_scale)


def _is_single_band(obj):
    if isinstance(obj, NDData):
        return np.ndim(obj.data) == 2
    if isinstance(obj, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return obj.data is not None and obj.data.ndim == 2
    return False


def _items(images, bands, unit, wcs, pixel_scale, hdu):
    """Normalise every accepted input into a list of _Item."""
    if isinstance(images, PreparedImages):
        images = u.Quantity(images.images, u.nanomaggy)
        bands = grid.BANDS if bands is None else bands
    if _is_path(images):
        data, header = read_image_file(images, hdu=hdu)
        return [_from_header_data(data, header, bands, unit, wcs, str(images), pixel_scale)]
    if isinstance(images, fits.HDUList):
        data, header = _image_from_hdul(images, hdu, "HDUList")
        return [_from_header_data(np.asarray(data), header, bands, unit, wcs, "HDUList",
                                  pixel_scale)]
    if isinstance(images, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        if images.data is None:
            raise InputError("the HDU has no data")
        return [_from_header_data(images.data, images.header, bands, unit, wcs,
                                  type(images).__name__, pixel_scale)]
    if isinstance(images, NDData):
        return [_from_nddata(images, bands, unit, type(images).__name__, pixel_scale)]
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise InputError("no images given (empty list); give at least one cutout")
        if all(_is_single_band(obj) for obj in images):
            return [_from_band_list(images, bands, unit, "list of single-band images",
                                    pixel_scale)]
        if all(isinstance(obj, (np.ndarray, u.Quantity)) for obj in images) and \
                len({np.shape(obj) for obj in images}) == 1:
            images = np.stack(images) if not isinstance(images[0], u.Quantity) else \
                u.Quantity(images)
        else:
            out = []
            for k, obj in enumerate(images):
                if isinstance(obj, (list, tuple)):
                    out += _items(list(obj), bands, unit, wcs, pixel_scale, hdu)
                else:
                    out += _items(obj, bands, unit, wcs, pixel_scale, hdu)
                if not _is_path(obj):
                    out[-1].source = f"{out[-1].source}[{k}]"
            return out
    # arrays and Quantities; masked pixels (numpy.ma, astropy Masked) become NaN, then filled
    images, masked = split_masked(images)
    if isinstance(images, u.Quantity):
        own, data = images.unit, images.value
    elif isinstance(images, np.ndarray) or np.isscalar(images) or hasattr(images, "__array__"):
        own, data = None, np.asarray(images)
    else:
        raise TypeError(f"cannot prepare images from a {type(images).__name__}; give "
                        "NDData/CCDData, FITS paths or HDUs, Quantities or numpy arrays")
    if not np.issubdtype(data.dtype, np.number):
        raise TypeError(f"image arrays must be numeric, got dtype {data.dtype}")
    if masked is not None and masked.any():
        data = np.where(masked, np.nan, data.astype(np.float64))
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise InputError(f"image arrays must be (bands, y, x) or (N, bands, y, x); got "
                         f"{data.ndim}-D shape {data.shape}. A single-band 2-D plane needs the "
                         "other bands too: stack them on a first axis")
    if bands is None:
        raise InputError("numpy images carry no band names; pass bands=... naming the planes "
                         "of axis -3 (e.g. bands='grz' or bands=['g', 'r', 'i', 'z'])")
    unit = _merge_units(own, unit, "array")
    index, short = _resolve_bands(bands, data.shape[1], "array")
    wcs = _celestial(wcs)
    scale = _pixel_scale(wcs, "array") if wcs is not None else (
        u.Quantity(pixel_scale, u.arcsec).value if pixel_scale is not None else np.nan)
    area = (scale if np.isfinite(scale) else grid.PIXEL_SCALE.to_value(u.arcsec)) ** 2
    converted = _to_nanomaggies(data, unit, area * u.arcsec**2, "array")
    return [_Item(data=converted[k], band_index=index, input_bands=short, wcs=wcs,
                  source=f"array[{k}]", pixel_scale=scale) for k in range(data.shape[0])]


def _cutout(item, center, size_px):
    """Cut ``size_px`` output pixels (plus a margin) around ``center`` with Cutout2D."""
    if item.wcs is None:
        raise InputError(f"{item.source}: centring on a SkyCoord needs a WCS (FITS header, "
                         "NDData.wcs or wcs=...)")
    ref = grid.PIXEL_SCALE.to_value(u.arcsec)
    n_in = int(np.ceil(size_px * ref / item.pixel_scale)) + 4
    planes = []
    for plane in item.data:
        try:
            cut = Cutout2D(plane, center, (n_in, n_in), wcs=item.wcs, mode="partial",
                           fill_value=np.nan, copy=True)
        except Exception as exc:  # astropy NoOverlapError / PartialOverlapError
            raise InputError(f"{item.source}: the position {center.to_string('decimal')} is "
                             f"not on the image ({exc}); check the coordinates") from None
        planes.append(cut.data)
    item.data = np.stack(planes)
    item.wcs = cut.wcs


def _resample(data, factor):
    """Flux-conserving zoom of (B, H, W) nanomaggy planes by ``factor`` (out px per in px)."""
    from scipy import ndimage

    finite = np.isfinite(data)
    filled = np.where(finite, data, 0.0)
    out = ndimage.zoom(filled, (1, factor, factor), order=1, mode="nearest", grid_mode=True)
    # a pixel that is 1/factor as wide holds 1/factor**2 of the flux
    out /= factor**2
    bad = ndimage.zoom((~finite).astype(np.float64), (1, factor, factor), order=1,
                       mode="nearest", grid_mode=True) > 0.5
    out[bad] = np.nan
    return out


def center_crop(images, size, *, name="the images", fix="give larger cutouts or a smaller crop"):
    """Centre crop ``(..., H, W)`` images (numpy arrays or torch tensors) to ``size x size``.

    The one centre crop of the package (the input layer, the datasets and the
    image encoders use it).  The offsets are those of torchvision's
    ``CenterCrop``, ``round((H - size) / 2)`` with Python's rounding, so that
    the released models see the pixels they were trained on; for an even
    margin (152 -> 144 or 96) it is the exact centre.

    Parameters
    ----------
    images : `numpy.ndarray` or `torch.Tensor`
        Images whose last two axes are the pixels.
    size : int
        Side of the crop (pixels).
    name, fix : str, optional
        What the images are and what to do about too small ones, for the
        error message.

    Returns
    -------
    `numpy.ndarray` or `torch.Tensor`
        A view of ``images`` of shape ``(..., size, size)``.

    Raises
    ------
    InputError
        Images smaller than the crop.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.inputs.images import center_crop
    >>> center_crop(np.zeros((3, 152, 152)), 96).shape
    (3, 96, 96)
    >>> center_crop(np.arange(25).reshape(5, 5), 2).tolist()  # offsets round(1.5) = 2
    [[12, 13], [17, 18]]
    """
    size = int(size)
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise InputError(f"{name}: {h}x{w} px, smaller than the {size}x{size} centre crop; "
                         f"{fix}")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return images[..., top:top + size, left:left + size]


def _fill(data, how, source):
    """Fill non-finite pixels in place; return the count per band."""
    bad = ~np.isfinite(data)
    counts = bad.sum(axis=(-2, -1))
    if not bad.any():
        return counts
    for b in range(data.shape[0]):
        if counts[b] == data[b].size:
            raise InputError(f"{source}: band {grid.BANDS[b]} has no finite pixel; the cutout "
                             "holds no data in that band (outside the survey footprint?)")
        if counts[b]:
            value = 0.0 if how == "zero" else float(np.median(data[b][~bad[b]]))
            data[b][bad[b]] = value
    return counts


def prepare_images(images, *, bands=None, unit=None, size=grid.IMAGE_SIZE, center=None,
                   wcs=None, pixel_scale=None, scale_tolerance=0.01, max_scale_ratio=1.5,
                   fill="zero", hdu=None):
    """Turn Legacy Survey-style cutouts into g, r, z images in nanomaggies.

    Parameters
    ----------
    images : NDData, CCDData, FITS path, HDU, HDUList, Quantity, ndarray, or a list of them
        One image (a cube with bands on the first axis, or a list of single-band
        NDData/HDUs) or several (a list of cubes, paths or HDUs; an array or Quantity
        ``(N, bands, y, x)``).
    bands : str or sequence of str, optional
        Band names of the planes, required for plain arrays and inputs whose header
        has none (``"grz"``, ``["g", "r", "i", "z"]``, ``["DES-G", ...]``).  Planes
        other than g, r, z are dropped; g, r, z are put in that order.
    unit : str or `~astropy.units.UnitBase`, optional
        Unit of inputs that have none (no Quantity unit, ``NDData.unit`` or ``BUNIT``):
        nanomaggy, maggy, Jy, erg/(s cm2 Hz) (per pixel, or per arcsec2), or
        ``mag(AB)``.  Legacy Survey cutouts are in nanomaggies.
    size : int or None, optional
        Side of the output (centre crop), 152 by default; 96 or 144 for the encoders'
        crops; None keeps the input size (all images must then share it).
    center : `~astropy.coordinates.SkyCoord`, optional
        Cut the image around this position (one, or one per image) with
        `~astropy.nddata.Cutout2D`; needs a WCS.
    wcs : `~astropy.wcs.WCS`, optional
        WCS of array inputs (FITS headers and NDData carry their own).
    pixel_scale : `~astropy.units.Quantity`, optional
        Pixel scale of inputs without a WCS.  Without either, the Legacy Survey scale
        is assumed and the ``pixel_scale`` meta column is NaN.
    scale_tolerance : float, optional
        Relative difference from 0.262"/px accepted as is (1 %); larger differences
        are resampled (flux-conserving linear zoom).
    max_scale_ratio : float, optional
        Refuse inputs whose pixel scale differs from 0.262"/px by more than this
        factor (either way): resampling them would not give survey-like images.
    fill : {"zero", "median"}, optional
        Value given to non-finite (or masked) pixels: 0, or the median of the band's
        finite pixels in that image.  Counts are in ``meta``.
    hdu : int or str, optional
        HDU of FITS inputs to read (default: the first image HDU).

    Returns
    -------
    PreparedImages
        ``.images`` float32 ``(N, 3, size, size)``; ``.meta`` one row per image.

    Raises
    ------
    ValueError
        Missing or unknown bands, wrong dimensionality, images smaller than ``size``,
        pixel scale too far from 0.262"/px, unreadable files.
    astropy.units.UnitsError
        Images without a unit and no ``unit=``, or units that are not fluxes.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.inputs.images import prepare_images
    >>> cube = np.ones((4, 160, 160))  # g, r, i, z
    >>> cube[0, 0, 0] = np.nan
    >>> prepared = prepare_images(cube, bands="griz", unit="nanomaggy")
    >>> prepared.images.shape, prepared.images.dtype
    ((1, 3, 152, 152), dtype('float32'))
    >>> int(prepared.meta["n_filled"][0])  # the NaN was cropped away
    0
    """
    if fill not in ("zero", "median"):
        raise InputError(f"fill must be 'zero' or 'median', got {fill!r}")
    if size is not None:
        size = int(size)
        if size < 1:
            raise InputError(f"size must be a positive number of pixels, got {size}")
    if scale_tolerance < 0 or max_scale_ratio < 1:
        raise InputError("scale_tolerance must be >= 0 and max_scale_ratio >= 1")
    items = _items(images, bands, unit, wcs, pixel_scale, hdu)
    if not items:
        raise InputError("no images given (zero images); give at least one cutout")
    if center is not None:
        if not isinstance(center, SkyCoord):
            try:
                center = SkyCoord(center)
            except Exception:
                raise TypeError("center must be an astropy SkyCoord (one, or one per "
                                "image)") from None
        centers = center if not center.isscalar else [center] * len(items)
        if len(centers) != len(items):
            raise InputError(f"{len(centers)} centres for {len(items)} images; give one "
                             "SkyCoord or one per image")
        if size is None:
            raise InputError("centring needs an output size=")
    ref = grid.PIXEL_SCALE.to_value(u.arcsec)
    out, rows = [], []
    for k, item in enumerate(items):
        data = item.data[item.band_index]
        item.data = data
        resampled = False
        if np.isfinite(item.pixel_scale):
            ratio = item.pixel_scale / ref
            if max(ratio, 1 / ratio) > max_scale_ratio:
                raise InputError(
                    f"{item.source}: pixel scale {item.pixel_scale:.4f}\"/px is far from the "
                    f"Legacy Survey {ref}\"/px (ratio {ratio:.3f}, limit {max_scale_ratio}); "
                    "give Legacy Survey cutouts at 0.262\"/px (pixscale=0.262 in the cutout "
                    "service), or raise max_scale_ratio to resample anyway")
        if center is not None:
            _cutout(item, centers[k], size)
        if np.isfinite(item.pixel_scale):
            ratio = item.pixel_scale / ref
            if abs(ratio - 1) > scale_tolerance:
                item.data = _resample(item.data, ratio)
                resampled = True
        data = item.data
        if size is not None:
            data = center_crop(data, size, name=f"{item.source}: the image at 0.262\"/px",
                               fix="give a larger cutout or a smaller size=")
        data = np.array(data, dtype=np.float64)
        counts = _fill(data, fill, item.source)
        out.append(data.astype(np.float32))
        rows.append((item.source, ",".join(item.input_bands), item.pixel_scale, resampled,
                     int(counts.sum()), *[int(c) for c in counts]))
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise InputError(f"the images have different sizes {sorted(shapes)}; give size= to "
                         "crop them to one size")
    meta = Table(rows=rows, names=("source", "input_bands", "pixel_scale", "resampled",
                                   "n_filled", *[f"n_filled_{b}" for b in grid.BANDS]),
                 dtype=(str, str, float, bool, int, int, int, int))
    meta["pixel_scale"].unit = u.arcsec
    return PreparedImages(images=np.stack(out), meta=meta)


def color_map(images):
    """Legacy Survey viewer colour mapping of g, r, z images to RGB planes.

    For each band b with scale ``s_b`` (g 6.0, r 3.4, z 2.2) and offset ``m`` (0.03):
    ``x_b = max(0, img_b s_b + m)``, ``I = mean_b x_b`` (0 replaced by 1e-6),
    ``fI = asinh(Q I) / sqrt(Q)`` with ``Q = 20``, and the plane of band b
    (z -> 0, r -> 1, g -> 2) is ``(img_b s_b + m) fI / I`` clipped to [0, 1]
    (`astroclip.inputs.grid` holds the constants).

    Parameters
    ----------
    images : `numpy.ndarray` or `torch.Tensor`
        ``(N, 3, H, W)`` or ``(3, H, W)`` g, r, z images in nanomaggies.

    Returns
    -------
    `numpy.ndarray` or `torch.Tensor`
        Same type, shape and (floating) dtype: RGB planes in [0, 1].  The torch
        version is differentiable and stays on the input's device.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.inputs.images import color_map
    >>> rgb = color_map(np.zeros((1, 3, 2, 2), dtype=np.float32))
    >>> rgb.shape, float(rgb.max()) <= 1.0
    ((1, 3, 2, 2), True)
    """
    scales = [grid.COLOR_SCALES[b] for b in grid.BANDS]
    planes = [grid.COLOR_RGB_PLANE[b] for b in grid.BANDS]
    order = np.argsort(planes)  # output plane p takes band order[p]
    m, q = grid.COLOR_M, grid.COLOR_Q
    torch = sys.modules.get("torch")  # a tensor implies torch is imported: never import it here
    if torch is not None and isinstance(images, torch.Tensor):
        x = images if images.is_floating_point() else images.float()
        if x.ndim not in (3, 4) or x.shape[-3] != 3:
            raise InputError(f"color_map needs (N, 3, H, W) or (3, H, W) g, r, z images, got "
                             f"shape {tuple(x.shape)}")
        s = torch.tensor(scales, dtype=x.dtype, device=x.device).view(3, 1, 1)
        v = x * s + m
        intensity = torch.clamp(v, min=0).mean(dim=-3, keepdim=True)
        intensity = torch.where(intensity == 0, torch.full_like(intensity, 1e-6), intensity)
        fi = torch.asinh(q * intensity) / math.sqrt(q)
        rgb = torch.clamp(v * fi / intensity, 0.0, 1.0)
        return rgb[..., list(order), :, :]
    x = np.asarray(images)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise InputError(f"color_map needs (N, 3, H, W) or (3, H, W) g, r, z images, got "
                         f"shape {x.shape}")
    s = np.asarray(scales, dtype=x.dtype).reshape(3, 1, 1)
    v = x * s + np.asarray(m, dtype=x.dtype)
    intensity = np.clip(v, 0, None).mean(axis=-3, keepdims=True)
    intensity = np.where(intensity == 0, np.asarray(1e-6, dtype=x.dtype), intensity)
    fi = np.arcsinh(q * intensity) / math.sqrt(q)
    rgb = np.clip(v * fi / intensity, 0.0, 1.0).astype(x.dtype, copy=False)
    return rgb[..., order, :, :]
