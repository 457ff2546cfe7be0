"""Masked-segment pretraining of the spectrum transformer.

The model sees each training spectrum with contiguous runs of tokens zeroed
(the paper: 6 runs of 30 tokens; the released model: 6 runs of 50 tokens, one
inside each sixth of the sequence) and is trained to predict them: mean squared
error on the zeroed data entries only (`astroclip.models.spectrum.masked_mse`).
Optimisation: AdamW with linear warm-up then cosine decay, gradient clipping,
through Lightning (CPU, one or several GPUs with DDP, bf16 mixed precision on
GPUs), with a validation loss, atomic checkpoints and exact resume (see
`astroclip.training.trainer`).  The final weights are written in our
safetensors + JSON format.
"""

from pathlib import Path

import numpy as np
import torch

from ..models import factory
from ..models.spectrum import SpectrumEmbedder, SpectrumEncoder, masked_mse
from .schedule import adamw_warmup_cosine
from .sampling import resolve_dataset, step_generator, StepDataModule, train_val_sets
from .runs import check_resume_config, check_resume_run, check_run_folder, save_run
from .options import RunOptions, split_batch
from .trainer import pl, default_periods, fit_resumable
from ..exceptions import InputError

__all__ = ["SpectrumPretraining", "SpectraDataModule", "FluxDataset", "collate_spectra",
           "pretrain_spectra", "BottleneckDecoder", "TARGETS"]


class FluxDataset(torch.utils.data.Dataset):
    """Items ``{"spectrum": flux_row}`` from an in-memory (N, n_pixels) array.

    Parameters
    ----------
    flux : array
        (N, n_pixels) observed flux.
    model : array, optional
        (N, n_pixels) noiseless flux of the same spectra (items get
        ``"spectrum_model"``: the target of denoising pretraining).
    ivar : array, optional
        (N, n_pixels) inverse variance (items get ``"spectrum_ivar"``).

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.training.spectra import FluxDataset
    >>> FluxDataset(np.ones((3, 7781)))[0]["spectrum"].shape
    torch.Size([7781])
    >>> sorted(FluxDataset(np.ones((3, 7781)), model=np.ones((3, 7781)))[0])
    ['spectrum', 'spectrum_model']
    """

    def __init__(self, flux, *, model=None, ivar=None):
        flux = torch.as_tensor(np.asarray(flux), dtype=torch.float32)
        if flux.ndim != 2:
            raise ValueError(f"flux must have shape (N, pixels), got {tuple(flux.shape)}")
        self.flux = flux
        self.extra = {}
        for key, arr in (("spectrum_model", model), ("spectrum_ivar", ivar)):
            if arr is None:
                continue
            arr = torch.as_tensor(np.asarray(arr), dtype=torch.float32)
            if arr.shape != flux.shape:
                raise ValueError(f"{key} has shape {tuple(arr.shape)} but flux has "
                                 f"{tuple(flux.shape)}; give one row per spectrum")
            self.extra[key] = arr

    @classmethod
    def from_arrays(cls, arrays):
        """From a dict with ``flux`` (and ``flux_model``, ``ivar``), e.g. of
        `astroclip.simulate.simulate_spectra`."""
        if "flux" not in arrays:
            raise ValueError(f"the arrays need a 'flux' entry, got {sorted(arrays)}")
        return cls(arrays["flux"], model=arrays.get("flux_model"), ivar=arrays.get("ivar"))

    def __len__(self):
        return self.flux.shape[0]

    def __getitem__(self, i):
        item = {"spectrum": self.flux[i]}
        for key, arr in self.extra.items():
            item[key] = arr[i]
        return item


def collate_spectra(items):
    """Stack the ``"spectrum"`` (and ``"spectrum_model"``, ``"spectrum_ivar"``) entries
    of dataset items into (B, n_pixels) tensors."""
    try:
        out = {"spectrum": torch.stack([torch.as_tensor(it["spectrum"]) for it in items])}
    except (KeyError, TypeError, IndexError):
        keys = sorted(items[0]) if items and isinstance(items[0], dict) else type(items[0])
        raise ValueError(f"dataset items must be dicts with a 'spectrum' entry (flux on the "
                         f"DESI grid); got {keys}") from None
    for key in ("spectrum_model", "spectrum_ivar"):
        if key in items[0]:
            out[key] = torch.stack([torch.as_tensor(it[key]) for it in items])
    return out


def _as_dataset(data, split):
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return FluxDataset(data)
    if isinstance(data, dict):
        return FluxDataset.from_arrays(data)
    return resolve_dataset(data, split=split)


class SpectraDataModule(StepDataModule):
    """Step-indexed training loader and a plain validation loader of spectra."""

    collate_fn = staticmethod(collate_spectra)


