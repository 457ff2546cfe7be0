"""Flux-conserving resampling onto the DESI grid: astroclip vs specutils.

Times, on the same DESI-like input, astroclip's vectorised resampler
(`astroclip.inputs.resample.resample_flux_conserving`, one sparse overlap matrix
per input grid applied to the whole batch) against specutils'
`FluxConservingResampler` (a Python loop over output pixels, one spectrum at a
time), and the full `prepare_spectra` path (unit conversion, masks, arms).
specutils is timed on a few spectra and its rate extrapolated per spectrum.

Cases:

- ``0.5 A grid``: one 3500-10000 A spectrum per row on a 0.5 A grid offset by
  0.123 A (13000 pixels), with inverse variances and 1 % masked pixels;
- ``DESI arms``: the three DESI arms on their native 0.8 A grids shifted by
  0.13 A, combined by inverse-variance weighting (`prepare_spectra` of a
  SpectrumList; specutils: the three arms resampled one by one).

(An earlier ``--compare-scratch`` option timed hand-kept scratch buffers and a
private SciPy kernel against plain numpy in one run; they made no measurable
difference and were dropped: the numbers are in `astroclip.inputs.resample`.)

Run ``python benchmarks/bench_resample.py`` (``--help`` for options).  Wall
time is the best of ``--repeats`` runs; CPU time (process time) is shown too,
since the machine may be shared.  Goals of the package: >= 1000x faster than
specutils and >= 5000 spectra/s on a 2-core machine.
"""

import argparse
import os
import time
import warnings

import numpy as np
import astropy.units as u
from astropy.nddata import InverseVariance

from astroclip.inputs import grid
from astroclip.inputs.resample import resample_flux_conserving
from astroclip.inputs.spectra import prepare_spectra

from _common import best_time


def make_batch(n, wave, rng):
    flux = (2.0 + np.sin(wave / 300.0) + rng.normal(0, 0.3, (n, wave.size))).astype(np.float32)
    ivar = rng.uniform(0.5, 4.0, (n, wave.size)).astype(np.float32)
    ivar[rng.random((n, wave.size)) < 0.01] = 0
    return flux, ivar


def specutils_rate(spectra_per_row, n_rows):
    """Spectra per second of specutils on ``n_rows`` rows (a row = list of Spectrum)."""
    from specutils.manipulation import FluxConservingResampler

    resampler = FluxConservingResampler(extrapolation_treatment="zero_fill")
    target = grid.wavelength_grid()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for spec in spectra_per_row(0):              # warm-up
            resampler(spec, target)
        w0 = time.perf_counter()
        for row in range(n_rows):
            for spec in spectra_per_row(row):
                resampler(spec, target)
        wall = time.perf_counter() - w0
    return n_rows / wall


def bench_grid(args, rng, rows, workers):
    """Case 1: a 0.5 A grid, 3500-10000 A."""
    from specutils import Spectrum

    wave = np.arange(3500.0, 10000.0, 0.5) + 0.123
    flux, ivar = make_batch(args.n, wave, rng)

    def one_grid(row):
        return [Spectrum(flux=flux[row] * grid.FLUX_UNIT, spectral_axis=wave * u.AA,
                         uncertainty=InverseVariance(ivar[row]))]
    ref = specutils_rate(one_grid, args.n_specutils)
    for jobs in workers:
        wall, cpu, _ = best_time(lambda: resample_flux_conserving(wave, flux, ivar, workers=jobs),
                                 args.repeats, warmup=True)
        rows.append(("0.5 A grid, resample_flux_conserving", jobs, args.n, wall, cpu, ref))
    fq = flux * grid.FLUX_UNIT
    wq = wave * u.AA
    for jobs in workers:
        wall, cpu, _ = best_time(lambda: prepare_spectra(fq, wavelength=wq, ivar=ivar, workers=jobs,
                                                         on_invalid="flag", progress=False),
                                 args.repeats, warmup=True)
        rows.append(("0.5 A grid, prepare_spectra", jobs, args.n, wall, cpu, ref))
    # f_nu on a frequency axis: unit conversion of flux and uncertainty on the way in
    nu = wq.to(u.Hz, u.spectral())
    f_nu = fq.to(u.Jy, u.spectral_density(wq))
    sigma = np.divide(1.0, np.sqrt(ivar), out=np.full_like(ivar, np.inf), where=ivar > 0)
    sigma_nu = (sigma * grid.FLUX_UNIT).to(u.Jy, u.spectral_density(wq))
    for jobs in workers:
        wall, cpu, _ = best_time(lambda: prepare_spectra(f_nu, wavelength=nu, uncertainty=sigma_nu,
                                                         workers=jobs, on_invalid="flag",
                                                         progress=False), args.repeats, warmup=True)
        rows.append(("Jy on a Hz axis, prepare_spectra", jobs, args.n, wall, cpu, ref))


def bench_arms(args, rng, rows, workers):
    """Case 2: the three DESI arms on their grids shifted by 0.13 A."""
    from specutils import Spectrum, SpectrumList

    arms = []
    for first, last, npix in grid.DESI_ARMS.values():
        w = np.linspace(first, last, npix) + 0.13
        f, iv = make_batch(args.n, w, rng)
        arms.append((w, f, iv))

    def three_arms(row):
        return [Spectrum(flux=f[row] * grid.FLUX_UNIT, spectral_axis=w * u.AA,
                         uncertainty=InverseVariance(iv[row])) for w, f, iv in arms]
    ref = specutils_rate(three_arms, args.n_specutils)
    arm_list = SpectrumList([Spectrum(flux=f * grid.FLUX_UNIT, spectral_axis=w * u.AA,
                                      uncertainty=InverseVariance(iv)) for w, f, iv in arms])
    for jobs in workers:
        wall, cpu, _ = best_time(lambda: prepare_spectra(arm_list, on_invalid="flag", workers=jobs,
                                                         progress=False), args.repeats, warmup=True)
        rows.append(("DESI b+r+z arms, prepare_spectra", jobs, args.n, wall, cpu, ref))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="spectra per batch (astroclip)")
    parser.add_argument("--n-specutils", type=int, default=3,
                        help="spectra timed with specutils (about 1 s each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="thread counts to time astroclip with")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    load_before = os.getloadavg()[0]
    bench_grid(args, rng, rows, args.workers)
    bench_arms(args, rng, rows, args.workers)

    print(f"\nFlux-conserving resampling onto the DESI grid ({grid.N_PIXELS} px), "
          f"{os.cpu_count()} CPU cores, load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print("specutils: FluxConservingResampler, timed on "
          f"{args.n_specutils} spectra (arms case: the 3 arms resampled, not combined)")
    print("astroclip: best wall time of the runs; CPU-time rate = spectra / process time\n")
    head = (f"{'case':38s} {'jobs':>4s} {'N':>5s} {'astroclip/s':>11s} {'CPU-time/s':>10s} "
            f"{'specutils/s':>11s} {'ratio':>7s}")
    print(head)
    print("-" * len(head))
    for name, jobs, n, wall, cpu, ref in rows:
        print(f"{name:38s} {jobs:4d} {n:5d} {n / wall:11.0f} {n / cpu:10.0f} {ref:11.2f} "
              f"{n / wall / ref:6.0f}x")


if __name__ == "__main__":
    main()
