"""Speed of the mock-survey simulator: galaxies per second per core, by stage.

Generates ``--n`` galaxies (152 x 152 images and DESI spectra, the default survey)
in one process, in chunks of ``--chunk``, once per stellar continuum of
``--continuum`` (by default the kcorrect templates alone, then the high-resolution
BC03 + MILES continuum: what the new continuum costs, measured in the same run),
and prints the CPU time of each stage per galaxy and the throughput in galaxies
per second per core (CPU time, so that other jobs sharing the machine inflate it
less than wall time), against the target of 250 galaxies/s per core.  A second
table writes a file with `astroclip.simulate_survey` (HDF5 writing included) with
1 and ``--workers`` processes, in wall time (last continuum).

Usage::

    python benchmarks/bench_simulate.py [--n 1024] [--chunk 64] [--workers 2]
                                        [--continuum kcorrect,ssp] [--skip-file]
"""

import argparse
import os
import tempfile
import time

from astroclip.simulate.population import population_model
from astroclip.simulate.survey import SurveyConfig, _generate, simulate_survey

TARGET = 250.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--continuum", default="kcorrect,ssp",
                        help="comma-separated stellar continua to time (kcorrect, ssp)")
    parser.add_argument("--skip-file", action="store_true", help="skip the file-writing table")
    args = parser.parse_args(argv)

    rates = {}
    for continuum in args.continuum.split(","):
        rates[continuum] = _stages(args, continuum)
    if len(rates) > 1:
        names = list(rates)
        print("\n" + ", ".join(f"{k}: {v:.0f}/s" for k, v in rates.items())
              + f"; {names[-1]} / {names[0]} = {rates[names[-1]] / rates[names[0]]:.2f}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"(load average {load:.1f} on {os.cpu_count()} cores: a shared machine slows both)")

    if args.skip_file:
        return
    print(f"\nsimulate_survey to HDF5 ({args.n} galaxies)")
    print(f"{'workers':>8} {'wall s':>8} {'galaxies/s':>11} {'speed-up':>9}")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, args.workers}):
            path = os.path.join(tmp, f"mock{workers}.h5")
            t = time.perf_counter()
            simulate_survey(args.n, out=path, workers=workers, chunk_size=args.chunk,
                            progress=False, continuum=continuum)
            dt = time.perf_counter() - t
            base = base or dt
            print(f"{workers:>8} {dt:>8.1f} {args.n / dt:>11.0f} {base / dt:>9.2f}")


def _stages(args, continuum):
    """Time the stages for one continuum; return galaxies/s per core."""
    t0 = time.perf_counter()
    population_model()
    config = SurveyConfig(continuum=continuum)
    _generate(config, 0, 8)                       # warm the caches (LSF, noise model, tables)
    print(f"\n[{continuum}] set-up (population fit, calibrations, templates): "
          f"{time.perf_counter() - t0:.1f} s wall")
    timings = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for start in range(0, args.n, args.chunk):
        _generate(config, start, min(start + args.chunk, args.n), timings=timings)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    print(f"{args.n} galaxies, 152x152 g/r/z images + DESI spectra, chunks of {args.chunk}, "
          f"1 process, continuum {continuum!r}")
    print(f"{'stage':<28} {'ms/galaxy (CPU)':>16} {'share':>7}")
    for stage, seconds in timings.items():
        print(f"{stage:<28} {1e3 * seconds / args.n:>16.3f} {seconds / cpu:>7.1%}")
    print(f"{'total':<28} {1e3 * cpu / args.n:>16.3f} {1:>7.0%}")
    rate = args.n / cpu
    print(f"throughput: {rate:.0f} galaxies/s per core (CPU time), {args.n / wall:.0f} "
          f"galaxies/s wall; {rate / TARGET:.2f} x the target of {TARGET:.0f}/s per core")
    return rate


if __name__ == "__main__":
    main()
