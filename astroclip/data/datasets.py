"""Torch Datasets over paired image-spectrum files.

`PairedDataset` reads, lazily and row by row, any of:

- ``"astroclip"``: the paired file written by `astroclip.data.hdf5.PairedDatasetWriter`;
- ``"paper"``: the paper's published paired file (``astroclip_desi.1.1.5.h5``: groups
  ``"0"`` ... ``"9"`` with ``images`` (N, 152, 152, 3) stored with the pixel axes
  swapped, ``spectra`` (N, 7781), ``redshifts``, ``targetids``);
- ``"mmu"``: a Multimodal Universe DESI spectra file and a Multimodal Universe Legacy
  Survey file, paired by identifier or by sky position
  (`MultimodalUniverseDataset`).

Every item is a dict of tensors: ``"targetid"`` (int64, 0-d), ``"spectrum"`` and
``"spectrum_ivar"`` (float32 (7781,), 1e-17 erg/s/cm2/A and its inverse square),
``"image"`` (float32 (3, S, S), g, r, z nanomaggies, sky orientation) and one float32
0-d tensor per label (``"Z"``, ``"LOG_MSTAR"``, ...).

The HDF5 files are opened on first use in each process (never in ``__init__``), so
the Dataset can be handed to a `torch.utils.data.DataLoader` with several workers.
"""

import os
import warnings

import h5py
import numpy as np
import torch
import astropy.units as u
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from .._progress import progress_bar
from ..exceptions import InputError
from ..inputs import grid
from . import hdf5 as _h5

__all__ = ["PairedDataset", "MultimodalUniverseDataset", "detect_layout",
           "convert_to_paired", "PAPER_TRAIN_FRACTION"]

#: Fraction of each group of the paper's file (and of a Multimodal Universe pairing)
#: that forms the reference training split; the remaining rows are the test split.
PAPER_TRAIN_FRACTION = 0.8

_PAPER_GROUP_FIELDS = ("images", "spectra", "redshifts", "targetids")
# HDF5 chunk cache per open dataset: room for the larger chunks of files written by
# others (the paper's, Multimodal Universe's), kept between items of one process
_CACHE_BYTES = 16 << 20


def detect_layout(f):
    """Name the layout of an open HDF5 file.

    Parameters
    ----------
    f : `h5py.File`

    Returns
    -------
    str or None
        ``"astroclip"``, ``"paper"``, ``"mmu_spectra"``, ``"mmu_images"``, or None when
        the file is none of these.
    """
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt == _h5.FORMAT:
        return "astroclip"
    keys = list(f.keys())
    groups = [k for k in keys if k.isdigit()]
    if groups and any(hasattr(f[k], "keys") and "images" in f[k] for k in groups):
        return "paper"
    if "spectrum_flux" in f:
        return "mmu_spectra"
    if "image_array" in f:
        return "mmu_images"
    return None


class _Lookup:
    """An open h5py file whose datasets are looked up once, then reused per item."""

    def __init__(self, file):
        self.file = file
        self._cache = {}

    def __getitem__(self, key):
        ds = self._cache.get(key)
        if ds is None:
            ds = self._cache[key] = self.file[key]
        return ds

    def __contains__(self, key):
        return key in self._cache or key in self.file


def _center_crop(image, size):
    h, w = image.shape[-2:]
    if size is None or (h == size and w == size):
        return image
    if size > h or size > w:
        raise InputError(f"crop={size} is larger than the stored images ({h}x{w}); "
                         "choose crop <= the stored size")
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top:top + size, left:left + size]


def _decode(values):
    return np.array([v.decode().strip() if isinstance(v, bytes) else str(v).strip()
                     for v in np.asarray(values).reshape(-1)])


def _split_selection(split, codes):
    """Boolean mask over rows whose split code is among ``split`` (None: all)."""
    if split is None:
        return np.ones(codes.shape, dtype=bool)
    wanted = _h5.split_codes([split] if isinstance(split, (str, int)) else split).reshape(-1)
    return np.isin(codes, wanted)


def _reference_split(n):
    """int8 codes: first PAPER_TRAIN_FRACTION of n rows train (0), the rest test (2)."""
    codes = np.full(n, 2, dtype=np.int8)
    codes[:int(np.floor(PAPER_TRAIN_FRACTION * n))] = 0
    return codes