#: Pretraining targets: ``"observed"`` (the paper: the masked tokens of the input
#: itself) or ``"model"`` (the noiseless spectrum of the same galaxy, standardised
#: with the statistics of the observed one: masked prediction of a denoised target).
TARGETS = ("observed", "model")


class BottleneckDecoder(torch.nn.Module):
    """Decoder of the pooled embedding back to the clean spectrum (a pretraining head).

    ``Linear(d -> hidden) - GELU - Linear(hidden -> n_bins + 2)``: the standardised
    noiseless spectrum averaged in bins of ``bin`` pixels, then ``asinh(mu)`` and
    ``log(sigma)`` of the observed spectrum (so the embedding keeps the amplitude).

    Examples
    --------
    >>> import torch
    >>> from astroclip.training.spectra import BottleneckDecoder
    >>> BottleneckDecoder(16, hidden=32, bin=4)(torch.zeros(2, 16)).shape
    torch.Size([2, 1947])
    """

    def __init__(self, embed_dim, *, hidden=512, bin=4, n_pixels=7781):
        super().__init__()
        self.bin = int(bin)
        self.n_bins = int(n_pixels) // self.bin
        self.net = torch.nn.Sequential(torch.nn.Linear(int(embed_dim), int(hidden)),
                                       torch.nn.GELU(),
                                       torch.nn.Linear(int(hidden), self.n_bins + 2))

    def targets(self, clean, mu, sigma):
        """Targets (B, n_bins + 2) from the standardised clean flux and the statistics."""
        b = clean.shape[0]
        binned = clean[:, :self.n_bins * self.bin].reshape(b, self.n_bins, self.bin).mean(-1)
        return torch.cat([binned, torch.asinh(mu), torch.log(sigma)], dim=1)

    def forward(self, z):
        return self.net(z)


