"""On-disk layouts of paired image-spectrum files, behind one small registry.

Each layout is one module with an ``identify(f)`` function (is this open HDF5
file one of mine?) and a reader class (`~astroclip.data.layouts.LayoutReader`),
in the manner of specutils' loader registry:

========== =========================================== ==============================
name       files                                       module
========== =========================================== ==============================
astroclip  our paired file (format "astroclip-paired") `astroclip.data.layouts.astroclip`
paper      the paper's ``astroclip_desi.1.1.5.h5``     `astroclip.data.layouts.paper`
mmu        a Multimodal Universe DESI file and a       `astroclip.data.layouts.mmu`
           Multimodal Universe Legacy Survey file
========== =========================================== ==============================

`open_layout` identifies the file(s) and returns their reader; every reader of
paired files goes through it: `astroclip.data.paired.read_paired_dataset`,
`astroclip.data.datasets.PairedDataset` and the file inputs of
`astroclip.embed_spectrum` / `embed_image` / `embed_catalog`.  Another layout
is added with `register_layout`.

Examples
--------
>>> from astroclip.data.layouts import list_layouts, get_layout
>>> list_layouts()
('astroclip', 'paper', 'mmu')
>>> get_layout("mmu").roles
('spectra', 'images')
"""

from dataclasses import dataclass
from pathlib import Path

from ...exceptions import InputError
from ..hdf5 import open_hdf5
from . import astroclip as _astroclip
from . import mmu as _mmu
from . import paper as _paper
from ._base import PAPER_TRAIN_FRACTION, LayoutReader

__all__ = ["Layout", "LayoutReader", "PAPER_TRAIN_FRACTION", "register_layout", "get_layout",
           "list_layouts", "identify_layout", "resolve_layout", "open_layout"]


@dataclass(frozen=True)
class Layout:
    """One on-disk layout of the registry.

    Attributes
    ----------
    name : str
        Registry name (``"astroclip"``, ``"paper"``, ``"mmu"``).
    identify : callable
        ``identify(f) -> bool`` for an open `h5py.File`: whether ``f`` is (one
        file of) this layout.
    reader : type
        `LayoutReader` subclass, called as ``reader(path, label_names=...,
        **options)``, with a tuple of paths for a layout of several files.
    roles : tuple of str
        The files the layout needs, in order (``("file",)`` for one file).
    description : str
        What the files are, for messages.
    usage : str
        How to open such files, for messages.
    """

    name: str
    identify: object
    reader: type
    roles: tuple = ("file",)
    description: str = ""
    usage: str = ""


_REGISTRY = {}


def register_layout(name, *, identify, reader, roles=("file",), description="", usage="",
                    overwrite=False):
    """Add a layout to the registry (identified after those registered before it).

    Parameters
    ----------
    name : str
        Registry name.
    identify : callable
        ``identify(f) -> bool`` for an open `h5py.File`.
    reader : type
        `LayoutReader` subclass.
    roles : tuple of str, optional
        The files of the layout, in order.
    description, usage : str, optional
        For messages.
    overwrite : bool, optional
        Replace a layout of the same name.

    Returns
    -------
    `Layout`
    """
    name = str(name)
    if name in _REGISTRY and not overwrite:
        raise InputError(f"a layout named {name!r} is already registered; choose another name "
                         "or pass overwrite=True")
    layout = Layout(name, identify, reader, tuple(roles), description, usage)
    _REGISTRY[name] = layout
    return layout


register_layout(_astroclip.NAME, identify=_astroclip.identify, reader=_astroclip.AstroclipReader,
                description="an astroclip paired file",
                usage="PairedDataset(path) or read_paired_dataset(path)")
register_layout(_paper.NAME, identify=_paper.identify, reader=_paper.PaperReader,
                description="the paper's paired file (astroclip_desi.1.1.5.h5)",
                usage="PairedDataset(path) or read_paired_dataset(path)")
