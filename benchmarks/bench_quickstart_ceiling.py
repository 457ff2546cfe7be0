"""How far can the quickstart's encoders get at its CPU budget?  Supervised ceilings.

The quickstart (`astroclip.quickstart`) trains its encoders without labels:
masked-segment filling for the spectrum transformer, MoCo v2 for the image
CNN, then CLIP alignment, and only then regresses redshift and stellar mass
from the frozen embeddings.  This script measures an upper bound for that
pipeline at the same CPU budget: the *same architectures* (the ``quick``
spectrum transformer with the alignment's cross-attention pooling head, the
``resnet-small`` image CNN) trained **with the labels**, end to end, directly
on the quickstart's training split, for a few minutes each.  A label-free
embedding followed by k-NN is not expected to beat a network trained on the
labels themselves with the same data and compute.

Prints one table (rows = model, columns = held-out R^2 of Z and LOG_MSTAR) with

- the photometry-only MLP baseline and k-NN on the same photometry features;
- the supervised spectrum transformer and image CNN: the best held-out R^2 over
  the evaluations (every ``--eval-every`` steps; picking the best on the test
  split favours these rows, as a ceiling should), their steps and seconds;
- optionally (``--embeddings``), k-NN on an `astroclip.embed_catalog` file of
  the same survey, e.g. a quickstart report's ``embeddings.h5``.

``--spectrum-steps 0`` or ``--image-steps 0`` skips that model.

Usage::

    python benchmarks/bench_quickstart_ceiling.py [--survey mock_survey.h5]
        [--embeddings embeddings.h5] [--spectrum-steps 800] [--image-steps 1200]

Without ``--survey`` the quickstart's default mock survey (4,000 galaxies,
seed 0) is simulated into a temporary folder first.
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from astroclip.data.paired import read_paired_dataset
from astroclip.models.image import ImageEncoder
from astroclip.models.presets import CLIP_PRESETS, IMAGE_PRESETS, SPECTRUM_PRESETS
from astroclip.models.spectrum import SpectrumEmbedder
from astroclip.evaluation import (knn_regression, photometry_baseline, photometry_features,
                                  r2_score)
from astroclip.quickstart import SIZES

warnings.filterwarnings("ignore")
PROPS = ("Z", "LOG_MSTAR")


def _augment_images(x, generator):
    """Random flips and quarter turns (label-preserving, cheap)."""
    k = int(torch.randint(4, (1,), generator=generator))
    x = torch.rot90(x, k, dims=(2, 3))
    if bool(torch.randint(2, (1,), generator=generator)):
        x = x.flip(3)
    return x


def supervised(name, net, width, inputs, y, train, test, *, steps, batch, lr, eval_every,
               augment=None, seed=0):
    """Train ``net`` + a linear layer on standardised labels; best held-out R^2 per label."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(width, y.shape[1])
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    mean, std = y[train].mean(0), y[train].std(0)
    target = torch.from_numpy((y - mean) / std).float()
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    best = np.full(y.shape[1], -np.inf)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        rows = np.sort(rng.choice(train, batch, replace=False))
        x = inputs[rows]
        if augment is not None:
            x = augment(x, gen)
        loss = torch.nn.functional.mse_loss(head(net(x)), target[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == steps:
            net.eval()
            with torch.no_grad():
                pred = torch.cat([head(net(inputs[test[i:i + 128]]))
                                  for i in range(0, len(test), 128)]).numpy()
            net.train()
            pred = pred * std + mean
            r2 = np.array([r2_score(y[test, j], pred[:, j]) for j in range(y.shape[1])])
            best = np.maximum(best, r2)
            print(f"  {name}: step {step}/{steps}, loss {loss.item():.3f}, held-out R^2 "
                  + ", ".join(f"{p} {v:.3f}" for p, v in zip(PROPS, r2)), flush=True)
    return best, time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survey", type=Path, help="paired HDF5 mock survey (default: simulate)")
    parser.add_argument("--n-galaxies", type=int, default=SIZES["default"]["n_galaxies"])
    parser.add_argument("--embeddings", type=Path, help="embed_catalog file to add k-NN rows")
    parser.add_argument("--spectrum-steps", type=int, default=800)
    parser.add_argument("--image-steps", type=int, default=1200)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--image-mapping", choices=("color_map", "flux"), default=None,
                        help="input mapping of the image CNN (default: the preset's)")
    parser.add_argument("--k", type=int, default=SIZES["default"]["k"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    survey = args.survey
    if survey is None:
        from astroclip.simulate import simulate_survey
        survey = Path(tempfile.mkdtemp()) / "mock_survey.h5"
        print(f"simulating {args.n_galaxies} galaxies into {survey}", flush=True)
        simulate_survey(args.n_galaxies, out=survey, seed=0, workers=torch.get_num_threads())
    fields = tuple(f for f, n in (("flux", args.spectrum_steps), ("image", args.image_steps))
                   if n > 0)
    table, arrays = read_paired_dataset(survey, fields=fields)
    split = np.asarray(table["split"])
    train, test = np.flatnonzero(split != 2), np.flatnonzero(split == 2)
    y = np.stack([np.asarray(table[p], dtype=np.float64) for p in PROPS], axis=1)
    print(f"{len(train)} training (train + val) and {len(test)} held-out galaxies; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    rows = []

    phot = np.asarray(photometry_features(table[["FLUX_G", "FLUX_R", "FLUX_Z"]]))
    t0 = time.perf_counter()
    pred = photometry_baseline(table[["FLUX_G", "FLUX_R", "FLUX_Z"]][train],
                               {p: y[train, j] for j, p in enumerate(PROPS)},
                               table[["FLUX_G", "FLUX_R", "FLUX_Z"]][test],
                               max_epochs=SIZES["default"]["mlp_epochs"], progress=False,
                               device="cpu")
    rows.append(("photometry MLP (the baseline)", "-",
                 [r2_score(y[test, j], np.asarray(pred[p])) for j, p in enumerate(PROPS)],
                 time.perf_counter() - t0))
    knn = knn_regression(phot[train], y[train], phot[test], k=args.k)
    rows.append((f"k-NN (k={args.k}) on photometry features", "-",
                 [r2_score(y[test, j], knn[:, j]) for j in range(len(PROPS))], 0.0))

    if args.embeddings is not None:
        from astroclip.evaluation import labelled_embeddings
        data = labelled_embeddings(args.embeddings, survey, properties=PROPS)
        etr, ete = data["split"] != 2, data["split"] == 2
        ey = np.stack([np.asarray(data["targets"][p]) for p in PROPS], axis=1)
        for modality, emb in data["embeddings"].items():
            pred = knn_regression(emb[etr], ey[etr], emb[ete], k=args.k)
            rows.append((f"k-NN (k={args.k}) on the {modality} embedding", "-",
                         [r2_score(ey[ete, j], pred[:, j]) for j in range(len(PROPS))], 0.0))

    if args.spectrum_steps > 0:
        pooling = CLIP_PRESETS["small"]["spectrum"]["pooling"]
        net = SpectrumEmbedder(backbone=SPECTRUM_PRESETS["quick"], pooling=pooling)
        flux = torch.from_numpy(arrays["flux"]).float()
        best, secs = supervised("spectrum transformer", net, pooling["embed_dim"], flux, y,
                                train, test, steps=args.spectrum_steps, batch=32, lr=1e-3,
                                eval_every=args.eval_every)
        rows.append(("supervised quick transformer + pooling head", args.spectrum_steps, best,
                     secs))
    if args.image_steps > 0:
        image_kwargs = dict(IMAGE_PRESETS["resnet-small"])
        if args.image_mapping:
            image_kwargs["input_mapping"] = args.image_mapping
        net = ImageEncoder(**image_kwargs)
        images = torch.from_numpy(arrays["image"]).float()
        best, secs = supervised("image CNN", net, IMAGE_PRESETS["resnet-small"]["embed_dim"],
                                images, y, train, test, steps=args.image_steps, batch=64,
                                lr=1e-3, eval_every=args.eval_every, augment=_augment_images)
        rows.append((f"supervised resnet-small, {image_kwargs['input_mapping']}",
                     args.image_steps, best, secs))

    print()
    print(f"held-out R^2 on {len(test)} galaxies of {survey.name}")
    print(f"{'model':<48} {'steps':>6} {'seconds':>8} {'R2 Z':>7} {'R2 LOG_MSTAR':>13}")
    for name, steps, r2, secs in rows:
        print(f"{name:<48} {steps!s:>6} {secs:8.0f} {r2[0]:7.3f} {r2[1]:13.3f}")


if __name__ == "__main__":
    main()