class SpectrumPretraining(pl.LightningModule):
    """LightningModule of the masked-segment pretraining.

    Parameters
    ----------
    model_config : dict
        `~astroclip.models.spectrum.SpectrumEncoder` keyword arguments
        (its ``mask_*`` entries set the masking).
    lr : float, optional
        Peak AdamW learning rate (released: 1e-5 over a long run).
    weight_decay : float, optional
        AdamW weight decay on matrices (not on biases and LayerNorms).
    betas : tuple of float, optional
        AdamW betas (released: 0.9, 0.95).
    warmup_steps, max_steps : int
        Linear warm-up, then cosine decay until ``max_steps``.
    min_lr_ratio : float, optional
        Final learning rate as a fraction of ``lr``.
    seed : int, optional
        Seed of the validation masks (training masks come from torch's
        generator, re-seeded every micro-batch by the trainer).
    target : {"observed", "model"}, optional
        What the masked tokens are scored against (`TARGETS`): the input's
        own tokens (the paper) or the tokens of the noiseless spectrum
        (batches need ``"spectrum_model"``).
    renoise : bool, optional
        Train on a fresh noise draw around ``"spectrum_model"`` at every step
        (Gaussian with the variance ``1 / "spectrum_ivar"``, zero where ivar is
        0): every pass sees new noise, as if the galaxies were observed again.
    bottleneck : dict, optional
        Also train the cross-attention pooling head (``pooling``:
        `~astroclip.models.heads.CrossAttentionHead` arguments) through a
        `BottleneckDecoder` (``hidden``, ``bin``) reconstructing the clean
        spectrum from the pooled embedding, with loss weight ``weight`` (1): a
        nonlinear PCA of the clean spectrum.  The saved model is then a
        `~astroclip.models.spectrum.SpectrumEmbedder`.
    """

    def __init__(self, model_config, *, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95),
                 warmup_steps=100, max_steps=1000, min_lr_ratio=0.0, seed=0, target="observed",
                 renoise=False, bottleneck=None):
        super().__init__()
        self.save_hyperparameters()
        if target not in TARGETS:
            raise InputError(f"unknown pretraining target {target!r}; choose one of {TARGETS}")
        if bottleneck is not None:
            bottleneck = dict(bottleneck)
            pooling = dict(bottleneck.get("pooling", dict(embed_dim=128, num_heads=4,
                                                          residual=True)))
            self.embedder = SpectrumEmbedder(backbone=model_config, pooling=pooling)
            self.model = self.embedder.backbone
            self.decoder = BottleneckDecoder(self.embedder.pooling.embed_dim,
                                             hidden=bottleneck.get("hidden", 512),
                                             bin=bottleneck.get("bin", 4),
                                             n_pixels=self.model.n_pixels)
            self.bottleneck_weight = float(bottleneck.get("weight", 1.0))
        else:
            self.model = SpectrumEncoder(**model_config)
            self.embedder = None

    def forward(self, flux):
        return self.model(flux)

    @property
    def trained_model(self):
        """What `pretrain_spectra` saves: the encoder, or the embedder with a bottleneck."""
        return self.model if self.embedder is None else self.embedder

    def _inputs(self, batch, generator=None):
        flux = batch["spectrum"]
        needs_model = self.hparams.target == "model" or self.hparams.renoise \
            or self.embedder is not None
        if needs_model and "spectrum_model" not in batch:
            raise InputError("this pretraining needs the noiseless spectra: give data whose "
                             "items have 'spectrum_model' (astroclip.simulate.simulate_spectra "
                             "arrays, MockSurveyDataset(model_flux=True))")
        if self.hparams.renoise:
            if "spectrum_ivar" not in batch:
                raise InputError("renoise=True needs 'spectrum_ivar' in the items")
            ivar = batch["spectrum_ivar"]
            sd = torch.where(ivar > 0, ivar.clamp_min(1e-30).rsqrt(), torch.zeros_like(ivar))
            noise = torch.randn(sd.shape, generator=generator, device="cpu").to(sd.device)
            flux = torch.where(ivar > 0, batch["spectrum_model"] + sd * noise,
                               torch.zeros_like(ivar))
        return flux, batch.get("spectrum_model")

    def _step(self, batch, generator=None):
        model = self.model
        flux, clean = self._inputs(batch, generator)
        flux = model.check_flux(flux)
        tokens = model.tokenize(flux, check=False)
        mask = model.random_mask(tokens.shape[0], generator=generator, device="cpu")
        mask = mask.to(tokens.device)
        hidden = model.encode_tokens(model.mask_tokens(tokens, mask))
        target = tokens
        if clean is not None:
            _, mu, sigma = model.standardize(flux)
            x_clean = (clean.float() - mu) / sigma
        if self.hparams.target == "model":
            data = torch.nn.functional.pad(x_clean.unfold(1, model.window, model.stride), (2, 0))
            target = torch.cat([tokens[:, :1], data], dim=1)
        loss = masked_mse(model.head(hidden), target, mask)
        parts = {"masked_loss": loss}
        if self.embedder is not None:
            rec = self.decoder(self.embedder.pooling(hidden))
            rec_loss = torch.nn.functional.mse_loss(rec, self.decoder.targets(x_clean, mu, sigma))
            parts["bottleneck_loss"] = rec_loss
            loss = loss + self.bottleneck_weight * rec_loss
        return loss, parts

    def training_step(self, batch, batch_idx):
        loss, parts = self._step(batch)
        n = len(batch["spectrum"])
        self.log("train_loss", loss, prog_bar=True, on_step=True, batch_size=n)
        if len(parts) > 1:
            for key, value in parts.items():
                self.log(f"train_{key}", value, on_step=True, prog_bar=False, batch_size=n)
        self.log("lr", self.lr_schedulers().get_last_lr()[0], on_step=True, prog_bar=False)
        return loss

    def validation_step(self, batch, batch_idx):
        g = step_generator(self.hparams.seed, 7, batch_idx)
        loss, _ = self._step(batch, generator=g)
        self.log("val_loss", loss, prog_bar=True, on_epoch=True, sync_dist=True,
                 batch_size=len(batch["spectrum"]))
        return loss

    def configure_optimizers(self):
        return adamw_warmup_cosine(self.parameters(), self.hparams)


