"""The one-command quickstart: the whole AstroCLIP pipeline on an offline mock survey.

`quickstart` chains the same Python functions a user would call:

1. `astroclip.simulate_survey` - a mock DESI x Legacy Survey catalogue;
2. `astroclip.pretrain_spectra` - masked-segment pretraining of the spectrum transformer;
3. `astroclip.pretrain_images` - MoCo v2 pretraining of the image encoder;
4. `astroclip.align` - CLIP alignment of the two;
5. `astroclip.embed_catalog` - embeddings of every galaxy;
6. `astroclip.SimilarityIndex` - cross-modal retrieval on the held-out split;
7. `astroclip.evaluation.evaluate_embeddings` - zero-/few-shot R^2 (Table 1);

and writes a report folder: figures, the R^2 table, retrieval accuracy, the
trained weights and ``summary.json``.  Every stage skips work already done, so
an interrupted quickstart resumes where it stopped.
"""

import json
import os
import time
from pathlib import Path

import numpy as np

from ._optional import require
from ._io import atomic_path

__all__ = ["SIZES", "ALIGN_FREEZE", "SPECTRUM_RECIPES", "PAPER_TABLE1", "quickstart"]

#: Run sizes.  "default" is sized for at most 15 minutes on a 2-core CPU with the
#: CPU-sized encoders (the "cpu" spectrum preset, pretrained on ``spectrum_pool``
#: extra mock galaxies with the "denoise-bottleneck" recipe); "tiny" is for tests;
#: "gpu" is a larger run for one GPU with the paper's encoder architectures
#: (43 M-parameter spectrum transformer, ResNet-50 on g, r, z fluxes).  The presets are names of
#: `astroclip.models.presets.SPECTRUM_PRESETS` and ``IMAGE_PRESETS``.
SIZES = {
    "tiny": dict(n_galaxies=160, spectrum_steps=4, image_steps=4, align_steps=6,
                 spectrum_batch=16, image_batch=16, align_batch=32, align_lr=1e-3,
                 k=8, mlp_epochs=20, spectrum_preset="cpu", image_preset="resnet-small",
                 spectrum_pool=64, spectrum_lr=1e-3, spectrum_recipe="denoise-bottleneck",
                 align_freeze="lit"),
    "default": dict(n_galaxies=4000, spectrum_steps=1000, image_steps=100, align_steps=400,
                    spectrum_batch=32, image_batch=32, align_batch=64, align_lr=1e-3,
                    k=16, mlp_epochs=100, spectrum_preset="cpu",
                    image_preset="resnet-small", spectrum_pool=8000, spectrum_lr=1e-3,
                    spectrum_recipe="denoise-bottleneck", align_freeze="lit"),
    "gpu": dict(n_galaxies=60000, spectrum_steps=5000, image_steps=5000, align_steps=5000,
                spectrum_batch=64, image_batch=256, align_batch=512, align_lr=3e-4,
                k=64, mlp_epochs=300, spectrum_preset="paper", image_preset="paper",
                spectrum_pool=0, spectrum_lr=3e-4, spectrum_recipe="paper",
                align_freeze="quickstart"),
}

#: Spectrum pretraining recipes (`astroclip.pretrain_spectra` options).  "paper":
#: masked filling of the observed tokens on the survey's training split.
#: "denoise-bottleneck": on ``spectrum_pool`` extra galaxies of the same mock survey
#: (never its held-out split), masked tokens scored against the noiseless spectrum,
#: a fresh noise draw every step, and the pooling head trained to reconstruct the
#: clean spectrum (see `astroclip.training.spectra.SpectrumPretraining`).
SPECTRUM_RECIPES = {
    "paper": dict(target="observed", renoise=False, bottleneck=None),
    "denoise-bottleneck": dict(target="model", renoise=True, bottleneck=dict(
        pooling=dict(embed_dim=128, num_heads=4, dropout=0.0, residual=True),
        hidden=512, bin=4, weight=1.0)),
}

