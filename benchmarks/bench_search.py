"""Similarity search and k-NN regression at survey scale: FAISS against brute-force numpy.

Database: 1,000,000 x 128 float32 embeddings (continuous, L2-normalised), 1,000
queries, top-10 by cosine similarity.  Prints:

- the machine's measured fp32 matmul rate (numpy/BLAS, best of a few square
  products) - the yardstick;
- brute-force numpy (chunked matmul + argpartition) and FAISS flat
  (`faiss.IndexFlatIP`, and through `astroclip.search.SimilarityIndex.search`
  which also builds the result Table): times, speed ratio, and the fraction of
  the measured matmul rate each achieves (counting the 2 Q N D flops of the
  similarity matrix);
- IVF (`faiss.IndexIVFFlat`): build time, search time and recall@10 against the
  exact result, for a few ``nprobe``;
- `astroclip.evaluation.knn_regression` (k = 64) on 1,000,000 training objects.

With ``--ivfpq`` it measures the survey-scale option instead (issue 17):
`SimilarityIndex` ``kind="ivfpq"`` (`faiss.IndexIVFPQ`, by default ``m`` = 32
codes of 8 bits = 32 bytes per 128-d vector (``--m``, ``--nbits``), ``nlist`` =
1024, trained on 64 * nlist = 65,536 vectors)
against the exact search: build time (train + add), query time and recall@10
for several ``nprobe``, memory per vector (the index's own count of code and
id bytes, the process' resident-memory growth, the saved file) and the same
search on the saved index memory-mapped (``load(mmap=True)``).  ``--stream``
generates the database chunk by chunk and never holds it (exact neighbours by
chunked flat search), for 10M x 128::

    python benchmarks/bench_search.py --ivfpq --n 1000000
    python benchmarks/bench_search.py --ivfpq --n 10000000 --stream --nlist 4096 --queries 200

Run: ``python benchmarks/bench_search.py`` (``--quick`` for a 100,000-row smoke run).
Timings depend on the machine and its load; ratios measured in the same run are the
meaningful numbers.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import faiss
import numpy as np

from astroclip.evaluation import knn_regression
from astroclip.search import SimilarityIndex

from _common import best_time, matmul_rate


def data_sampler(d, seed=0, latent_dim=8, hidden=256):
    """``draw(m)``: m continuous, manifold-like embeddings (as real ones are): a
    random two-layer tanh map of an 8-d Gaussian latent space into d
    dimensions, plus noise, L2-normalised."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((latent_dim, hidden), dtype=np.float32)
    w2 = rng.standard_normal((hidden, d), dtype=np.float32) / np.sqrt(hidden)

    def draw(m):
        latent = rng.standard_normal((m, latent_dim), dtype=np.float32)
        x = np.tanh(latent @ w1) @ w2 + 0.1 * rng.standard_normal((m, d), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return draw


def make_data(n, nq, d, seed=0, latent_dim=8, hidden=256):
    """A database of n and nq queries from `data_sampler`."""
    draw = data_sampler(d, seed, latent_dim, hidden)
    db = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 200_000):
        db[s:s + 200_000] = draw(min(200_000, n - s))
    return db, draw(nq).astype(np.float32)


def numpy_topk(db, q, k, chunk=131072):
    """Exact top-k inner products: chunked matmul, argpartition, merge."""
    nq = q.shape[0]
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_i = np.zeros((nq, k), dtype=np.int64)
    for s in range(0, db.shape[0], chunk):
        sims = q @ db[s:s + chunk].T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, part + s], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, top, axis=1)
        best_i = np.take_along_axis(cand_i, top, axis=1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)


def recall_at_k(found, exact):
    return float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact)]))