class _AstroclipBackend:
    layout = "astroclip"

    def __init__(self, path, label_names):
        self.paths = (path,)
        with _h5.open_hdf5(path) as f:
            n = _h5._check_layout(f, path)
            available = _h5._label_names(f)
            self.label_names = _pick_labels(label_names, available, path)
            self.image_shape = f["image"].shape[1:]
            table = Table()
            table["targetid"] = f["targetid"][:]
            table["ra"] = u.Quantity(f["ra"][:], u.deg)
            table["dec"] = u.Quantity(f["dec"][:], u.deg)
            table["split"] = f["split"][:]
            for name in self.label_names:
                table[name] = f["labels"][name][:]
        self.n = n
        self.table = table
        self.refs = np.arange(n)

    def read(self, files, ref):
        f = files[0]
        item = {"targetid": np.int64(f["targetid"][ref]),
                "spectrum": f["spectrum/flux"][ref],
                "spectrum_ivar": f["spectrum/ivar"][ref],
                "image": f["image"][ref]}
        for name in self.label_names:
            item[name] = f[f"labels/{name}"][ref]
        return item


def _paper_spectrum(flux):
    """Paper file has no ivar: unit weight where flux is finite, 0 (and flux 0) elsewhere."""
    flux = np.asarray(flux, dtype=np.float32)
    good = np.isfinite(flux)
    return np.where(good, flux, 0).astype(np.float32), good.astype(np.float32)


class _PaperBackend:
    layout = "paper"

    def __init__(self, path, label_names):
        self.paths = (path,)
        with _h5.open_hdf5(path) as f:
            groups = sorted((k for k in f.keys() if k.isdigit()), key=int)
            groups = [g for g in groups if hasattr(f[g], "keys")]
            gids, rows, tids, z, codes = [], [], [], [], []
            for g in groups:
                missing = [k for k in _PAPER_GROUP_FIELDS if k not in f[g]]
                if missing:
                    raise InputError(f"{path}: group {g!r} lacks the fields {missing} of the "
                                     "paper's paired file; the file is incomplete or not that "
                                     "file: download it again")
                n = f[g]["targetids"].shape[0]
                shapes = {k: f[g][k].shape for k in _PAPER_GROUP_FIELDS}
                if shapes["images"][1:] != (grid.IMAGE_SIZE, grid.IMAGE_SIZE, 3) or \
                        shapes["spectra"][1:] != (grid.N_PIXELS,) or \
                        any(s[0] != n for s in shapes.values()):
                    raise InputError(f"{path}: group {g!r} has shapes {shapes}; the paper's file "
                                     f"has images (N, {grid.IMAGE_SIZE}, {grid.IMAGE_SIZE}, 3) "
                                     f"and spectra (N, {grid.N_PIXELS}) with N rows each")
                gids.append(np.full(n, int(g)))
                rows.append(np.arange(n))
                tids.append(f[g]["targetids"][:].astype(np.int64))
                z.append(f[g]["redshifts"][:].astype(np.float64))
                codes.append(_reference_split(n))
        if not groups:
            raise InputError(f"{path} has no groups '0'...'9'; it is not the paper's file")
        self.label_names = _pick_labels(label_names, ["Z"], path)
        self.image_shape = (3, grid.IMAGE_SIZE, grid.IMAGE_SIZE)
        self.groups = [str(int(g)) for g in groups]
        table = Table()
        table["targetid"] = np.concatenate(tids)
        table["split"] = np.concatenate(codes)
        if "Z" in self.label_names:
            table["Z"] = np.concatenate(z)
        table["group"] = np.concatenate(gids)
        table["row"] = np.concatenate(rows)
        self.table = table
        self.n = len(table)
        self.refs = np.arange(self.n)
        self._group = np.asarray(table["group"])
        self._row = np.asarray(table["row"])

    def read(self, files, ref):
        f = files[0]
        g = str(self._group[ref])
        row = int(self._row[ref])
        flux, ivar = _paper_spectrum(f[f"{g}/spectra"][row])
        # stored (x, y, band): swap the pixel axes back to (band, y, x)
        image = np.ascontiguousarray(np.asarray(f[f"{g}/images"][row], dtype=np.float32)
                                     .transpose(2, 1, 0))
        item = {"targetid": np.int64(f[f"{g}/targetids"][row]), "spectrum": flux,
                "spectrum_ivar": ivar, "image": image}
        if "Z" in self.label_names:
            item["Z"] = f[f"{g}/redshifts"][row]
        return item


def _pick_labels(requested, available, path):
    if requested is None:
        return list(available)
    requested = [requested] if isinstance(requested, str) else list(requested)
    missing = [name for name in requested if name not in available]
    if missing:
        raise InputError(f"{path} has no label columns {missing}; available: {list(available)}")
    return requested


