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
from ..models.spectrum import SpectrumEncoder, masked_mse
from .schedule import adamw_warmup_cosine
from .sampling import resolve_dataset, step_generator, StepDataModule, train_val_sets
from .runs import check_resume_config, check_resume_run, check_run_folder, save_run
from .options import RunOptions, split_batch
from .trainer import pl, default_periods, fit_resumable
from ..exceptions import InputError

__all__ = ["SpectrumPretraining", "SpectraDataModule", "FluxDataset", "collate_spectra",
           "pretrain_spectra"]


class FluxDataset(torch.utils.data.Dataset):
    """Items ``{"spectrum": flux_row}`` from an in-memory (N, n_pixels) array.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.training.spectra import FluxDataset
    >>> FluxDataset(np.ones((3, 7781)))[0]["spectrum"].shape
    torch.Size([7781])
    """

    def __init__(self, flux):
        flux = torch.as_tensor(np.asarray(flux), dtype=torch.float32)
        if flux.ndim != 2:
            raise ValueError(f"flux must have shape (N, pixels), got {tuple(flux.shape)}")
        self.flux = flux

    def __len__(self):
        return self.flux.shape[0]

    def __getitem__(self, i):
        return {"spectrum": self.flux[i]}


def collate_spectra(items):
    """Stack the ``"spectrum"`` entries of dataset items into (B, n_pixels)."""
    try:
        return {"spectrum": torch.stack([torch.as_tensor(it["spectrum"]) for it in items])}
    except (KeyError, TypeError, IndexError):
        keys = sorted(items[0]) if items and isinstance(items[0], dict) else type(items[0])
        raise ValueError(f"dataset items must be dicts with a 'spectrum' entry (flux on the "
                         f"DESI grid); got {keys}") from None


def _as_dataset(data, split):
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return FluxDataset(data)
    return resolve_dataset(data, split=split)


class SpectraDataModule(StepDataModule):
    """Step-indexed training loader and a plain validation loader of spectra."""

    collate_fn = staticmethod(collate_spectra)


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
    """

    def __init__(self, model_config, *, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95),
                 warmup_steps=100, max_steps=1000, min_lr_ratio=0.0, seed=0):
        super().__init__()
        self.save_hyperparameters()
        self.model = SpectrumEncoder(**model_config)

    def forward(self, flux):
        return self.model(flux)

    def _step(self, flux, generator=None):
        model = self.model
        tokens = model.tokenize(flux)
        mask = model.random_mask(tokens.shape[0], generator=generator, device="cpu")
        mask = mask.to(tokens.device)
        prediction = model.predict_tokens(model.mask_tokens(tokens, mask))
        return masked_mse(prediction, tokens, mask)

    def training_step(self, batch, batch_idx):
        loss = self._step(batch["spectrum"])
        self.log("train_loss", loss, prog_bar=True, on_step=True, batch_size=len(batch["spectrum"]))
        self.log("lr", self.lr_schedulers().get_last_lr()[0], on_step=True, prog_bar=False)
        return loss

    def validation_step(self, batch, batch_idx):
        g = step_generator(self.hparams.seed, 7, batch_idx)
        loss = self._step(batch["spectrum"], generator=g)
        self.log("val_loss", loss, prog_bar=True, on_epoch=True, sync_dist=True,
                 batch_size=len(batch["spectrum"]))
        return loss

    def configure_optimizers(self):
        return adamw_warmup_cosine(self.model.parameters(), self.hparams)


def pretrain_spectra(data, *, out, preset="small", model_config=None, val_data=None,
                     max_steps=1000, batch_size=32, lr=3e-4, weight_decay=0.1,
                     betas=(0.9, 0.95), warmup_steps=None, min_lr_ratio=0.0,
                     mask_run_length=None, mask_placement=None, **options):
    """Pretrain a spectrum transformer by masked-segment filling.

    Parameters
    ----------
    data : path, `torch.utils.data.Dataset` or array
        Our paired HDF5 training-set file (its ``train`` rows train, its
        ``val`` rows give the validation loss), any map-style Dataset whose
        items are dicts with a ``"spectrum"`` entry (flux on the DESI grid),
        or an (N, 7781) flux array.
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
    **options
        The options every stage shares (`~astroclip.training.options.RunOptions`):
        ``accumulate``, ``checkpoint_every``, ``val_every`` (default: a tenth of
        the run, at most 1000 steps), ``seed``, ``workers``, ``device``,
        ``accelerator``, ``devices``, ``strategy``, ``precision``, ``progress``,
        ``resume``, ``overwrite``, ``callbacks``...

    Returns
    -------
    `~astroclip.models.spectrum.SpectrumEncoder`
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

    ckpt = check_run_folder(out, resume=opts.resume, overwrite=opts.overwrite)
    check_resume_config(ckpt, "model_config", config)
    check_resume_run(out, ckpt, data=data, lr=lr, batch_size=batch_size, seed=opts.seed)

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
                                 min_lr_ratio=min_lr_ratio, seed=opts.seed)
    datamodule = SpectraDataModule(train_set, val_set, batch_size=micro, seed=opts.seed,
                                   workers=opts.workers)
    fit_resumable(trainer, module, datamodule, ckpt)

    return save_run(trainer, module.model, out, stage="pretrain-spectra", data=data,
                    preset=preset, batch_size=batch_size, lr=lr, seed=opts.seed)