register_layout(_mmu.NAME, identify=_mmu.identify, reader=_mmu.MultimodalUniverseReader,
                roles=_mmu.ROLES, description="a Multimodal Universe file",
                usage="PairedDataset((spectra_path, images_path)) or "
                      "MultimodalUniverseDataset(spectra_path, images_path)")


def list_layouts():
    """Names of the registered layouts, in the order they are identified."""
    return tuple(_REGISTRY)


def get_layout(name):
    """The `Layout` registered under ``name``.

    Raises
    ------
    InputError
        An unknown name (the message lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown layout {name!r}; layout must be 'auto' or one of "
                         f"{list(_REGISTRY)}") from None


def identify_layout(f):
    """Name of the layout of an open `h5py.File` or a path (None when none matches).

    Examples
    --------
    >>> from astroclip.data.layouts import identify_layout
    >>> identify_layout("mock_survey.h5")  # doctest: +SKIP
    'astroclip'
    """
    if isinstance(f, (str, Path)):
        with open_hdf5(f) as handle:
            return identify_layout(handle)
    for layout in _REGISTRY.values():
        if layout.identify(f):
            return layout.name
    return None


def _unknown(path, f):
    fmt = f.attrs.get("format")
    fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    said = f" (its format attribute says {fmt!r})" if fmt else ""
    known = "; ".join(f"{lay.description} ({lay.name})" for lay in _REGISTRY.values())
    return InputError(f"{path} is not a paired file of a known layout{said}; the known "
                      f"layouts are: {known}. Build one with "
                      "astroclip.data.paired.PairedDatasetWriter")


def resolve_layout(source, layout="auto"):
    """The name of the layout of ``source`` (a path, or a tuple of paths), checked.

    Parameters
    ----------
    source : str, path-like or tuple of them
        One file, or the files of a layout of several (e.g. a Multimodal
        Universe spectra file and images file).
    layout : str, optional
        ``"auto"`` (identify the first file) or a registered name.

    Raises
    ------
    InputError
        A file of no known layout, one file of a layout of two (or the reverse).
    """
    several = isinstance(source, (tuple, list))
    if layout != "auto":
        spec = get_layout(layout)
    else:
        first = source[0] if several else source
        with open_hdf5(first) as f:
            name = identify_layout(f)
            if name is None:
                raise _unknown(first, f)
            spec = get_layout(name)
        if len(spec.roles) > 1 and not several:
            raise InputError(f"{source} is a single file of a pairing ({spec.description}); "
                             f"give the {' and the '.join(spec.roles)} files together: "
                             f"{spec.usage}")
    if several and len(source) != len(spec.roles):
        raise InputError(f"layout {spec.name!r} takes {len(spec.roles)} file(s) "
                         f"({', '.join(spec.roles)}), not {len(source)}: {spec.usage}")
    if not several and len(spec.roles) > 1:
        raise InputError(f"layout {spec.name!r} needs {len(spec.roles)} files "
                         f"({', '.join(spec.roles)}): {spec.usage}")
    return spec.name


def open_layout(source, *, layout="auto", label_names=None, **options):
    """The reader of a paired file (or of the files of a pairing).

    Parameters
    ----------
    source : str, path-like or tuple of them
        One file, or the files of a layout of several, in the order of its
        ``roles`` (Multimodal Universe: spectra, then images).
    layout : str, optional
        ``"auto"`` (default: identify the file) or a registered name.
    label_names : sequence of str, optional
        Labels to read (default: all the file has).
    **options
        Options of the layout's reader (e.g. ``match=`` of a Multimodal Universe
        pairing).

    Returns
    -------
    `LayoutReader`

    Examples
    --------
    >>> from astroclip.data.layouts import open_layout
    >>> reader = open_layout("astroclip_desi.1.1.5.h5")  # doctest: +SKIP
    >>> reader.layout, reader.n  # doctest: +SKIP
    ('paper', 197976)
    """
    spec = get_layout(resolve_layout(source, layout))
    if len(spec.roles) > 1:
        return spec.reader(tuple(source), label_names=label_names, **options)
    return spec.reader(source, label_names=label_names, **options)
