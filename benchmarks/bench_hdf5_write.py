"""Write speed, size and memory of the paired HDF5 training-set file.

Writes ``--rows`` (20,000 by default) DESI-like image-spectrum pairs with
`astroclip.data.paired.PairedDatasetWriter`, appending ``--chunk`` rows at a time,
and prints wall time, rows/s, file size and peak resident memory (which must
stay under 1 GB: the writer never holds the set).  A first table compares the
compression filters on a small sample, as ratios against the uncompressed write
measured in the same run.

Usage::

    python benchmarks/bench_hdf5_write.py [--rows 20000] [--chunk 256] [--dir /tmp]
"""

import argparse
import os
import tempfile
import time

import numpy as np

from astroclip.data.paired import PairedDatasetWriter
from astroclip.inputs import grid

from _common import peak_rss_mb


def make_chunk(rng, start, n):
    """DESI-like spectra (continuum + lines + noise, masked pixels) and LS-like images."""
    wave = grid.WAVELENGTH.astype(np.float32)
    cont = rng.uniform(0.5, 5, (n, 1)).astype(np.float32) * (wave / 6000.0) ** -1
    noise = rng.uniform(0.3, 2, (n, 1)).astype(np.float32)
    flux = cont + noise * rng.standard_normal((n, wave.size), dtype=np.float32)
    ivar = np.broadcast_to(1 / noise**2, flux.shape).astype(np.float32)
    bad = rng.random((n, wave.size)) < 0.01
    flux[bad], ivar[bad] = 0, 0
    size = grid.IMAGE_SIZE
    t = np.arange(size, dtype=np.float32) - size / 2
    r2 = t[None, :] ** 2 + t[:, None] ** 2
    radius = rng.uniform(2, 8, (n, 1, 1, 1)).astype(np.float32)
    amp = rng.uniform(0.1, 2, (n, 3, 1, 1)).astype(np.float32)
    image = amp * np.exp(-0.5 * r2 / radius**2)
    image += 0.01 * rng.standard_normal(image.shape, dtype=np.float32)
    return dict(targetid=np.arange(start, start + n, dtype=np.int64) + 39627000000000000,
                ra=rng.uniform(0, 360, n), dec=rng.uniform(-20, 80, n), flux=flux, ivar=ivar,
                image=image, split=rng.choice(3, n, p=[0.8, 0.1, 0.1]),
                labels={"Z": rng.uniform(0, 0.6, n), "LOG_MSTAR": rng.uniform(8, 12, n)})


def write(path, rows, chunk, seed=0, **options):
    rng = np.random.default_rng(seed)
    gen_time = 0.0
    t0 = time.perf_counter()
    with PairedDatasetWriter(path, overwrite=True, label_names=("Z", "LOG_MSTAR"),
                             **options) as writer:
        for start in range(0, rows, chunk):
            g0 = time.perf_counter()
            data = make_chunk(rng, start, min(chunk, rows - start))
            gen_time += time.perf_counter() - g0
            writer.append(**data)
            del data
    wall = time.perf_counter() - t0
    return wall, wall - gen_time, os.path.getsize(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--sample", type=int, default=1024,
                        help="rows of the compression comparison (0 to skip)")
    parser.add_argument("--reads", type=int, default=500, help="items read back")
    parser.add_argument("--dir", default=None, help="directory of the temporary files")
    args = parser.parse_args()
    raw_per_row = (2 * grid.N_PIXELS + 3 * grid.IMAGE_SIZE**2) * 4 + 8 * 5 + 1
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        if args.sample:
            print(f"Compression filters, {args.sample} rows (write time excludes data "
                  "generation; ratio = time / uncompressed time)")
            print(f"{'filter':>10} {'write s':>8} {'ratio':>6} {'MB/row':>7} {'size/raw':>8}")
            base = None
            for name, opts in [
                    ("none", dict(compression=None)),
                    ("default", dict()),  # lzf spectra and columns, raw images
                    ("lzf", dict(compression="lzf", image_compression="lzf")),
                    ("gzip-1", dict(compression="gzip", compression_opts=1,
                                    image_compression="gzip")),
                    ("gzip-4", dict(compression="gzip", compression_opts=4,
                                    image_compression="gzip"))]:
                _, t, size = write(os.path.join(tmp, f"{name}.h5"), args.sample, args.chunk,
                                   **opts)
                base = base or t
                print(f"{name:>10} {t:8.2f} {t / base:6.2f} {size / args.sample / 1e6:7.3f} "
                      f"{size / (raw_per_row * args.sample):8.3f}")
                os.remove(os.path.join(tmp, f"{name}.h5"))
            print()
        path = os.path.join(tmp, "pairs.h5")
        rss0 = peak_rss_mb()
        wall, write_time, size = write(path, args.rows, args.chunk)
        print(f"Default writer (lzf spectra in 4-row chunks, raw 1-row image chunks), "
              f"{args.rows} pairs appended {args.chunk} at a time")
        print("(wall includes generating the random data; write excludes it)")
        print(f"{'wall s':>8} {'rows/s':>8} {'write s':>8} {'write rows/s':>12} "
              f"{'write MB/s':>10} {'file GB':>8} {'raw GB':>7} {'peak RSS MB':>11}")
        print(f"{wall:8.1f} {args.rows / wall:8.0f} {write_time:8.1f} "
              f"{args.rows / write_time:12.0f} {raw_per_row * args.rows / write_time / 1e6:10.0f} "
              f"{size / 1e9:8.2f} {raw_per_row * args.rows / 1e9:7.2f} {peak_rss_mb():11.0f}")
        print(f"(peak RSS before the {args.rows} write: {rss0:.0f} MB; limit 1024 MB: "
              f"{'OK' if peak_rss_mb() < 1024 else 'EXCEEDED'})")
        print()
        from astroclip.data.datasets import PairedDataset
        data = PairedDataset(path)
        rng = np.random.default_rng(1)
        order = rng.permutation(len(data))[:args.reads]
        data[0]
        t0 = time.perf_counter()
        for i in order:
            data[int(i)]
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(args.reads):
            data[i]
        ds = time.perf_counter() - t0
        print(f"PairedDataset items/s (one process): random {args.reads / dt:.0f}, "
              f"sequential {args.reads / ds:.0f}")
        data.close()


if __name__ == "__main__":
    main()
