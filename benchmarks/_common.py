"""Timing helpers shared by the benchmark scripts.

The scripts are run from the repository root (``python benchmarks/bench_x.py``):
Python then puts their folder first on ``sys.path``, so ``import _common`` finds
this module.  Everything here measures; nothing here prints except
`print_table`.

The machines these run on are shared and noisy, so speeds are reported as
ratios measured in one run: against a baseline timed in the same run, or
against this machine's measured matmul rate (`matmul_rate`, `paired_rates`).
"""

import resource
import time

import numpy as np

__all__ = ["sync", "timed", "best_time", "matmul_fn", "matmul_rate", "paired_rates",
           "peak_rss_mb", "print_table"]


def sync(device):
    """Wait for the queued work of ``device`` (a `torch.device`, or None: nothing to wait for)."""
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch
        torch.cuda.synchronize(device)


def timed(fn, device=None):
    """Wall seconds of one call of ``fn()``, with ``device`` synchronised before and after."""
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def best_time(fn, repeats=3, *, warmup=False, device=None):
    """Best of ``repeats`` calls of ``fn()``.

    Parameters
    ----------
    fn : callable
        Called without arguments.
    repeats : int
        Timed calls.
    warmup : bool
        One untimed call first (the first large allocations of a process are slow:
        pages are mapped and zeroed, in a virtual machine by the host).
    device : torch.device, optional
        Synchronised around each call (CUDA work is asynchronous).

    Returns
    -------
    wall, cpu : float
        Wall seconds of the fastest call, and the process CPU seconds of that call
        (CPU time shows how much of the wall time the machine's load took).
    result
        What the fastest call returned.
    """
    if warmup:
        fn()
    best = (np.inf, np.inf, None)
    for _ in range(repeats):
        sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        sync(device)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if wall < best[0]:
            best = (wall, cpu, out)
    return best


def matmul_fn(device=None, dtype=None, *, size=None, library="torch"):
    """A square-matmul workload and its FLOP count (2 per multiply-add).

    ``library`` is ``"torch"`` (on ``device``, default CPU, ``dtype`` default float32)
    or ``"numpy"`` (float32, the BLAS that numpy links).  The default size is 2048 on
    a CPU and 8192 on a GPU, repeated 4 (CPU) or 20 (GPU) times per call.
    """
    if library == "numpy":
        size = size or 2048
        rng = np.random.default_rng(0)
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        inner = 4

        def run():
            for _ in range(inner):
                a @ b
    elif library == "torch":
        import torch
        device = torch.device("cpu") if device is None else torch.device(device)
        dtype = torch.float32 if dtype is None else dtype
        size = size or (2048 if device.type == "cpu" else 8192)
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        inner = 4 if device.type == "cpu" else 20

        def run():
            for _ in range(inner):
                torch.mm(a, b)
    else:
        raise ValueError(f"library must be 'torch' or 'numpy', not {library!r}")
    return run, inner * 2 * size ** 3


def matmul_rate(device=None, dtype=None, *, size=None, library="torch", repeats=3):
    """This machine's best square-matmul rate (FLOP/s) over ``repeats`` timed calls."""
    run, flops = matmul_fn(device, dtype, size=size, library=library)
    dev = None
    if library == "torch":
        import torch
        dev = torch.device("cpu") if device is None else torch.device(device)
    wall, _, _ = best_time(run, repeats, warmup=True, device=dev)
    return flops / wall


def paired_rates(work, work_flops, device, mm_dtype=None, repeats=3):
    """A workload's FLOP rate as a fraction of the matmul rate, both timed in turn.

    Each repeat times the matmul, the workload, and the matmul again; the fraction of
    a repeat is the workload's FLOP rate over the mean of the two adjacent matmul
    rates, so both see the same machine load (which matters on a shared machine).

    Returns
    -------
    rate, peak, fraction : float
        Best workload FLOP/s, best matmul FLOP/s, median fraction.
    """
    mm, mm_flops = matmul_fn(device, mm_dtype)
    mm()
    work()
    rates, peaks, fractions = [], [], []
    before = mm_flops / timed(mm, device)
    for _ in range(repeats):
        rate = work_flops / timed(work, device)
        after = mm_flops / timed(mm, device)
        rates.append(rate)
        peaks += [before, after]
        fractions.append(rate / (0.5 * (before + after)))
        before = after
    return max(rates), max(peaks), float(np.median(fractions))


def peak_rss_mb():
    """Peak resident set size of this process so far (MB; ru_maxrss is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(header, rows):
    """Print ``rows`` (sequences of values, formatted with `str`) under ``header``, aligned."""
    cells = [[str(v) for v in header]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(c.ljust(w) for c, w in zip(cells[0], widths)))
    print(line)
    for r in cells[1:]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