def _mmu_band_index(f, path):
    if "image_band" not in f:
        raise InputError(f"{path} lacks 'image_band'; a Multimodal Universe Legacy Survey "
                         "file names the band of each image plane there")
    bands = f["image_band"]
    names = _decode(bands[0] if bands.ndim == 2 else bands[:])
    # "des-g", "DES-G", "g" -> "g"
    short = [n.lower().rsplit("-", 1)[-1].rsplit("_", 1)[-1] for n in names]
    missing = [b for b in grid.BANDS if b not in short]
    if missing:
        raise InputError(f"{path}: image bands {list(names)} lack {missing}; the models need "
                         f"bands {grid.BANDS}")
    return [short.index(b) for b in grid.BANDS]


def _mmu_coords(f):
    for ra, dec in (("ra", "dec"), ("RA", "DEC")):
        if ra in f and dec in f:
            return f[ra][:].astype(np.float64), f[dec][:].astype(np.float64)
    return None


class _MMUBackend:
    layout = "mmu"

    def __init__(self, spectra_path, images_path, label_names, match, max_separation,
                 image_size):
        self.paths = (spectra_path, images_path)
        with _h5.open_hdf5(spectra_path) as fs, _h5.open_hdf5(images_path) as fi:
            if detect_layout(fs) != "mmu_spectra":
                raise InputError(f"{spectra_path} is not a Multimodal Universe spectra file (no "
                                 "'spectrum_flux'); give the DESI file first, then the Legacy "
                                 "Survey file")
            if detect_layout(fi) != "mmu_images":
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
            self.band_index = _mmu_band_index(fi, images_path)
            self._check_scale(fi, images_path)
            self.image_size = image_size
            if min(shape[2:]) < image_size:
                raise InputError(f"{images_path}: images are {shape[2]}x{shape[3]} px, smaller "
                                 f"than {image_size}; pass crop=<= {min(shape[2:])}")
            self.image_shape = (3, image_size, image_size)
            spec_ids = _decode(fs["object_id"][:])
            img_ids = _decode(fi["object_id"][:])
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
            self.label_names = _pick_labels(label_names if label_names is not None else default,
                                            available, spectra_path)
            labels = {k: fs[k][:].astype(np.float64)[s_rows] for k in self.label_names}
            coords = _mmu_coords(fs)
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
        table["split"] = _reference_split(len(s_rows))
        for k, v in labels.items():
            table[k] = v
        table["spectrum_row"] = s_rows
        table["image_row"] = i_rows
        self.table = table
        self._spectrum_row, self._image_row = s_rows, i_rows
        self._targetid = np.asarray(table["targetid"])
        self.n = len(table)
        self.refs = np.arange(self.n)

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
        cs, ci = _mmu_coords(fs), _mmu_coords(fi)
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
        image = _center_crop(image, self.image_size)
        image = np.where(np.isfinite(image), image, 0).astype(np.float32)
        item = {"targetid": np.int64(self._targetid[ref]), "spectrum": flux,
                "spectrum_ivar": ivar, "image": np.ascontiguousarray(image)}
        for name in self.label_names:
            item[name] = fs[name][i]
        return item