def rss_mb():
    """Resident memory of this process (MB, Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def ivfpq(args):
    """The survey-scale table: IVF-PQ (and its memory-mapped load) against exact search."""
    import tempfile

    n, d, k, nq = args.n or 1_000_000, 128, 10, args.queries
    nlist, m, nbits = args.nlist, args.m, args.nbits
    chunk = 250_000
    draw = data_sampler(d)
    print(f"IVF-PQ at scale: {n:,} x {d}, {nq} queries, top-{k}; faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} thread(s), {faiss.get_num_gpus()} GPU(s), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    q = draw(nq)
    train = draw(min(n, 64 * nlist))
    rss0 = rss_mb()
    t0 = time.perf_counter()
    index = SimilarityIndex(dim=d, kind="ivfpq", nlist=nlist, m=m, nbits=nbits, progress=False)
    index.train(train)
    t_train = time.perf_counter() - t0
    exact_s = np.full((nq, k), -np.inf, np.float32)
    exact_i = np.zeros((nq, k), np.int64)
    held = [] if not args.stream else None
    t_add = t_exact = 0.0
    for start in range(0, n, chunk):
        x = draw(min(chunk, n - start))  # the training sample is a separate draw
        t1 = time.perf_counter()
        index.add(x)
        t_add += time.perf_counter() - t1
        t1 = time.perf_counter()
        flat = faiss.IndexFlatIP(d)
        flat.add(x)
        s_c, i_c = flat.search(q, k)
        cand_s = np.concatenate([exact_s, s_c], axis=1)
        cand_i = np.concatenate([exact_i, i_c + start], axis=1)
        top = np.argsort(-cand_s, axis=1)[:, :k]
        exact_s = np.take_along_axis(cand_s, top, axis=1)
        exact_i = np.take_along_axis(cand_i, top, axis=1)
        t_exact += time.perf_counter() - t1
        if held is not None:
            held.append(x)
    rss_built = rss_mb()
    inv = faiss.downcast_index(faiss.extract_index_ivf(index._store("spectrum").index))
    code = inv.code_size
    print(f"build: train {t_train:.1f} s on {len(train):,} vectors, add {t_add:.1f} s "
          f"({n / t_add:,.0f} vectors/s); exact search by chunks {t_exact:.1f} s")
    print(f"memory per vector: {code} B code (m*nbits/8 = {m}*{nbits}/8) + 8 B inverted-list id "
          f"+ 8 B astroclip id = {code + 16} B, i.e. {(code + 16) * n / 1e6:,.0f} MB for {n:,} "
          f"(float32 flat: {4 * d} B/vector, {4 * d * n / 1e6:,.0f} MB); resident memory growth "
          f"while building {rss_built - rss0:,.0f} MB"
          + ("" if held is None else " (includes the database kept for reference)"))
    held = None
    folder = Path(tempfile.mkdtemp(prefix="bench-ivfpq-")) / "index"
    t1 = time.perf_counter()
    index.save(folder)
    t_save = time.perf_counter() - t1
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"saved in {t_save:.1f} s: {size / 1e6:,.0f} MB on disk ({size / n:.1f} B/vector)")
    rows = []
    for nprobe in (8, 16, 32, 64):
        index.nprobe = nprobe
        t, _, (_, found) = best_time(lambda: index.search_arrays(q, k=k, progress=False), 2)
        rows.append((f"in memory, nprobe={nprobe}", t, recall_at_k(found, exact_i)))
    index = None
    rss_before = rss_mb()
    mapped = SimilarityIndex.load(folder, mmap=True)
    rss_load = rss_mb() - rss_before
    for nprobe in (16, 64):
        mapped.nprobe = nprobe
        t, _, (_, found) = best_time(lambda: mapped.search_arrays(q, k=k, progress=False), 2)
        rows.append((f"memory-mapped, nprobe={nprobe}", t, recall_at_k(found, exact_i)))
    print(f"memory-mapped load: resident memory +{rss_load:,.0f} MB before searching")
    print(f"\n{'IVF-PQ search':30s} {'time (s)':>9s} {'ms/query':>9s} {'recall@10':>9s}")
    for name, t, rec in rows:
        print(f"{name:30s} {t:9.3f} {1000 * t / nq:9.2f} {rec:9.4f}")
    print(f"exact search (faiss flat, by chunks): {t_exact:.2f} s for {nq} queries "
          f"({1000 * t_exact / nq:.2f} ms/query)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000-row smoke run")
    parser.add_argument("--n", type=int, default=None, help="database rows")
    parser.add_argument("--ivfpq", action="store_true",
                        help="only the survey-scale IVF-PQ table (issue 17)")
    parser.add_argument("--stream", action="store_true",
                        help="with --ivfpq: never hold the database (10M rows)")
    parser.add_argument("--nlist", type=int, default=1024, help="with --ivfpq: clusters")
    parser.add_argument("--queries", type=int, default=1000, help="with --ivfpq: queries")
    parser.add_argument("--m", type=int, default=32, help="with --ivfpq: sub-quantisers")
    parser.add_argument("--nbits", type=int, default=8, help="with --ivfpq: bits per code")
    parser.add_argument("--threads", type=int, default=None, help="FAISS threads")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    if args.ivfpq:
        return ivfpq(args)
    n = args.n or (100_000 if args.quick else 1_000_000)
    nq, d, k = 1000, 128, 10

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), numpy "
          f"{np.__version__}")
    peak = matmul_rate(library="numpy") / 1e9
    print(f"measured fp32 matmul rate (2048^3, numpy): {peak:.1f} GFLOP/s\n")

    t0 = time.perf_counter()
    db, q = make_data(n, nq, d)
    print(f"data: {n:,} x {d} database, {nq:,} queries, top-{k} "
          f"(made in {time.perf_counter() - t0:.1f} s)")
    flops = 2.0 * nq * n * d

    rows = []
    t_np, _, (s_np, i_np) = best_time(lambda: numpy_topk(db, q, k), repeats=2)
    rows.append(("numpy brute force (matmul+argpartition)", t_np))

    flat = faiss.IndexFlatIP(d)
    t_add, _, _ = best_time(lambda: (flat.reset(), flat.add(db)), repeats=1)
    t_fl, _, (s_fl, i_fl) = best_time(lambda: flat.search(q, k), repeats=3)
    rows.append(("faiss IndexFlatIP", t_fl))

    t_build, _, index = best_time(lambda: SimilarityIndex(db, progress=False), repeats=1)
    t_ix, _, table = best_time(lambda: index.search(q, k=k, progress=False), repeats=3)
    rows.append(("SimilarityIndex.search (flat, -> Table)", t_ix))

    agree = np.mean(i_fl == i_np)
    agree_tab = np.mean(np.asarray(table["neighbour_index"]).reshape(nq, k) == i_np)
    print(f"\nexact search (build: faiss add {t_add:.2f} s, SimilarityIndex {t_build:.2f} s "
          "incl. validation and normalisation)")
    print(f"{'method':42s} {'time (s)':>9s} {'vs numpy':>9s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for name, t in rows:
        print(f"{name:42s} {t:9.3f} {t_np / t:8.2f}x {flops / t / 1e9:8.1f} "
              f"{flops / t / 1e9 / peak:7.1%}")
    print(f"identical neighbours faiss vs numpy: {agree:.4%}, SimilarityIndex vs numpy: "
          f"{agree_tab:.4%}; max |similarity difference| "
          f"{np.abs(s_fl - s_np).max():.2e}")

    nlist = int(round(np.sqrt(n)))
    print(f"\nIVF (nlist={nlist}, trained on {min(n, 64 * nlist):,} vectors)")
    t_ivf_build, _, ivf = best_time(
        lambda: SimilarityIndex(db, kind="ivf", nlist=nlist, progress=False), repeats=1)
    print(f"build (train + add): {t_ivf_build:.2f} s")
    print(f"{'nprobe':>6s} {'time (s)':>9s} {'vs flat':>8s} {'vs numpy':>9s} {'recall@10':>9s}")
    for nprobe in (1, 4, 16, 31, 64):
        ivf.nprobe = nprobe
        t_iv, _, (_, i_iv) = best_time(lambda: ivf.search_arrays(q, k=k, progress=False), 3)
        print(f"{nprobe:6d} {t_iv:9.3f} {t_fl / t_iv:7.2f}x {t_np / t_iv:8.2f}x "
              f"{recall_at_k(i_iv, i_fl):9.4f}")

    index = ivf = flat = None  # free memory before the k-NN part
    nte = 2000
    rng = np.random.default_rng(1)
    y = db[:, 0] * 3 + db[:, 1] ** 2
    noise = rng.standard_normal((nte, d), dtype=np.float32)
    xte = db[rng.choice(n, nte, replace=False)] + 0.01 * noise
    t_knn, _, _ = best_time(lambda: knn_regression(db, y, xte, k=64, progress=False), repeats=1)
    knn_flops = 2.0 * nte * n * d
    print(f"\nknn_regression(k=64): {n:,} training x {nte:,} test objects in {t_knn:.2f} s "
          f"({nte / t_knn:,.0f} predictions/s; {knn_flops / t_knn / 1e9:.1f} GFLOP/s = "
          f"{knn_flops / t_knn / 1e9 / peak:.1%} of peak, incl. standardisation and indexing)")


if __name__ == "__main__":
    main()
