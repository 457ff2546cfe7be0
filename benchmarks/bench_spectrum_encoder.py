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

import torch

from astroclip.models.presets import get_preset
from astroclip.models.spectrum import SpectrumEncoder

from _common import paired_rates


def encoder_flops(model, *, with_head=False):
    """Multiply-add FLOPs (2 per MAC) of one forward pass on one spectrum."""
    n, d = model.n_tokens, model.embed_dim
    hidden = model.blocks[0].mlp.encoder.out_features if model.num_layers else 0
    flops = 2 * n * model.token_features * d                      # data_embed
    per_block = (2 * n * d * 3 * d                                # fused q, k, v
                 + 2 * 2 * n * n * d                              # q k^T and attention @ v
                 + 2 * n * d * d                                  # projection
                 + 2 * 2 * n * d * hidden)                        # MLP
    # (LayerNorms, softmax, GELU and biases are not counted: they are memory-bound)
    flops += model.num_layers * per_block
    if with_head:
        flops += 2 * n * d * model.token_features
    return flops


def run_device(device, *, batch, repeats, train_batch, train_steps, dtype=None):
    """Rows (name, rate, fraction of the matmul rate) for one device."""
    label = "fp32" if dtype is None else "bf16"
    mm_dtype = torch.float32 if dtype is None else dtype
    rows = []
    torch.manual_seed(0)
    paper = SpectrumEncoder(**get_preset("spectrum", "paper")).to(device).eval()
    flux = 1 + torch.rand(batch, paper.n_pixels, device=device)

    def infer():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                    enabled=dtype is not None):
            paper(flux)

    rate, peak, frac = paired_rates(infer, batch * encoder_flops(paper), device, mm_dtype,
                                    repeats)
    rows.append((f"{device.type} {label} square matmul (best seen)", f"{peak / 1e9:.1f} GFLOP/s",
                 "1.00"))
    rows.append((f"{device.type} {label} paper preset inference, batch {batch}",
                 f"{rate / encoder_flops(paper) :.2f} spectra/s ({rate / 1e9:.1f} GFLOP/s)",
                 f"{frac:.2f}"))
    del paper, flux

    torch.manual_seed(0)
    small = SpectrumEncoder(**get_preset("spectrum", "small")).to(device).train()
    opt = torch.optim.AdamW(small.parameters(), lr=1e-4)
    train_flux = 1 + torch.rand(train_batch, small.n_pixels, device=device)

    def steps():
        for _ in range(train_steps):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = small.masked_prediction(train_flux)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(small.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    step_flops = 3 * train_batch * encoder_flops(small, with_head=True)
    rate, peak2, frac = paired_rates(steps, train_steps * step_flops, device, mm_dtype,
                                     max(2, repeats - 1))
    rows.append((f"{device.type} {label} small preset training, batch {train_batch}",
                 f"{rate / step_flops:.2f} steps/s ({rate / 1e9:.1f} GFLOP/s)", f"{frac:.2f}"))
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