#: Freezing policies of the quickstart's alignment.  The paper freezes the image
#: backbone, pretrained for days; the quickstart's CPU-minutes of MoCo leave it
#: weak, so its small CNN is trained through.  "quickstart": the spectrum
#: transformer frozen (as in the paper), its pooling head trained; "lit": the
#: whole spectrum side locked (its pooled embedding, pretrained through the
#: bottleneck, is the target the image encoder learns to match; Zhai et al. 2022,
#: "LiT"), which keeps the spectrum embedding's redshift information intact.
ALIGN_FREEZE = {"quickstart": {"image": "none", "spectrum": "backbone"},
                "lit": {"image": "none", "spectrum": "all"}}


class _Stages:
    def __init__(self, total, verbose):
        self.total, self.verbose, self.n = total, verbose, 0
        self.times = {}

    def __call__(self, name, text):
        self.n += 1
        self.name = name
        if self.verbose:
            print(f"[{self.n}/{self.total}] {text}", flush=True)
        return self

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.times[self.name] = round(time.perf_counter() - self.t0, 2)
        if self.verbose and exc[0] is None:
            print(f"      done in {self.times[self.name]:.1f} s", flush=True)


def _cpu_seconds():
    """CPU time of this process and its finished children (the simulation workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _save(fig, path):
    plt = require("matplotlib.pyplot", purpose="plotting")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip("."))
    plt.close(fig)


def quickstart(out="quickstart-report", *, size="default", seed=0, device="auto",
               workers=None, progress=True, verbose=True, **overrides):
    """Run the whole pipeline on a mock survey and write a report folder.

    Parameters
    ----------
    out : path, optional
        Report folder (created; re-running resumes and reuses finished stages).
    size : {"default", "tiny", "gpu"}, optional
        Run size (`SIZES`): ``"default"`` is sized for 15 minutes on a 2-core CPU.
    seed : int, optional
        Seed of the mock survey and of the training runs.
    device : str, optional
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``...
    workers : int, optional
        Processes simulating the survey (default: all cores).
    progress : bool, optional
        Progress bars inside the stages.
    verbose : bool, optional
        Print one line per stage and the final summary.
    **overrides
        Any key of `SIZES` (``n_galaxies``, ``align_steps``, ...).

    Returns
    -------
    dict
        The summary also written to ``out/summary.json``: stage times, R^2
        table rows, retrieval accuracy and whether the targets were met.

    Examples
    --------
    >>> from astroclip.quickstart import quickstart
    >>> summary = quickstart("quickstart-report")  # doctest: +SKIP
    """

    from . import embed_catalog
    from ._device import resolve_device
    from .data.embeddings import read_embeddings
    from .evaluation import evaluate_embeddings, labelled_embeddings, retrieval_scores
    from .models.factory import model_config
    from .simulate import simulate_spectra, simulate_survey
    from .training.align import align
    from .training.images import pretrain_images
    from .training.spectra import pretrain_spectra

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose among {sorted(SIZES)}")
    cfg = dict(SIZES[size])
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; valid: {sorted(cfg)}")
    cfg.update(overrides)
    for key, known in (("spectrum_recipe", SPECTRUM_RECIPES), ("align_freeze", ALIGN_FREEZE)):
        if cfg[key] not in known:
            raise ValueError(f"unknown {key} {cfg[key]!r}; choose among {sorted(known)}")
    model_config(cfg["spectrum_preset"], family="spectrum")
    model_config(cfg["image_preset"], family="image")
    dev = resolve_device(device)
    accelerator = "gpu" if dev.type == "cuda" else dev.type
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    workers = workers or os.cpu_count() or 1
    stage = _Stages(8, verbose)
    t_start = time.perf_counter()
    cpu_start = _cpu_seconds()
    survey = out / "mock_survey.h5"
    train_kw = dict(seed=seed, accelerator=accelerator, devices=1, progress=progress)

    with stage("simulate", f"simulating a mock survey of {cfg['n_galaxies']} galaxies"):
        if not survey.exists():
            simulate_survey(cfg["n_galaxies"], out=survey, seed=seed, workers=workers,
                            progress=progress)
    recipe = SPECTRUM_RECIPES[cfg["spectrum_recipe"]]
    with stage("pretrain_spectra", f"pretraining the spectrum transformer "
                                   f"({cfg['spectrum_steps']} steps)"):
        spec_out = out / "spectrum_model"
        if not (spec_out / "model.safetensors").exists():
            data = survey
            if cfg["spectrum_pool"]:
                # extra galaxies of the same survey, after those of the file
                data, _ = simulate_spectra(cfg["spectrum_pool"], seed=seed,
                                           start=cfg["n_galaxies"], workers=workers,
                                           progress=progress)
            pretrain_spectra(data, out=spec_out, preset=cfg["spectrum_preset"],
                             max_steps=cfg["spectrum_steps"], batch_size=cfg["spectrum_batch"],
                             lr=cfg["spectrum_lr"], **recipe, **train_kw)
            del data
    with stage("pretrain_images", f"pretraining the image encoder with MoCo v2 "
                                  f"({cfg['image_steps']} steps)"):
        pretrain_images(survey, out=out / "image_model", preset=cfg["image_preset"],
                        max_steps=cfg["image_steps"], batch_size=cfg["image_batch"],
                        **train_kw)
    with stage("align", f"aligning images and spectra ({cfg['align_steps']} steps)"):
        align(survey, out=out / "model", preset="small",
              spectrum_model=out / "spectrum_model", image_model=out / "image_model",
              max_steps=cfg["align_steps"], batch_size=cfg["align_batch"], lr=cfg["align_lr"],
              freeze=ALIGN_FREEZE[cfg["align_freeze"]], **train_kw)
    emb_path = out / "embeddings.h5"
    with stage("embed", "embedding every galaxy"):
        if not emb_path.exists():
            embed_catalog(survey, out=emb_path, model=out / "model", device=device,
                          progress=progress)
    with stage("search", "cross-modal retrieval on the held-out split"):
        data = labelled_embeddings(read_embeddings(emb_path)[:2], survey)
        test = data["split"] == 2
        img, spec = data["embeddings"]["image"][test], data["embeddings"]["spectrum"][test]
        acc = retrieval_scores(img, spec, k=(1, 5))
        acc["chance_top1"] = 1.0 / int(test.sum())
        acc["chance_top5"] = min(1.0, 5.0 / int(test.sum()))
        acc["n_test"] = int(test.sum())
    with stage("evaluate", "zero-shot (k-NN) and few-shot (MLP) property estimates"):
        table, predictions, truth = evaluate_embeddings(
            (data["targetid"], data["embeddings"]), survey, k=cfg["k"],
            mlp_kwargs={"max_epochs": cfg["mlp_epochs"]}, progress=progress)
        with atomic_path(out / "r2_table.ecsv") as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
    with stage("figures", "drawing the report figures"):
        _figures(out, survey, data, test, table, predictions, truth)

    r2 = {(str(r["method"]), str(r["modality"])): {p: float(r[p]) for p in ("Z", "LOG_MSTAR")}
          for r in table}
    targets = _targets(r2, acc)
    summary = {"size": size, "config": cfg, "device": str(dev), "stage_seconds": stage.times,
               "total_seconds": round(time.perf_counter() - t_start, 1),
               "cpu_seconds": round(_cpu_seconds() - cpu_start, 1),
               "r2": {f"{m} | {mod}": v for (m, mod), v in r2.items()},
               "retrieval": acc, "targets": targets, "model": str(out / "model")}
    with atomic_path(out / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2))
    if verbose:
        _print_summary(summary, table)
    return summary


#: The paper's Table 1 (Lanusse, Parker et al. 2023): R^2 of (redshift, log M*) on
#: DESI EDR x Legacy Survey galaxies, by (method, modality), printed beside ours.
PAPER_TABLE1 = {
    ("MLP", "photometry"): (0.69, 0.65),
    ("k-NN", "image"): (0.71, 0.66),
    ("k-NN", "spectrum"): (0.97, 0.86),
    ("MLP", "image"): (0.63, 0.57),
    ("MLP", "spectrum"): (0.99, 0.86),
}


def _targets(r2, acc):
    phot = r2.get(("MLP", "photometry"), {})
    img = r2.get(("k-NN", "image"), {})
    spec = r2.get(("k-NN", "spectrum"), {})
    spec_mlp = r2.get(("MLP", "spectrum"), {})
    return {
        "spectrum kNN R2(z) >= 0.95": bool(spec.get("Z", -1) >= 0.95),
        "spectrum MLP R2(z) >= 0.95": bool(spec_mlp.get("Z", -1) >= 0.95),
        "spectrum kNN R2(logM*) >= photometry MLP": bool(spec.get("LOG_MSTAR", -1)
                                                         >= phot.get("LOG_MSTAR", 1)),
        "image kNN R2(z) >= photometry MLP - 0.02": bool(img.get("Z", -1)
                                                         >= phot.get("Z", 1) - 0.02),
        "image kNN R2(logM*) >= photometry MLP - 0.02": bool(img.get("LOG_MSTAR", -1)
                                                             >= phot.get("LOG_MSTAR", 1) - 0.02),
        "retrieval top-1 >= 10x chance": bool(acc["image_to_spectrum_top1"]
                                              >= 10 * acc["chance_top1"]),
    }


def _print_summary(summary, table):
    print()
    print("R^2 on the held-out split, beside the paper's Table 1:")
    print(f"  {'method':6s} {'modality':16s} {'R2(z)':>7s} {'paper':>6s}  {'R2(logM*)':>9s} "
          f"{'paper':>6s}")
    for row in table:
        key = (str(row["method"]), str(row["modality"]))
        paper = PAPER_TABLE1.get(key)
        pz, pm = ("%6.2f" % paper[0], "%6.2f" % paper[1]) if paper else ("     -",) * 2
        print(f"  {key[0]:6s} {key[1]:16s} {float(row['Z']):7.3f} {pz}  "
              f"{float(row['LOG_MSTAR']):9.3f} {pm}")
    acc = summary["retrieval"]
    print(f"\ncross-modal retrieval on {acc['n_test']} held-out galaxies: "
          f"image->spectrum top-1 {acc['image_to_spectrum_top1']:.3f}, "
          f"top-5 {acc['image_to_spectrum_top5']:.3f}; spectrum->image top-1 "
          f"{acc['spectrum_to_image_top1']:.3f} (chance {acc['chance_top1']:.4f})")
    print("\ntargets:")
    for name, ok in summary["targets"].items():
        print(f"  [{'x' if ok else ' '}] {name}")
    print(f"\ntotal {summary['total_seconds']:.0f} s wall, {summary['cpu_seconds']:.0f} s "
          f"process CPU; report in {Path(summary['model']).parent}")


def _figures(out, survey, data, test, table, predictions, truth):
    from .data.paired import read_paired_dataset
    from .plotting.properties import plot_embedding_map, plot_predicted_vs_true
    from .plotting.retrieval import plot_retrieval

    figs = out / "figures"
    rows = np.flatnonzero(test)
    n_show = min(len(rows), 400)
    tab, arrays = read_paired_dataset(survey, rows=None, fields=("flux", "image"))
    lookup = {int(t): i for i, t in enumerate(tab["targetid"])}
    sel = np.array([lookup[int(t)] for t in data["targetid"][rows[:n_show]]])
    images, spectra = arrays["image"][sel], arrays["flux"][sel]
    img = data["embeddings"]["image"][rows[:n_show]]
    spec = data["embeddings"]["spectrum"][rows[:n_show]]
    z = np.asarray(tab["Z"])[sel]
    for q, modality in ((0, "image"), (1, "spectrum")):
        fig = plot_retrieval(q, images=images, spectra=spectra, image_embeddings=img,
                             spectrum_embeddings=spec, query_modality=modality,
                             k=min(4, n_show - 1), redshifts=z)
        _save(fig, figs / f"retrieval_{modality}_query.png")
    for prop, label in (("Z", "redshift"), ("LOG_MSTAR", r"log$_{10}$ M$_*$/M$_\odot$")):
        for method in ("k-NN", "MLP"):
            preds = {key: p for key, p in predictions.items() if key[0] == method}
            if preds:
                fig = plot_predicted_vs_true(truth, preds, name=prop, label=label)
                _save(fig, figs / f"predicted_vs_true_{prop.lower()}_{method.lower()}.png"
                      .replace("-", ""))
    for modality in ("image", "spectrum"):
        fig = plot_embedding_map(data["embeddings"][modality][test],
                                 np.asarray(data["targets"]["Z"])[test], label="redshift")
        _save(fig, figs / f"embedding_map_{modality}.png")
    from .plotting.training import plot_training_curves

    for run in ("spectrum_model", "image_model", "model"):
        if (out / run / "logs" / "metrics.csv").exists():
            _save(plot_training_curves(out / run), figs / f"training_{run}.png")
