"""Flux-conserving resampling onto the DESI grid: astroclip vs specutils.

Times, on the same DESI-like input, astroclip's vectorised resampler
(`astroclip.inputs.spectra.resample_flux_conserving`, one sparse overlap matrix
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
from astroclip.inputs.spectra import prepare_spectra, resample_flux_conserving


def best_time(fn, repeats):
    """(best wall seconds, CPU seconds of that run) over ``repeats`` calls."""
    best = (np.inf, np.inf)
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if wall < best[0]:
            best = (wall, cpu)
    return best


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="spectra per batch (astroclip)")
    parser.add_argument("--n-specutils", type=int, default=3,
                        help="spectra timed with specutils (about 1 s each)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []

    # --- case 1: a 0.5 A grid
    wave = np.arange(3500.0, 10000.0, 0.5) + 0.123
    flux, ivar = make_batch(args.n, wave, rng)
    resample_flux_conserving(wave, flux[:8], ivar[:8])      # builds and caches the matrix
    wall, cpu = best_time(lambda: resample_flux_conserving(wave, flux, ivar), args.repeats)
    from specutils import Spectrum

    def one_grid(row):
        return [Spectrum(flux=flux[row] * grid.FLUX_UNIT, spectral_axis=wave * u.AA,
                         uncertainty=InverseVariance(ivar[row]))]
    ref = specutils_rate(one_grid, args.n_specutils)
    rows.append(("0.5 A grid, resample_flux_conserving", args.n, wall, cpu, ref))

    fq = flux * grid.FLUX_UNIT
    wq = wave * u.AA
    wall, cpu = best_time(lambda: prepare_spectra(fq, wavelength=wq, ivar=ivar,
                                                  on_invalid="flag", progress=False),
                          args.repeats)
    rows.append(("0.5 A grid, prepare_spectra", args.n, wall, cpu, ref))

    # f_nu on a frequency axis: unit conversion on the way in
    nu = wq.to(u.Hz, u.spectral())
    f_nu = fq.to(u.Jy, u.spectral_density(wq))
    sigma_nu = np.divide(1.0, np.sqrt(ivar), out=np.full_like(ivar, np.inf), where=ivar > 0)
    sigma_nu = (sigma_nu * grid.FLUX_UNIT).to(u.Jy, u.spectral_density(wq))
    wall, cpu = best_time(lambda: prepare_spectra(f_nu, wavelength=nu, uncertainty=sigma_nu,
                                                  on_invalid="flag", progress=False),
                          args.repeats)
    rows.append(("Jy on a Hz axis, prepare_spectra", args.n, wall, cpu, ref))
    del flux, ivar, fq, f_nu, sigma_nu

    # --- case 2: the three DESI arms, shifted
    from specutils import SpectrumList

    arms = []
    for first, last, npix in grid.DESI_ARMS.values():
        w = np.linspace(first, last, npix) + 0.13
        f, iv = make_batch(args.n, w, rng)
        arms.append((w, f, iv))
    arm_list = SpectrumList([Spectrum(flux=f * grid.FLUX_UNIT, spectral_axis=w * u.AA,
                                      uncertainty=InverseVariance(iv)) for w, f, iv in arms])
    wall, cpu = best_time(lambda: prepare_spectra(arm_list, on_invalid="flag", progress=False),
                          args.repeats)

    def three_arms(row):
        return [Spectrum(flux=f[row] * grid.FLUX_UNIT, spectral_axis=w * u.AA,
                         uncertainty=InverseVariance(iv[row])) for w, f, iv in arms]
    ref_arms = specutils_rate(three_arms, args.n_specutils)
    rows.append(("DESI b+r+z arms, prepare_spectra", args.n, wall, cpu, ref_arms))

    print(f"\nFlux-conserving resampling onto the DESI grid ({grid.N_PIXELS} px), "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print("specutils: FluxConservingResampler, timed on "
          f"{args.n_specutils} spectra (arms case: resampling only, no combination)\n")
    head = (f"{'case':40s} {'N':>6s} {'astroclip/s':>12s} {'(CPU-time)/s':>13s} "
            f"{'specutils/s':>12s} {'ratio':>8s}")
    print(head)
    print("-" * len(head))
    for name, n, wall, cpu, ref in rows:
        print(f"{name:40s} {n:6d} {n / wall:12.0f} {n / cpu:13.0f} {ref:12.2f} "
              f"{n / wall / ref:7.0f}x")


if __name__ == "__main__":
    main()
