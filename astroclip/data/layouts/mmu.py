"""Layout ``"mmu"``: a Multimodal Universe DESI file paired with a Legacy Survey file.

The Multimodal Universe (The Multimodal Universe Collaboration 2024) stores
each survey apart, in HDF5 files per healpix; a pairing needs two of them:

- the DESI spectra file: ``object_id``, ``ra``, ``dec``, ``spectrum_flux`` and
  ``spectrum_ivar`` (N, 7781) on the DESI grid (``spectrum_lambda``), optional
  ``spectrum_mask``, and numeric columns such as ``Z`` (labels);
- the Legacy Survey file: ``object_id``, ``ra``, ``dec``, ``image_array``
  (N, bands, H, W) with ``image_band`` names (e.g. ``"des-g"``) and
  ``image_scale`` (arcsec/px).

Rows are paired by ``object_id`` (``match="id"``) or by position within
``max_separation`` (``match="sky"``); objects without a partner are left out,
counted in ``report`` and reported by a warning.  Images are reduced to the
g, r, z planes and centre-cropped; spectra get ``ivar = 0`` and flux 0 where
``spectrum_mask`` is set or a value is not finite; non-finite image pixels
become 0.  The reference split is the first 80 % of the pairs for training.
"""

import warnings

import h5py
import numpy as np
import astropy.units as u
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from ...exceptions import InputError
from ...inputs import grid
from ...inputs.images import center_crop
from ..hdf5 import open_hdf5
from ._base import LayoutReader, decode, pick_labels, reference_split

__all__ = ["NAME", "ROLES", "identify", "role", "MultimodalUniverseReader"]

#: Name of the layout in the registry.
NAME = "mmu"
#: The files of a pairing, in order.
ROLES = ("spectra", "images")


def role(f):
    """``"spectra"`` or ``"images"``: which Multimodal Universe file ``f`` is (else None)."""
    if "spectrum_flux" in f:
        return "spectra"
    if "image_array" in f:
        return "images"
    return None


def identify(f):
    """Whether the open HDF5 file ``f`` is one file of a Multimodal Universe pairing."""
    return role(f) is not None


def _band_index(f, path):
    if "image_band" not in f:
        raise InputError(f"{path} lacks 'image_band'; a Multimodal Universe Legacy Survey "
                         "file names the band of each image plane there")
    bands = f["image_band"]
    names = decode(bands[0] if bands.ndim == 2 else bands[:])
    # "des-g", "DES-G", "g" -> "g"
    short = [n.lower().rsplit("-", 1)[-1].rsplit("_", 1)[-1] for n in names]
    missing = [b for b in grid.BANDS if b not in short]
    if missing:
        raise InputError(f"{path}: image bands {list(names)} lack {missing}; the models need "
                         f"bands {grid.BANDS}")
    return [short.index(b) for b in grid.BANDS]


def _coords(f):
    for ra, dec in (("ra", "dec"), ("RA", "DEC")):
        if ra in f and dec in f:
            return f[ra][:].astype(np.float64), f[dec][:].astype(np.float64)
    return None