class PairedDataset(torch.utils.data.Dataset):
    """A lazily read Dataset of image-spectrum pairs.

    Parameters
    ----------
    path : str or path-like, or (str, str)
        A paired file (astroclip format or the paper's file), or a pair
        ``(spectra_path, images_path)`` of Multimodal Universe files.
    split : str, int or sequence, optional
        Rows of these splits only (``"train"``, ``"val"``, ``"test"``).  The paper's
        file and Multimodal Universe pairings have the reference split: the first
        80 % (`PAPER_TRAIN_FRACTION`) of rows of each group train, the rest test.
    layout : {"auto", "astroclip", "paper", "mmu"}, optional
        File layout; ``"auto"`` detects it from the file.
    crop : int, optional
        Centre-crop the images to ``crop x crop`` pixels (e.g. 96 or 144).
    label_names : sequence of str, optional
        Labels to return (all the file has by default; the paper's file has ``"Z"``).
    transform : callable, optional
        Applied to each item dict before it is returned.
    match : {"id", "sky"}, optional
        Multimodal Universe only: pair by ``object_id`` or by position.
    max_separation : `~astropy.units.Quantity`, optional
        Multimodal Universe only: largest separation of a sky match (1 arcsec).

    Notes
    -----
    The paper's file has no inverse variance; its spectra get ``spectrum_ivar = 1``
    wherever the flux is finite and 0 (with flux 0) elsewhere, i.e. unit weights.
    Multimodal Universe spectra get ``ivar = 0`` and flux 0 where ``spectrum_mask`` is
    set or a value is not finite; non-finite image pixels become 0.

    Attributes
    ----------
    table : `~astropy.table.Table`
        One row per item: ``targetid``, ``split``, labels (and ``ra``/``dec`` when the
        file has them).
    layout : str
    label_names : list of str

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astroclip.data.hdf5 import PairedDatasetWriter
    >>> from astroclip.data.datasets import PairedDataset
    >>> path = os.path.join(tempfile.mkdtemp(), "pairs.h5")
    >>> with PairedDatasetWriter(path, label_names=["Z"], image_size=16) as writer:
    ...     writer.append(targetid=[7, 8], ra=[1.0, 2.0], dec=[3.0, 4.0],
    ...                   flux=np.ones((2, 7781)), ivar=np.ones((2, 7781)),
    ...                   image=np.zeros((2, 3, 16, 16)), split=["train", "test"],
    ...                   labels={"Z": [0.1, 0.3]})
    >>> data = PairedDataset(path, split="train", crop=8)
    >>> len(data), data[0]["image"].shape, round(float(data[0]["Z"]), 6)
    (1, torch.Size([3, 8, 8]), 0.1)
    """

    def __init__(self, path, *, split=None, layout="auto", crop=None, label_names=None,
                 transform=None, match="id", max_separation=1 * u.arcsec):
        if layout not in ("auto", "astroclip", "paper", "mmu"):
            raise InputError(f"layout must be 'auto', 'astroclip', 'paper' or 'mmu', "
                             f"got {layout!r}")
        pair = isinstance(path, (tuple, list))
        if pair and len(path) != 2:
            raise InputError("give one paired file, or (spectra_path, images_path) for "
                             "Multimodal Universe files")
        if layout == "auto":
            if pair:
                layout = "mmu"
            else:
                with _h5.open_hdf5(path) as f:
                    found = detect_layout(f)
                if found in ("mmu_spectra", "mmu_images"):
                    raise InputError(f"{path} is a single Multimodal Universe file ({found}); "
                                     "pair a spectra file with an image file: "
                                     "PairedDataset((spectra_path, images_path))")
                if found is None:
                    raise InputError(f"{path} is neither an astroclip paired file nor the "
                                     "paper's file nor a Multimodal Universe file; build one "
                                     "with astroclip.data.hdf5.PairedDatasetWriter")
                layout = found
        if crop is not None:
            crop = int(crop)
            if crop < 1:
                raise InputError(f"crop must be a positive number of pixels, got {crop}")
        if layout == "mmu":
            if not pair:
                raise InputError("layout='mmu' needs (spectra_path, images_path)")
            self._backend = _MMUBackend(path[0], path[1], label_names, match, max_separation,
                                        crop or grid.IMAGE_SIZE)
        elif pair:
            raise InputError(f"layout {layout!r} takes one file, not {path}")
        elif layout == "astroclip":
            self._backend = _AstroclipBackend(path, label_names)
        else:
            self._backend = _PaperBackend(path, label_names)
        size = self._backend.image_shape[-1]
        if crop is not None and crop > size:
            raise InputError(f"crop={crop} is larger than the stored images ({size}x{size})")
        self.layout = self._backend.layout
        self.crop = crop
        self.transform = transform
        keep = _split_selection(split, np.asarray(self._backend.table["split"]))
        self._refs = self._backend.refs[keep]
        self.table = self._backend.table[keep]
        for col in ("group", "row", "spectrum_row", "image_row"):
            if col in self.table.colnames:
                del self.table[col]
        self.label_names = list(self._backend.label_names)
        self.match_report = getattr(self._backend, "report", None)
        self._files = None
        self._pid = None

    def __len__(self):
        return len(self._refs)

    def _handles(self):
        # (re)open in every process: h5py handles must not cross a fork
        if self._files is None or self._pid != os.getpid():
            self._files = tuple(_Lookup(_h5.open_hdf5(p, rdcc_nbytes=_CACHE_BYTES))
                                for p in self._backend.paths)
            self._pid = os.getpid()
        return self._files

    def close(self):
        """Close the open file handles of this process (they reopen on the next item)."""
        if self._files is not None and self._pid == os.getpid():
            for f in self._files:
                f.file.close()
        self._files = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"] = None
        state["_pid"] = None
        return state

    def __getitem__(self, index):
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        ref = self._refs[index]
        raw = self._backend.read(self._handles(), ref)
        image = np.asarray(raw["image"], dtype=np.float32)
        if self.crop is not None:
            image = _center_crop(image, self.crop)
        item = {"targetid": torch.tensor(int(raw["targetid"]), dtype=torch.int64),
                "spectrum": torch.from_numpy(np.asarray(raw["spectrum"], dtype=np.float32)),
                "spectrum_ivar": torch.from_numpy(np.asarray(raw["spectrum_ivar"],
                                                             dtype=np.float32)),
                "image": torch.from_numpy(np.ascontiguousarray(image))}
        for name in self.label_names:
            item[name] = torch.tensor(float(raw[name]), dtype=torch.float32)
        if self.transform is not None:
            item = self.transform(item)
        return item


