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

Run: ``python benchmarks/bench_search.py`` (``--quick`` for a 100,000-row smoke run).
Timings depend on the machine and its load; ratios measured in the same run are the
meaningful numbers.
"""

import argparse
import os
import platform
import time

import faiss
import numpy as np

from astroclip.evaluation import knn_regression
from astroclip.search import SimilarityIndex


def best_time(fn, repeat=3):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def matmul_rate(n=2048, repeat=5):
    """Best fp32 GFLOP/s of an n x n x n numpy matmul."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up
    t, _ = best_time(lambda: a @ b, repeat)
    return 2 * n ** 3 / t / 1e9


def make_data(n, nq, d, seed=0, latent_dim=8, hidden=256):
    """Continuous, manifold-like embeddings (as real ones are): a random
    two-layer tanh map of an 8-d Gaussian latent space into d dimensions, plus
    noise, L2-normalised.  Queries are drawn from the same distribution."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((latent_dim, hidden), dtype=np.float32)
    w2 = rng.standard_normal((hidden, d), dtype=np.float32) / np.sqrt(hidden)

    def draw(m):
        latent = rng.standard_normal((m, latent_dim), dtype=np.float32)
        x = np.tanh(latent @ w1) @ w2 + 0.1 * rng.standard_normal((m, d), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000-row smoke run")
    parser.add_argument("--n", type=int, default=None, help="database rows")
    args = parser.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    nq, d, k = 1000, 128, 10

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), numpy "
          f"{np.__version__}")
    peak = matmul_rate()
    print(f"measured fp32 matmul rate (2048^3, numpy): {peak:.1f} GFLOP/s\n")

    t0 = time.perf_counter()
    db, q = make_data(n, nq, d)
    print(f"data: {n:,} x {d} database, {nq:,} queries, top-{k} "
          f"(made in {time.perf_counter() - t0:.1f} s)")
    flops = 2.0 * nq * n * d

    rows = []
    t_np, (s_np, i_np) = best_time(lambda: numpy_topk(db, q, k), repeat=2)
    rows.append(("numpy brute force (matmul+argpartition)", t_np))

    flat = faiss.IndexFlatIP(d)
    t_add, _ = best_time(lambda: (flat.reset(), flat.add(db)), repeat=1)
    t_fl, (s_fl, i_fl) = best_time(lambda: flat.search(q, k), repeat=3)
    rows.append(("faiss IndexFlatIP", t_fl))

    t_build, index = best_time(lambda: SimilarityIndex(db, progress=False), repeat=1)
    t_ix, table = best_time(lambda: index.search(q, k=k, progress=False), repeat=3)
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
    t_ivf_build, ivf = best_time(lambda: SimilarityIndex(db, kind="ivf", nlist=nlist,
                                                         progress=False), repeat=1)
    print(f"build (train + add): {t_ivf_build:.2f} s")
    print(f"{'nprobe':>6s} {'time (s)':>9s} {'vs flat':>8s} {'vs numpy':>9s} {'recall@10':>9s}")
    for nprobe in (1, 4, 16, 31, 64):
        ivf.nprobe = nprobe
        t_iv, (_, i_iv) = best_time(lambda: ivf.search_arrays(q, k=k, progress=False), 3)
        print(f"{nprobe:6d} {t_iv:9.3f} {t_fl / t_iv:7.2f}x {t_np / t_iv:8.2f}x "
              f"{recall_at_k(i_iv, i_fl):9.4f}")

    index = ivf = flat = None  # free memory before the k-NN part
    nte = 2000
    rng = np.random.default_rng(1)
    y = db[:, 0] * 3 + db[:, 1] ** 2
    noise = rng.standard_normal((nte, d), dtype=np.float32)
    xte = db[rng.choice(n, nte, replace=False)] + 0.01 * noise
    t_knn, _ = best_time(lambda: knn_regression(db, y, xte, k=64, progress=False), repeat=1)
    knn_flops = 2.0 * nte * n * d
    print(f"\nknn_regression(k=64): {n:,} training x {nte:,} test objects in {t_knn:.2f} s "
          f"({nte / t_knn:,.0f} predictions/s; {knn_flops / t_knn / 1e9:.1f} GFLOP/s = "
          f"{knn_flops / t_knn / 1e9 / peak:.1%} of peak, incl. standardisation and indexing)")


if __name__ == "__main__":
    main()
