"""Label-free spectrum pretraining recipes at the same CPU budget (issue 11).

Each variant pretrains the ``cpu`` spectrum preset for ``--cpu-seconds`` of process
CPU time (one thread) on mock spectra made by `astroclip.simulate.simulate_spectra`
(``--n-train`` galaxies, kept in memory), then reports on ``--n-eval`` other
galaxies:

- R^2(z) and R^2(log M*) of k-NN (k = 16, distance-weighted, standardised features,
  fitted on 80 % of them, scored on the rest) on the frozen backbone's mean-pooled
  tokens and, with a bottleneck, on the pooled embedding;
- the masked-fill factor: MSE of linear interpolation across each masked run over
  the MSE of the model's prediction, against the observed and the noiseless tokens.

Variants (``--variants``; ``key=value`` overrides after the name, e.g.
``denoise-bottleneck:stem=8,16,32,64``):

``observed``           the paper's objective: masked tokens vs the input's tokens;
``denoise``            masked tokens vs the noiseless spectrum, fresh noise each step;
``denoise-bottleneck`` the same plus the pooling head trained to reconstruct the
                       clean spectrum (`astroclip.training.spectra.SpectrumPretraining`).

Usage: ``python benchmarks/bench_spectrum_pretraining.py --cpu-seconds 240``
"""

import argparse
import json
import time

import numpy as np
import torch
from torch.nn import functional as F

from astroclip.models.presets import get_preset
from astroclip.models.spectrum import masked_mse
from astroclip.simulate import simulate_spectra
from astroclip.training.spectra import SpectrumPretraining

RECIPES = {
    "observed": dict(target="observed", renoise=False, bottleneck=None),
    "denoise": dict(target="model", renoise=True, bottleneck=None),
    "denoise-bottleneck": dict(target="model", renoise=True, bottleneck=dict(
        pooling=dict(embed_dim=128, num_heads=4, residual=True), hidden=512, bin=4)),
}


def linear_fill(tokens, mask, window, stride):
    """Masked data tokens filled by linear interpolation from the visible pixels."""
    out = tokens.clone()
    for i in range(tokens.shape[0]):
        vis = np.flatnonzero(~mask[i, 1:].numpy())
        pix = (vis[:, None] * stride + np.arange(window)).ravel()
        val = tokens[i, 1:, 2:].numpy()[vis].ravel()
        for j in np.flatnonzero(mask[i, 1:].numpy()):
            out[i, j + 1, 2:] = torch.from_numpy(np.interp(j * stride + np.arange(window), pix,
                                                           val).astype(np.float32))
    return out


def knn_r2(features, labels, n_fit):
    from sklearn.metrics import r2_score
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit(features[:n_fit]).transform(features)
    return {name: round(float(r2_score(y[n_fit:], KNeighborsRegressor(16, weights="distance")
                                       .fit(x[:n_fit], y[:n_fit]).predict(x[n_fit:]))), 3)
            for name, y in labels.items()}


def run(name, overrides, train, ev, truth, cpu_seconds, batch=32, lr=1e-3, seed=0):
    recipe = RECIPES[name]
    config = get_preset("spectrum", "cpu")
    config.update(overrides)
    torch.manual_seed(seed)
    module = SpectrumPretraining(config, **recipe)
    opt = module.configure_optimizers()["optimizer"]
    for group in opt.param_groups:
        group["lr"] = lr
    g = torch.Generator().manual_seed(seed)
    arrays = {k: torch.from_numpy(v) for k, v in train.items()}
    t0, steps = time.process_time(), 0
    while time.process_time() - t0 < cpu_seconds:
        idx = torch.randint(0, len(arrays["flux"]), (batch,), generator=g)
        batch_ = {"spectrum": arrays["flux"][idx], "spectrum_model": arrays["flux_model"][idx],
                  "spectrum_ivar": arrays["ivar"][idx]}
        loss, _ = module._step(batch_, generator=g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        steps += 1
    train_cpu = time.process_time() - t0
    model = module.model.eval()
    feats = {"mean-pooled tokens": []}
    if module.embedder is not None:
        feats["pooled embedding"] = []
    fill = np.zeros(4)
    flux, clean = torch.from_numpy(ev["flux"]), torch.from_numpy(ev["flux_model"])
    with torch.no_grad():
        for s in range(0, len(flux), 250):
            f, c = flux[s:s + 250], clean[s:s + 250]
            tok = model.tokenize(f)
            h = model.encode_tokens(tok)
            feats["mean-pooled tokens"].append(h.mean(1).numpy())
            if module.embedder is not None:
                feats["pooled embedding"].append(module.embedder.pooling(h).numpy())
            _, mu, sigma = model.standardize(f)
            ct = torch.cat([tok[:, :1], F.pad(((c - mu) / sigma).unfold(
                1, model.window, model.stride), (2, 0))], 1)
            mask = model.random_mask(len(f), generator=torch.Generator().manual_seed(s))
            pred = model.head(model.encode_tokens(model.mask_tokens(tok, mask)))
            lin = linear_fill(tok, mask, model.window, model.stride)
            fill += [float(masked_mse(pred, tok, mask)), float(masked_mse(lin, tok, mask)),
                     float(masked_mse(pred, ct, mask)), float(masked_mse(lin, ct, mask))]
    n_fit = int(0.8 * len(flux))
    labels = {"Z": np.asarray(truth["Z"]), "LOG_MSTAR": np.asarray(truth["LOG_MSTAR"])}
    result = dict(variant=name, overrides=overrides, steps=steps, cpu_s=round(train_cpu),
                  fill_factor_observed=round(fill[1] / fill[0], 2),
                  fill_factor_clean=round(fill[3] / fill[2], 2))
    for key, value in feats.items():
        result[key] = knn_r2(np.concatenate(value), labels, n_fit)
    return result


def _parse(spec):
    name, _, rest = spec.partition(":")
    overrides = {}
    for kv in filter(None, rest.split(";")):
        key, value = kv.split("=")
        overrides[key] = tuple(int(v) for v in value.split(",")) if "," in value else \
            json.loads(value)
    return name, overrides


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-seconds", type=float, default=240)
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-eval", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variants", nargs="+",
                        default=["observed", "denoise", "denoise-bottleneck",
                                 "denoise-bottleneck:stem_channels=8,16,32,64"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, _ = simulate_spectra(args.n_train, seed=202, workers=args.workers)
    ev, truth = simulate_spectra(args.n_eval, seed=101, workers=args.workers)
    for spec in args.variants:
        print(json.dumps(run(*_parse(spec), train, ev, truth, args.cpu_seconds)), flush=True)


if __name__ == "__main__":
    main()
