"""Survey-scale embedding: throughput per process, shard merge cost, DESI DR1 projection.

Prints (issue 17):

- the spectrum transformer at the released size (``paper`` / ``released``
  preset: 6 layers, width 768, 778 tokens; random weights, the speed does not
  depend on them): its FLOPs per spectrum (counted as in
  ``bench_spectrum_encoder.py``), the model-only inference rate of one process
  (spectra/s, batch ``--batch``, torch threads 1 and all) and the end-to-end
  rate of `astroclip.embed_catalog` over the real DESI coadd files shipped by
  specutils and fastspecfit (reading FITS, resampling to the DESI grid,
  embedding, writing chunks and the output);
- the cost of `astroclip.data.embeddings.merge_embeddings`: ``--shards`` shard
  files of ``--rows`` x ``--dim`` float32 embeddings joined into one HDF5 file
  (rows/s and MB/s, all checks included);
- the projected wall time of DESI DR1 (18 million spectra): one CPU process at
  the measured rate, and GPUs as an ESTIMATE FROM FLOPS (no GPU measured here):
  18e6 x FLOPs per spectrum / (assumed fraction x dense bf16 peak).

Usage: ``python benchmarks/bench_survey_scale.py [--batch 8] [--rows 200000]``.
Numbers depend on the machine and its load (printed); the 2-core machine of the
project is shared, so its rates are lower bounds.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_time  # noqa: E402
from bench_spectrum_encoder import encoder_flops  # noqa: E402

from astroclip import api  # noqa: E402
from astroclip.data.embeddings import merge_embeddings, shard_meta, write_embeddings  # noqa
from astroclip.models.presets import get_preset  # noqa: E402
from astroclip.models.spectrum import SpectrumEncoder  # noqa: E402
from astroclip.models.weights import save_model  # noqa: E402

DR1_SPECTRA = 18_000_000
#: Dense bf16 peak of one GPU (NVIDIA data sheets, without sparsity), TFLOP/s.
GPU_PEAK_TFLOPS = {"A100": 312, "H100 SXM": 989, "H200": 989}
#: Assumed fraction of the peak that a 6-layer, 778-token transformer reaches
#: in bf16 inference (an assumption, not a measurement).
ASSUMED_FRACTION = 0.4


def shipped_coadds():
    import fastspecfit
    import specutils

    from astroclip.inputs.desi import desi_coadd_paths
    return desi_coadd_paths([
        os.path.join(os.path.dirname(specutils.__file__), "io", "default_loaders", "tests",
                     "desi_test_data"),
        os.path.join(os.path.dirname(fastspecfit.__file__), "test", "data")])


def model_rate(model, batch, threads, repeats=2):
    torch.set_num_threads(threads)
    flux = 1 + torch.rand(batch, model.n_pixels)
    with torch.inference_mode():
        model.encode_spectrum(flux[:1])
        best, _, _ = best_time(lambda: model.encode_spectrum(flux), repeats)
    return batch / best


def merge_cost(rows, dim, shards, folder):
    made_by = {"model": {"weights_sha256": "0" * 64, "config_sha256": "1" * 64},
               "modalities": ["spectrum"], "chunk_size": 4096,
               "n_chunks": -(-rows // 4096), "input": {"kind": "memory", "rows": rows},
               "options": {}}
    rng = np.random.default_rng(0)
    n_chunks = made_by["n_chunks"]
    paths = []
    for i in range(shards):
        lo, hi = i * n_chunks // shards, (i + 1) * n_chunks // shards
        first, stop = lo * 4096, min(hi * 4096, rows)
        ids = np.arange(first, stop)
        chunk = ids // 4096
        paths.append(write_embeddings(
            folder / f"shard-{i}.h5", ids,
            {"spectrum": rng.standard_normal((stop - first, dim), dtype=np.float32)},
            valid=np.ones(stop - first, bool), problem=np.full(stop - first, ""),
            meta={"model": "bench", "weights_sha256": "0" * 64, "modality": "spectrum",
                  **shard_meta(made_by, (i, shards), input_rows=rows)}, chunk=chunk))
    t = time.perf_counter()
    merge_embeddings(paths, folder / "merged.h5")
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the merge test")
    parser.add_argument("--dim", type=int, default=1024, help="embedding width (released: 1024)")
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cores = os.cpu_count()
    print(f"machine: {cores} CPUs, load average {os.getloadavg()[0]:.1f}, torch "
          f"{torch.__version__}")
    torch.manual_seed(0)
    model = SpectrumEncoder(**get_preset("spectrum", "paper")).eval()
    flops = encoder_flops(model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"spectrum transformer (paper/released size, {params:.1f} M parameters): "
          f"{flops / 1e9:.1f} GFLOP per spectrum")
    rows = []
    for threads in sorted({1, cores}):
        rate = model_rate(model, args.batch, threads)
        rows.append((f"model only, batch {args.batch}, {threads} thread(s)", rate))
    torch.set_num_threads(cores)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = save_model(model, tmp / "paper")
        files = shipped_coadds()
        api.embed_catalog(files[-1:], out=tmp / "warm.h5", model=folder, modality="spectrum",
                          progress=False)  # loads and caches the model
        t = time.perf_counter()
        out = api.embed_catalog(files, out=tmp / "desi.h5", model=folder, modality="spectrum",
                                batch_size=args.batch, progress=False)
        elapsed = time.perf_counter() - t
        import h5py
        with h5py.File(out) as f:
            n = len(f["targetid"])
        rows.append((f"embed_catalog over {len(files)} DESI coadd files ({n} spectra), "
                     f"{cores} threads", n / elapsed))
        print(f"\n{'one process':64s} {'spectra/s':>10s} {'GFLOP/s':>8s} {'DR1 (days)':>10s}")
        for name, rate in rows:
            print(f"{name:64s} {rate:10.2f} {rate * flops / 1e9:8.1f} "
                  f"{DR1_SPECTRA / rate / 86400:10.1f}")
        t_merge = merge_cost(args.rows, args.dim, args.shards, tmp)
        size = args.rows * args.dim * 4
        print(f"\nmerge_embeddings: {args.shards} shards, {args.rows:,} x {args.dim} float32 "
              f"({size / 1e6:,.0f} MB) in {t_merge:.2f} s = {args.rows / t_merge:,.0f} rows/s, "
              f"{size / 1e6 / t_merge:,.0f} MB/s; DR1 ({DR1_SPECTRA / 1e6:.0f} M rows, "
              f"{DR1_SPECTRA * args.dim * 4 / 1e9:,.0f} GB) ~ "
              f"{DR1_SPECTRA / (args.rows / t_merge) / 60:,.0f} min at this rate")
    total = DR1_SPECTRA * flops
    print(f"\nDESI DR1 projection, {DR1_SPECTRA / 1e6:.0f} M spectra x {flops / 1e9:.1f} GFLOP = "
          f"{total / 1e18:.2f} EFLOP.  GPU rows are ESTIMATES FROM FLOPS (not measured): "
          f"{ASSUMED_FRACTION:.0%} of the dense bf16 peak assumed")
    for gpu, peak in GPU_PEAK_TFLOPS.items():
        seconds = total / (ASSUMED_FRACTION * peak * 1e12)
        print(f"  {gpu:10s} ({peak} TFLOP/s): 1 GPU {seconds / 3600:5.1f} h, 8 GPUs "
              f"{seconds / 8 / 60:5.1f} min, 4 nodes x 8 GPUs {seconds / 32 / 60:5.1f} min")


if __name__ == "__main__":
    main()
