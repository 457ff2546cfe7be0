"""Torch Datasets over paired image-spectrum files of any layout.

`PairedDataset` reads, lazily and row by row, the files of every layout of
`astroclip.data.layouts`:

- ``"astroclip"``: the paired file written by `astroclip.data.paired.PairedDatasetWriter`;
- ``"paper"``: the paper's published paired file (``astroclip_desi.1.1.5.h5``);
- ``"mmu"``: a Multimodal Universe DESI spectra file and a Multimodal Universe Legacy
  Survey file, paired by identifier or by sky position (`MultimodalUniverseDataset`).

Every item is a dict of tensors: ``"targetid"`` (int64, 0-d), ``"spectrum"`` and
``"spectrum_ivar"`` (float32 (7781,), 1e-17 erg/s/cm2/A and its inverse square),
``"image"`` (float32 (3, S, S), g, r, z nanomaggies, sky orientation) and one float32
0-d tensor per label (``"Z"``, ``"LOG_MSTAR"``, ...).

The HDF5 files are opened on first use in each process (never in ``__init__``), so
the Dataset can be handed to a `torch.utils.data.DataLoader` with several workers.
"""

import os

import numpy as np
import torch
import astropy.units as u

from .._progress import progress_bar
from ..exceptions import InputError
from ..inputs import grid
from ..inputs.images import center_crop
from .hdf5 import open_hdf5, split_codes
from .layouts import get_layout, open_layout, resolve_layout
from .paired import PairedDatasetWriter

__all__ = ["PairedDataset", "MultimodalUniverseDataset", "convert_to_paired"]

# HDF5 chunk cache per open dataset: room for the larger chunks of files written by
# others (the paper's, Multimodal Universe's), kept between items of one process
_CACHE_BYTES = 16 << 20


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


def _split_selection(split, codes):
    """Boolean mask over rows whose split code is among ``split`` (None: all)."""
    if split is None:
        return np.ones(codes.shape, dtype=bool)
    wanted = split_codes([split] if isinstance(split, (str, int)) else split).reshape(-1)
    return np.isin(codes, wanted)


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
        80 % (`~astroclip.data.layouts.PAPER_TRAIN_FRACTION`) of rows of each group
        train, the rest test.
    layout : {"auto", "astroclip", "paper", "mmu"}, optional
        File layout (a name of `astroclip.data.layouts`); ``"auto"`` identifies it
        from the file.
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
    >>> from astroclip.data.paired import PairedDatasetWriter
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
        if crop is not None:
            crop = int(crop)
            if crop < 1:
                raise InputError(f"crop must be a positive number of pixels, got {crop}")
        name = resolve_layout(path, layout)
        options = {}
        if len(get_layout(name).roles) > 1:  # a pairing of files: how to pair and crop them
            options = dict(match=match, max_separation=max_separation,
                           image_size=crop or grid.IMAGE_SIZE)
        self._reader = open_layout(path, layout=name, label_names=label_names, **options)
        size = self._reader.image_shape[-1]
        if crop is not None and crop > size:
            raise InputError(f"crop={crop} is larger than the stored images ({size}x{size})")
        self.layout = self._reader.layout
        self.crop = crop
        self.transform = transform
        with self._reader.open() as files:
            keep = _split_selection(split, np.asarray(self._reader.split_codes(files)))
            self._refs = np.flatnonzero(keep)
            self.table = self._reader.read_table(files, self._refs)
        self.label_names = list(self._reader.label_names)
        self.match_report = self._reader.report
        self._files = None
        self._pid = None

    def __len__(self):
        return len(self._refs)

    def _handles(self):
        # (re)open in every process: h5py handles must not cross a fork
        if self._files is None or self._pid != os.getpid():
            self._files = tuple(_Lookup(open_hdf5(p, rdcc_nbytes=_CACHE_BYTES))
                                for p in self._reader.paths)
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
        raw = self._reader.read(self._handles(), ref)
        image = np.asarray(raw["image"], dtype=np.float32)
        if self.crop is not None:
            image = center_crop(image, self.crop)
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


def convert_to_paired(source, path, *, overwrite=False, batch_size=64, workers=0,
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
    batch_size, workers : int, optional
        Rows read per step and `~torch.utils.data.DataLoader` worker processes.
    chunk_rows : int, optional
        HDF5 chunk rows of the output (`~astroclip.data.paired.PairedDatasetWriter`).
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
                                         num_workers=int(workers))
    start = 0
    with PairedDatasetWriter(path, overwrite=overwrite, label_names=dataset.label_names,
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
