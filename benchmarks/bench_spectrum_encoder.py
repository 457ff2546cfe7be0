"""Speed of the spectrum transformer.

Prints a table with:

- this machine's fp32 matmul rate (measured here, the baseline);
- inference throughput of the ``paper`` preset (spectra/s, batched, in
  `torch.inference_mode`) and its achieved FLOP rate as a fraction of the
  measured matmul rate (goal >= 0.7 on CPU);
- training steps/s of the ``small`` preset (masked prediction, AdamW);
- on a CUDA GPU (when present) the same in bf16, against the measured bf16
  matmul rate.

Usage: ``python benchmarks/bench_spectrum_encoder.py [--batch 16] [--repeats 3]``
"""

import argparse
import time

import torch

from astroclip.models.presets import get_preset
from astroclip.models.spectrum import SpectrumEncoder


def encoder_flops(model, *, with_head=False):
    """Multiply-add FLOPs (2 per MAC) of one forward pass on one spectrum."""
    n, d = model.n_tokens, model.embed_dim
    hidden = model.blocks[0].mlp.encoder.out_features if model.num_layers else 0
    flops = 2 * n * model.token_features * d                      # data_embed
    per_block = (2 * n * d * 3 * d                                # fused q, k, v
                 + 2 * 2 * n * n * d                              # q k^T and attention @ v
                 + 2 * n * d * d                                  # projection
                 + 2 * 2 * n * d * hidden)                        # MLP
    flops += model.num_layers * per_block
    if with_head:
        flops += 2 * n * d * model.token_features
    return flops


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn, device, repeats):
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def matmul_rate(device, dtype, *, size=2048, repeats=5):
    """Best measured FLOP/s of a square matmul (the machine's practical peak)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    inner = 4 if device.type == "cpu" else 50

    def run():
        for _ in range(inner):
            torch.mm(a, b)

    return inner * 2 * size ** 3 / _best_time(run, device, repeats)


def inference_rate(model, batch, device, repeats, *, dtype=None):
    flux = 1 + torch.rand(batch, model.n_pixels, device=device)

    def run():
        with torch.inference_mode():
            if dtype is None:
                model(flux)
            else:
                with torch.autocast(device.type, dtype=dtype):
                    model(flux)

    t = _best_time(run, device, repeats)
    return batch / t, batch * encoder_flops(model) / t


def training_rate(model, batch, device, steps, *, dtype=None):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    flux = 1 + torch.rand(batch, model.n_pixels, device=device)
    model.train()

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model.masked_prediction(flux)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - t)


def run_device(device, *, batch, repeats, train_batch, train_steps, dtype=None):
    rows = []
    label = "fp32" if dtype is None else "bf16"
    peak = matmul_rate(device, torch.float32 if dtype is None else dtype)
    rows.append((f"{device.type} {label} matmul 2048^3 (baseline)", f"{peak / 1e9:.1f} GFLOP/s", "1.00"))
    torch.manual_seed(0)
    paper = SpectrumEncoder(**get_preset("spectrum", "paper")).to(device).eval()
    spectra_s, flop_s = inference_rate(paper, batch, device, repeats, dtype=dtype)
    rows.append((f"{device.type} {label} paper preset inference, batch {batch}",
                 f"{spectra_s:.1f} spectra/s ({flop_s / 1e9:.1f} GFLOP/s)",
                 f"{flop_s / peak:.2f}"))
    del paper
    small = SpectrumEncoder(**get_preset("spectrum", "small")).to(device)
    steps_s = training_rate(small, train_batch, device, train_steps, dtype=dtype)
    flops = 3 * train_batch * encoder_flops(small, with_head=True)   # forward + backward
    rows.append((f"{device.type} {label} small preset training, batch {train_batch}",
                 f"{steps_s:.2f} steps/s", f"{steps_s * flops / peak:.2f}"))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="inference batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-cpu", action="store_true", help="GPU rows only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    if not args.skip_cpu:
        rows += run_device(torch.device("cpu"), batch=args.batch, repeats=args.repeats,
                           train_batch=args.train_batch, train_steps=args.train_steps)
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        rows += run_device(dev, batch=max(args.batch, 128), repeats=max(args.repeats, 5),
                           train_batch=max(args.train_batch, 64), train_steps=20,
                           dtype=torch.bfloat16)
        rows += run_device(dev, batch=max(args.batch, 128), repeats=max(args.repeats, 5),
                           train_batch=max(args.train_batch, 64), train_steps=20)
    with torch.device("meta"):
        paper = SpectrumEncoder(**get_preset("spectrum", "paper"))
    print(f"paper preset: {paper.num_parameters() / 1e6:.1f} M parameters, "
          f"{encoder_flops(paper) / 1e9:.1f} GFLOP per spectrum (forward)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'rate':<36}  fraction of matmul rate")
    for name, rate, frac in rows:
        print(f"{name:<{width}}  {rate:<36}  {frac}")


if __name__ == "__main__":
    main()
