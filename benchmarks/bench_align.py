"""Speed of the alignment stage: training pairs/s against data-loading pairs/s.

Prints a table with:

- this machine's fp32 matmul rate (measured here; context for the other rows);
- the data-loading rate of pairs (152 x 152 images + 7781-pixel spectra) from
  our HDF5 training-set file through `astroclip.data.datasets.PairedDataset`
  and the training loader (``workers`` 0 and 2), and from memory;
- training pairs/s of the ``small`` and ``small-vit`` CLIP presets on raw
  152 x 152 cutouts (augmentation, both encoders, loss, backward, AdamW step),
  with the paper's freezing policy and with everything trainable;
- a short end-to-end `astroclip.training.align.align` run (Lightning loop,
  loading, validation excluded) in pairs/s;
- the ratio loading / training for each row: above 1 means loading is not the
  bottleneck;
- on a CUDA GPU (when present): the same training rows and the ``paper``
  preset (ResNet-50 + 43 M-parameter transformer) in bf16 at batch 256.

Usage: ``python benchmarks/bench_align.py [--batch 64] [--steps 5] [--threads N]``
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from astroclip.inputs import grid
from astroclip.models.clip import AstroCLIP
from astroclip.models.presets import get_preset
from astroclip.training.align import AlignmentModule, align, collate_pairs

from _common import best_time, matmul_rate

warnings.filterwarnings("ignore")


def random_pairs(n, rng):
    flux = rng.normal(5.0, 1.0, size=(n, grid.N_PIXELS)).astype(np.float32)
    image = rng.normal(0.0, 0.02, size=(n, 3, grid.IMAGE_SIZE, grid.IMAGE_SIZE)).astype(np.float32)
    return flux, image


class MemoryPairs(torch.utils.data.Dataset):
    def __init__(self, flux, image):
        self.flux, self.image = torch.from_numpy(flux), torch.from_numpy(image)

    def __len__(self):
        return len(self.flux)

    def __getitem__(self, i):
        return {"image": self.image[i], "spectrum": self.flux[i]}


def write_file(path, flux, image):
    from astroclip.data.paired import PairedDatasetWriter

    n = len(flux)
    with PairedDatasetWriter(path, overwrite=True) as w:
        w.append(targetid=np.arange(n), ra=np.zeros(n), dec=np.zeros(n), flux=flux,
                 ivar=np.ones_like(flux), image=image, split=np.zeros(n, np.int8))


def loading_rate(dataset, batch, workers, batches):
    from astroclip.training.sampling import build_train_loader

    loader = build_train_loader(dataset, batch_size=batch, workers=workers,
                                collate_fn=collate_pairs)
    it = iter(loader)
    next(it)  # start-up (worker processes, file opening) is not counted
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch / (time.perf_counter() - t)
    del it
    return rate


def train_rate(preset, freeze, batch, steps, device, precision=None):
    torch.manual_seed(0)
    cfg = get_preset("clip", preset)
    model = AstroCLIP(**{**cfg, "freeze": freeze}).to(device)
    module = AlignmentModule(model, lr=1e-4).to(device)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    images = torch.randn(batch, 3, grid.IMAGE_SIZE, grid.IMAGE_SIZE, device=device) * 0.02
    flux = torch.randn(batch, grid.N_PIXELS, device=device) + 5.0
    ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16"
           else torch.autocast("cpu", enabled=False))

    def step():
        with ctx:
            zi, zs = model(module._augment(images), flux)
            loss = model.loss(zi, zs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
        opt.step()

    model.train()
    wall, _, _ = best_time(step, steps, warmup=True, device=device)
    best = batch / wall
    trainable = model.num_parameters(trainable=True) / 1e6
    return best, trainable, model.num_parameters() / 1e6


def end_to_end_rate(dataset, batch, steps, out):
    t = time.perf_counter()
    align(dataset, out=out, preset="small", batch_size=batch, max_steps=1, progress=False,
          accelerator="cpu", overwrite=True, resume=False)
    first = time.perf_counter() - t  # set-up + one step
    t = time.perf_counter()
    align(dataset, out=out, preset="small", batch_size=batch, max_steps=1 + steps,
          progress=False, accelerator="cpu", overwrite=True, resume=False)
    total = time.perf_counter() - t
    if total <= first:  # too few steps to see past the set-up on a noisy machine
        return float("nan")
    return steps * batch / (total - first)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="pairs per step on the CPU")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    rng = np.random.default_rng(0)
    n = max(4 * args.batch, 256)
    flux, image = random_pairs(n, rng)
    memory = MemoryPairs(flux, image)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; batch {args.batch}")
    peak = matmul_rate(cpu)
    print(f"CPU fp32 matmul: {peak / 1e9:.1f} GFLOP/s")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.h5"
        write_file(path, flux, image)
        from astroclip.data.datasets import PairedDataset

        loads = {"memory": loading_rate(memory, args.batch, 0, 4)}
        for workers in (0, 2):
            loads[f"HDF5, {workers} workers"] = loading_rate(PairedDataset(path), args.batch,
                                                             workers, 4)
        best_load = max(v for k, v in loads.items() if k != "memory")
        for name, rate in loads.items():
            rows.append((f"loading ({name})", rate, "", ""))

        for preset in ("small", "small-vit"):
            for freeze in ("paper", "none"):
                rate, trainable, total = train_rate(preset, freeze, args.batch, args.steps, cpu)
                rows.append((f"train {preset}, freeze={freeze} ({trainable:.2f}/{total:.2f} M)",
                             rate, best_load / rate, ""))
        e2e = end_to_end_rate(PairedDataset(path), args.batch, args.steps, Path(tmp) / "run")
        rows.append(("align() end to end, small, HDF5 file", e2e, best_load / e2e, ""))

    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        gpeak = matmul_rate(gpu, torch.bfloat16)
        print(f"GPU bf16 matmul: {gpeak / 1e12:.1f} TFLOP/s ({torch.cuda.get_device_name()})")
        for preset, batch in (("small", 256), ("small-vit", 256), ("paper", 256)):
            rate, trainable, total = train_rate(preset, "paper", batch, args.steps, gpu,
                                                precision="bf16")
            rows.append((f"GPU bf16 train {preset}, batch {batch} ({trainable:.1f}/{total:.1f} M)",
                         rate, best_load / rate, "CPU loader"))

    print()
    print(f"{'row':<62} {'pairs/s':>10} {'load/train':>11}")
    for name, rate, ratio, note in rows:
        r = f"{ratio:11.1f}" if ratio != "" else " " * 11
        print(f"{name:<62} {rate:10.1f} {r} {note}")


if __name__ == "__main__":
    main()