def pretrain_spectra(data, *, out, preset="small", model_config=None, val_data=None,
                     max_steps=1000, batch_size=32, lr=3e-4, weight_decay=0.1,
                     betas=(0.9, 0.95), warmup_steps=None, min_lr_ratio=0.0,
                     mask_run_length=None, mask_placement=None, target="observed",
                     renoise=False, bottleneck=None, **options):
    """Pretrain a spectrum transformer by masked-segment filling.

    Parameters
    ----------
    data : path, `torch.utils.data.Dataset` or array
        Our paired HDF5 training-set file (its ``train`` rows train, its
        ``val`` rows give the validation loss), any map-style Dataset whose
        items are dicts with a ``"spectrum"`` entry (flux on the DESI grid),
        an (N, 7781) flux array, or a dict of arrays ``flux`` (and
        ``flux_model``, ``ivar``: `astroclip.simulate.simulate_spectra`).
    out : path
        Run folder: ``last.ckpt`` (resumable checkpoint), ``logs/`` and, at
        the end, ``model.safetensors`` + ``config.json``.
    preset : str, optional
        Spectrum preset (``"small"``, ``"paper"``, ``"released"``).
    model_config : dict, optional
        Overrides of the preset's `~astroclip.models.spectrum.SpectrumEncoder`
        arguments.
    val_data : Dataset or array, optional
        Validation set when ``data`` is not a file.
    max_steps : int, optional
        Optimizer steps.
    batch_size : int, optional
        Spectra per optimizer step, all devices and accumulation micro-batches
        together.
    lr, weight_decay, betas : optional
        AdamW settings (the released run: 1e-5, 0.1, (0.9, 0.95)).
    warmup_steps : int, optional
        Linear warm-up steps (default: 5 % of ``max_steps``, at most 2000).
    min_lr_ratio : float, optional
        Final learning rate of the cosine, as a fraction of ``lr``.
    mask_run_length : int, optional
        Tokens per masked run, overriding the preset's (paper 30, released 50).
    mask_placement : {"anywhere", "per_section"}, optional
        Masked runs anywhere (the paper) or one per sixth of the spectrum (the
        released model), overriding the preset's.
    target : {"observed", "model"}, optional
        Masked tokens scored against the input (the paper) or against the
        noiseless spectrum of the same galaxy (``"model"``, a denoised target;
        the data need ``flux_model``).  See `SpectrumPretraining`.
    renoise : bool, optional
        A fresh noise draw around ``flux_model`` at every step (needs ``ivar``).
    bottleneck : dict, optional
        Train the pooling head too, through a decoder of the clean spectrum
        (`SpectrumPretraining`); the result is then a
        `~astroclip.models.spectrum.SpectrumEmbedder` that `astroclip.align`
        takes as ``spectrum_model`` (and can freeze whole, ``freeze={"spectrum":
        "all"}``).
    **options
        The options every stage shares (`~astroclip.training.options.RunOptions`):
        ``accumulate``, ``checkpoint_every``, ``val_every`` (default: a tenth of
        the run, at most 1000 steps), ``seed``, ``workers``, ``device``,
        ``accelerator``, ``devices``, ``strategy``, ``precision``, ``progress``,
        ``resume``, ``overwrite``, ``callbacks``...

    Returns
    -------
    `~astroclip.models.spectrum.SpectrumEncoder` or `~astroclip.models.spectrum.SpectrumEmbedder`
        The trained model (CPU, evaluation mode); also saved in ``out``.

    Examples
    --------
    >>> from astroclip import pretrain_spectra
    >>> model = pretrain_spectra("train.h5", out="run/", preset="small",
    ...                          max_steps=2000)  # doctest: +SKIP
    """
    out = Path(out)
    config = factory.model_config(preset, family="spectrum")
    config.update(model_config or {})
    if mask_run_length is not None:
        config["mask_run_length"] = int(mask_run_length)
    if mask_placement is not None:
        config["mask_placement"] = mask_placement
    with torch.device("meta"):
        SpectrumEncoder(**config)  # validates the configuration cheaply
    if max_steps < 1:
        raise InputError(f"max_steps must be >= 1, got {max_steps}")
    opts = RunOptions.from_options(**options)

    if target not in TARGETS:
        raise InputError(f"unknown pretraining target {target!r}; choose one of {TARGETS}")
    ckpt = check_run_folder(out, resume=opts.resume, overwrite=opts.overwrite)
    check_resume_config(ckpt, "model_config", config)
    recipe = dict(target=target, renoise=bool(renoise),
                  bottleneck=None if bottleneck is None else dict(bottleneck))
    check_resume_run(out, ckpt, data=data["flux"] if isinstance(data, dict) else data, lr=lr,
                     batch_size=batch_size, seed=opts.seed, **recipe)

    train_set, val_set = train_val_sets(data, val_data, resolve=_as_dataset)
    micro = split_batch(batch_size, opts.world_size(), opts.accumulate, what="spectra",
                        n_train=len(train_set))
    checkpoint_every, val_every = default_periods(max_steps, opts.checkpoint_every,
                                                  opts.val_every)
    if warmup_steps is None:
        warmup_steps = min(2000, max(1, max_steps // 20))

    trainer = opts.trainer(out, max_steps=max_steps, checkpoint_every=checkpoint_every,
                           val_every=val_every if val_set is not None else None,
                           log_every_n_steps=max(1, min(50, max_steps // 10)))
    module = SpectrumPretraining(config, lr=lr, weight_decay=weight_decay, betas=tuple(betas),
                                 warmup_steps=warmup_steps, max_steps=max_steps,
                                 min_lr_ratio=min_lr_ratio, seed=opts.seed, **recipe)
    datamodule = SpectraDataModule(train_set, val_set, batch_size=micro, seed=opts.seed,
                                   workers=opts.workers)
    fit_resumable(trainer, module, datamodule, ckpt)

    return save_run(trainer, module.trained_model, out, stage="pretrain-spectra",
                    data="arrays" if isinstance(data, dict) else data, preset=preset,
                    batch_size=batch_size, lr=lr, seed=opts.seed, target=target,
                    renoise=bool(renoise))