class MultimodalUniverseDataset(PairedDataset):
    """Pairs of a Multimodal Universe DESI file and Legacy Survey file.

    Rows of the two files are matched by ``object_id`` (``match="id"``) or by
    position within ``max_separation`` (``match="sky"``); objects without a partner
    are left out, counted in ``match_report`` and reported by a warning.  Images are
    reduced to the g, r, z planes (named by ``image_band``, e.g. ``"des-g"``) and
    centre-cropped to 152 px (or ``crop``); ``image_scale`` must be 0.262"/px.

    Parameters
    ----------
    spectra_path, images_path : str or path-like
        The DESI (``spectrum_flux`` ...) and Legacy Survey (``image_array`` ...) files.
    **kwargs
        As for `PairedDataset` (split, crop, label_names, transform, match, max_separation).

    Examples
    --------
    >>> from astroclip.data.datasets import MultimodalUniverseDataset
    >>> data = MultimodalUniverseDataset("desi/healpix=1/001-of-001.hdf5",
    ...                                  "legacysurvey/healpix=1/001-of-001.hdf5")  # doctest: +SKIP
    """

    def __init__(self, spectra_path, images_path, **kwargs):
        kwargs.setdefault("layout", "mmu")
        super().__init__((spectra_path, images_path), **kwargs)


def convert_to_paired(source, path, *, overwrite=False, batch_size=64, num_workers=0,
                      chunk_rows=4, progress=None):
    """Write any paired source (paper file, Multimodal Universe pair) as an astroclip file.

    Parameters
    ----------
    source : `PairedDataset`, path, or (spectra_path, images_path)
        What to convert; paths are opened with ``PairedDataset(source)`` (all rows,
        the reference split kept in the ``split`` column).
    path : str or path-like
        The astroclip paired file to write (atomically: nothing is left under
        ``path`` if the conversion stops).
    overwrite : bool, optional
        Replace an existing ``path``.
    batch_size, num_workers : int, optional
        Rows read per step and `~torch.utils.data.DataLoader` worker processes.
    chunk_rows : int, optional
        HDF5 chunk rows of the output (`~astroclip.data.hdf5.PairedDatasetWriter`).
    progress : bool, optional
        Show a progress bar (default: ``astroclip.conf.progress``).

    Returns
    -------
    int
        Number of rows written.

    Notes
    -----
    Rows keep the source's conventions (e.g. unit ivar for the paper's file);
    positions unknown to the source (the paper's file has none) are stored as NaN.
    A stopped conversion is not resumed: run it again.

    Examples
    --------
    >>> from astroclip.data.datasets import convert_to_paired
    >>> convert_to_paired("astroclip_desi.1.1.5.h5", "paper.h5")  # doctest: +SKIP
    """
    dataset = source if isinstance(source, PairedDataset) else PairedDataset(source)
    if len(dataset) == 0:
        raise InputError("the source has no rows to convert")
    table = dataset.table
    size = int(dataset[0]["image"].shape[-1])
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(batch_size), shuffle=False,
                                         num_workers=int(num_workers))
    start = 0
    with _h5.PairedDatasetWriter(path, overwrite=overwrite, label_names=dataset.label_names,
                                 image_size=size, chunk_rows=chunk_rows,
                                 attrs={"source_layout": dataset.layout}) as writer:
        for batch in progress_bar(loader, desc="convert", unit="batch", progress=progress):
            n = len(batch["targetid"])
            rows = table[start:start + n]
            nan = np.full(n, np.nan)
            writer.append(
                targetid=batch["targetid"].numpy(),
                ra=np.asarray(rows["ra"]) if "ra" in rows.colnames else nan,
                dec=np.asarray(rows["dec"]) if "dec" in rows.colnames else nan,
                flux=batch["spectrum"].numpy(), ivar=batch["spectrum_ivar"].numpy(),
                image=batch["image"].numpy(), split=np.asarray(rows["split"]),
                labels={name: np.asarray(rows[name], dtype=np.float64)
                        for name in dataset.label_names})
            start += n
    return start