class MultimodalUniverseReader(LayoutReader):
    """Reader of a Multimodal Universe DESI file paired with a Legacy Survey file.

    Parameters
    ----------
    paths : (str, str)
        The DESI spectra file, then the Legacy Survey images file.
    label_names : sequence of str, optional
        Numeric columns of the spectra file to read as labels (default ``["Z"]``
        when present).
    match : {"id", "sky"}, optional
        Pair rows by ``object_id`` or by position.
    max_separation : `~astropy.units.Quantity`, optional
        Largest separation of a sky match (1 arcsec).
    image_size : int, optional
        Side of the centre crop of the images (152 by default).
    """

    layout = NAME

    def __init__(self, paths, *, label_names=None, match="id", max_separation=1 * u.arcsec,
                 image_size=grid.IMAGE_SIZE):
        if not isinstance(paths, (tuple, list)) or len(paths) != 2:
            raise InputError("a Multimodal Universe pairing needs two files: "
                             "(spectra_path, images_path)")
        super().__init__(paths)
        spectra_path, images_path = paths
        with open_hdf5(spectra_path) as fs, open_hdf5(images_path) as fi:
            if role(fs) != "spectra":
                raise InputError(f"{spectra_path} is not a Multimodal Universe spectra file (no "
                                 "'spectrum_flux'); give the DESI file first, then the Legacy "
                                 "Survey file")
            if role(fi) != "images":
                raise InputError(f"{images_path} is not a Multimodal Universe image file (no "
                                 "'image_array'); give the Legacy Survey file second")
            need_s = ["spectrum_flux", "spectrum_ivar", "object_id"]
            missing = [k for k in need_s if k not in fs]
            if missing:
                raise InputError(f"{spectra_path} lacks the required fields {missing}")
            need_i = ["image_array", "image_band", "object_id"]
            missing = [k for k in need_i if k not in fi]
            if missing:
                raise InputError(f"{images_path} lacks the required fields {missing}")
            self._check_wavelength(fs, spectra_path)
            shape = fi["image_array"].shape
            if len(shape) != 4:
                raise InputError(f"{images_path}: image_array has shape {shape}; expected "
                                 "(N, bands, H, W)")
            self.band_index = _band_index(fi, images_path)
            self._check_scale(fi, images_path)
            self.image_size = image_size
            if min(shape[2:]) < image_size:
                raise InputError(f"{images_path}: images are {shape[2]}x{shape[3]} px, smaller "
                                 f"than {image_size}; pass crop=<= {min(shape[2:])}")
            self.image_shape = (3, image_size, image_size)
            spec_ids = decode(fs["object_id"][:])
            img_ids = decode(fi["object_id"][:])
            if match == "id":
                s_rows, i_rows = self._match_ids(spec_ids, img_ids)
            elif match == "sky":
                s_rows, i_rows = self._match_sky(fs, fi, max_separation)
            else:
                raise InputError(f"match must be 'id' or 'sky', got {match!r}")
            available = [k for k, v in fs.items() if isinstance(v, h5py.Dataset) and
                         v.ndim == 1 and v.shape[0] == len(spec_ids) and
                         np.issubdtype(v.dtype, np.number) and
                         k not in ("object_id", "ra", "dec")]
            default = ["Z"] if "Z" in fs else []
            self.label_names = pick_labels(label_names if label_names is not None else default,
                                           available, spectra_path)
            labels = {k: fs[k][:].astype(np.float64)[s_rows] for k in self.label_names}
            coords = _coords(fs)
        self.report = {"n_spectra": len(spec_ids), "n_images": len(img_ids),
                       "n_matched": len(s_rows),
                       "n_unmatched_spectra": len(spec_ids) - len(np.unique(s_rows)),
                       "n_unmatched_images": len(img_ids) - len(np.unique(i_rows))}
        if len(s_rows) == 0:
            raise InputError(f"no object of {spectra_path} matches one of {images_path} by "
                             f"{match}; the files cover different objects (other healpix?) or "
                             "use different identifiers: try match='sky'")
        if self.report["n_unmatched_spectra"] or self.report["n_unmatched_images"]:
            warnings.warn(f"Multimodal Universe pairing by {match}: {len(s_rows)} pairs; "
                          f"{self.report['n_unmatched_spectra']} spectra and "
                          f"{self.report['n_unmatched_images']} images without a partner are "
                          "left out (counts in dataset.match_report)", AstropyUserWarning)
        table = Table()
        table["targetid"] = self._targetids(spec_ids[s_rows], spectra_path)
        if coords is not None:
            table["ra"] = u.Quantity(coords[0][s_rows], u.deg)
            table["dec"] = u.Quantity(coords[1][s_rows], u.deg)
        table["split"] = reference_split(len(s_rows))
        for k, v in labels.items():
            table[k] = v
        self._table = table
        self._spectrum_row, self._image_row = s_rows, i_rows
        self._targetid = np.asarray(table["targetid"])
        self.n = len(table)

    @staticmethod
    def _targetids(ids, path):
        try:
            return ids.astype(np.int64)
        except ValueError:
            raise InputError(f"{path}: object_id values such as {ids[0]!r} are not integer "
                             "DESI TARGETIDs") from None

    @staticmethod
    def _check_wavelength(fs, path):
        n = fs["spectrum_flux"].shape[-1]
        if n != grid.N_PIXELS:
            raise InputError(f"{path}: spectra have {n} pixels, not the {grid.N_PIXELS} of the "
                             "combined DESI grid; put them on the grid with "
                             "astroclip.prepare_spectra")
        if "spectrum_lambda" in fs:
            lam = fs["spectrum_lambda"]
            first = np.asarray(lam[0] if lam.ndim == 2 else lam[:], dtype=np.float64)
            if first.shape != (grid.N_PIXELS,) or \
                    np.max(np.abs(first - grid.WAVELENGTH)) > 0.01:
                raise InputError(f"{path}: spectrum_lambda is not the DESI grid "
                                 f"({grid.WAVE_MIN}-{grid.WAVE_MAX} A, {grid.WAVE_STEP} A); "
                                 "resample the spectra with astroclip.prepare_spectra")

    @staticmethod
    def _check_scale(fi, path):
        if "image_scale" not in fi:
            return
        scale = np.asarray(fi["image_scale"][0] if fi["image_scale"].ndim else
                           fi["image_scale"][()], dtype=np.float64)
        ref = grid.PIXEL_SCALE.to_value(u.arcsec)
        if np.any(np.abs(scale / ref - 1) > 0.01):
            raise InputError(f"{path}: image_scale {scale.tolist()} arcsec/px differs from the "
                             f"Legacy Survey {ref} arcsec/px the models use; resample the "
                             "images with astroclip.prepare_images")

    @staticmethod
    def _match_ids(spec_ids, img_ids):
        img_pos = {}
        for j, key in enumerate(img_ids):
            img_pos.setdefault(key, j)
        s_rows, i_rows = [], []
        for i, key in enumerate(spec_ids):
            j = img_pos.get(key)
            if j is not None:
                s_rows.append(i)
                i_rows.append(j)
        return np.asarray(s_rows, dtype=np.int64), np.asarray(i_rows, dtype=np.int64)

    @staticmethod
    def _match_sky(fs, fi, max_separation):
        from astropy.coordinates import SkyCoord
        cs, ci = _coords(fs), _coords(fi)
        if cs is None or ci is None:
            raise InputError("match='sky' needs ra and dec in both files")
        spec = SkyCoord(cs[0] * u.deg, cs[1] * u.deg)
        img = SkyCoord(ci[0] * u.deg, ci[1] * u.deg)
        idx, sep, _ = spec.match_to_catalog_sky(img)
        ok = sep <= u.Quantity(max_separation, u.arcsec)
        return np.nonzero(ok)[0].astype(np.int64), idx[ok].astype(np.int64)

    def read(self, files, ref):
        fs, fi = files
        i = int(self._spectrum_row[ref])
        j = int(self._image_row[ref])
        flux = np.asarray(fs["spectrum_flux"][i], dtype=np.float32)
        ivar = np.asarray(fs["spectrum_ivar"][i], dtype=np.float32)
        bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0)
        if "spectrum_mask" in fs:
            bad |= np.asarray(fs["spectrum_mask"][i]).astype(bool)
        flux = np.where(bad, 0, flux).astype(np.float32)
        ivar = np.where(bad, 0, ivar).astype(np.float32)
        image = np.asarray(fi["image_array"][j], dtype=np.float32)[self.band_index]
        image = center_crop(image, self.image_size, name=f"{self.paths[1]}: images")
        image = np.where(np.isfinite(image), image, 0).astype(np.float32)
        item = {"targetid": np.int64(self._targetid[ref]), "spectrum": flux,
                "spectrum_ivar": ivar, "image": np.ascontiguousarray(image)}
        for name in self.label_names:
            item[name] = fs[name][i]
        return item
