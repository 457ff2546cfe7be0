"""Contrastive alignment of an image encoder and a spectrum encoder (the CLIP stage).

`align` trains an `~astroclip.models.clip.AstroCLIP` model with the symmetric
InfoNCE loss of the paper (equation 1; fixed logit scale 15.5 as released) on
pairs of g, r, z cutouts and DESI spectra, through Lightning:

- CPU, one GPU, several GPUs or nodes (DDP: ``devices=4, strategy="ddp"``,
  launched as described in ``docs/training.rst``), bf16 mixed precision on
  GPUs;
- AdamW with linear warm-up and cosine decay, gradient clipping (1.0);
- ``batch_size`` pairs per optimizer step in total (512 by default, the paper's
  K), split over devices and gradient-accumulation micro-batches;
- random flips and rotations of the images on the device, seeded per step;
- validation every epoch (one pass over the training set): contrastive loss
  and cross-modal retrieval top-1 / top-5 accuracy over the whole validation
  split;
- tqdm progress bar, CSV (and TensorBoard when installed) logs in
  ``out/logs``, atomic checkpoints ``out/last.ckpt`` and exact resume (see
  `astroclip.training.trainer`);
- at the end, the whole aligned model in our safetensors + JSON format in
  ``out`` (`astroclip.load_model` or `astroclip.models.factory.create_model` read it back).
"""

import math
import warnings
from pathlib import Path

import torch

from ..evaluation.metrics import retrieval_scores
from ..models.clip import AstroCLIP, clip_loss
from ..models import factory
from ..models.image import ImageEncoder
from ..models.spectrum import SpectrumEmbedder, SpectrumEncoder
from ..data.augment import alignment_augment
from .schedule import adamw_warmup_cosine
from .sampling import StepDataModule, train_val_sets
from .runs import check_resume_config, check_resume_run, check_run_folder, save_run
from .options import RunOptions, split_batch
from .trainer import pl, fit_resumable
from ..exceptions import InputError

__all__ = ["AlignmentModule", "PairedDataModule", "collate_pairs", "resolve_image_encoder",
           "resolve_spectrum_encoder", "build_clip_model", "align"]


# ======================================================================== data


def collate_pairs(items):
    """Stack dataset items into ``{"image": (B, 3, H, W), "spectrum": (B, 7781)}``.

    Keeps ``"index"`` (validation bookkeeping) and ``"targetid"`` when present.

    Examples
    --------
    >>> import torch
    >>> from astroclip.training.align import collate_pairs
    >>> batch = collate_pairs([{"image": torch.zeros(3, 8, 8), "spectrum": torch.zeros(7781)}] * 2)
    >>> batch["image"].shape, batch["spectrum"].shape
    (torch.Size([2, 3, 8, 8]), torch.Size([2, 7781]))
    """
    if not items:
        raise ValueError("empty batch: the dataset has no items")
    first = items[0]
    if not isinstance(first, dict) or "image" not in first or "spectrum" not in first:
        keys = sorted(first) if isinstance(first, dict) else type(first).__name__
        raise ValueError(f"dataset items must be dicts with 'image' (3, H, W) and 'spectrum' "
                         f"(7781,) entries (astroclip.data.datasets.PairedDataset items); got "
                         f"{keys}")
    out = {}
    for key in ("image", "spectrum"):
        shapes = {tuple(torch.as_tensor(it[key]).shape) for it in items}
        if len(shapes) > 1:
            raise ValueError(f"dataset items have {key} arrays of different shapes "
                             f"{sorted(shapes)}; all items must share one shape")
        out[key] = torch.stack([torch.as_tensor(it[key], dtype=torch.float32) for it in items])
    for key in ("index", "targetid"):
        if key in first:
            out[key] = torch.stack([torch.as_tensor(it[key]) for it in items])
    return out


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = dict(self.dataset[i])
        item["index"] = torch.tensor(i, dtype=torch.int64)
        return item


class _ShardSampler(torch.utils.data.Sampler):
    """Rank ``r`` of ``w`` reads items ``r, r + w, ...``; shards padded to equal length."""

    def __init__(self, n):
        self.n = int(n)

    def _shard(self):
        world, rank = 1, 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        per = math.ceil(self.n / world)
        idx = list(range(rank, self.n, world))
        return idx + [idx[-1] if idx else 0] * (per - len(idx))

    def __iter__(self):
        return iter(self._shard())

    def __len__(self):
        return len(self._shard())


class PairedDataModule(StepDataModule):
    """Step-indexed training loader and a sharded validation loader of image-spectrum pairs."""

    collate_fn = staticmethod(collate_pairs)

    def _wrap_val(self, val):
        return _Indexed(val)

    def _val_sampler(self):
        return _ShardSampler(len(self.val_set))


# ====================================================================== module


class AlignmentModule(pl.LightningModule):
    """LightningModule of the contrastive alignment.

    Parameters
    ----------
    model : `~astroclip.models.clip.AstroCLIP`
        The model to train (its freezing policy decides what trains).
    lr, weight_decay, betas : optional
        AdamW settings (released: 1e-4, 0.05).
    warmup_steps, max_steps : int
        Linear warm-up then cosine decay until ``max_steps``.
    min_lr_ratio : float, optional
        Final learning rate as a fraction of ``lr``.
    gather_negatives : bool, optional
        Use the pairs of every process as negatives (DDP).
    augment : bool, optional
        Random flips and rotations of the images (paper).
    val_loss_batch : int, optional
        Pairs per chunk when scoring the validation loss (the global training
        batch, so that the loss has the same number of negatives as in training).
    """

    def __init__(self, model, *, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999), warmup_steps=100,
                 max_steps=1000, min_lr_ratio=0.0, gather_negatives=False, augment=True,
                 val_loss_batch=512):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.hparams["model_config"] = dict(model.config)
        self.model = model
        self.augment = alignment_augment() if augment else None
        self._val = []

    def forward(self, images, spectra):
        return self.model(images, spectra)

    def _augment(self, images):
        if self.augment is None:
            return images
        # drawn from torch's global generator, re-seeded per micro-batch by StepSeedCallback
        seed = int(torch.randint(0, 2**62, (1,)).item())
        g = torch.Generator(device=images.device)
        g.manual_seed(seed)
        return self.augment(images.float(), generator=g)

    def training_step(self, batch, batch_idx):
        images = self._augment(batch["image"])
        zi, zs = self.model(images, batch["spectrum"])
        loss = clip_loss(zi, zs, logit_scale=self.model.logit_scale, eps=self.model.norm_eps,
                         gather=self.hparams.gather_negatives)
        n = len(batch["image"])
        self.log("train_loss", loss, prog_bar=True, on_step=True, batch_size=n)
        self.log("lr", self.lr_schedulers().get_last_lr()[0], on_step=True, prog_bar=False,
                 batch_size=n)
        return loss

    def _sync_buffers(self):
        """Give every process rank 0's buffers (BatchNorm statistics).

        DDP broadcasts them from rank 0 before each training forward, but the
        last forward updates them locally; syncing before validation and at the
        end keeps all processes (and the saved model) identical."""
        if self.trainer.world_size <= 1:
            return
        for b in self.model.buffers():
            torch.distributed.broadcast(b.data, src=0)

    def on_validation_epoch_start(self):
        self._val = []
        self._sync_buffers()

    def on_train_end(self):
        self._sync_buffers()

    def validation_step(self, batch, batch_idx):
        zi, zs = self.model(batch["image"], batch["spectrum"])
        self._val.append((batch["index"], zi.float(), zs.float()))

    def on_validation_epoch_end(self):
        if not self._val:
            return
        idx = torch.cat([v[0] for v in self._val])
        zi = torch.cat([v[1] for v in self._val])
        zs = torch.cat([v[2] for v in self._val])
        self._val = []
        if self.trainer.world_size > 1:
            idx, zi, zs = (self.all_gather(t).flatten(0, 1) for t in (idx, zi, zs))
        order = torch.argsort(idx, stable=True)
        idx, zi, zs = idx[order], zi[order], zs[order]
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[1:] = idx[1:] != idx[:-1]  # shard padding repeats an index
        zi, zs = zi[keep], zs[keep]
        metrics = {f"val_{k}": v for k, v in retrieval_scores(zi, zs, k=(1, 5)).items()}
        n, chunk = len(zi), int(self.hparams.val_loss_batch)
        if n >= 2:
            starts = list(range(0, n, chunk))
            if len(starts) > 1 and n - starts[-1] < 2:
                starts.pop()  # fold a single trailing pair into the previous chunk
            ends = starts[1:] + [n]
            losses = [float(clip_loss(zi[s:e], zs[s:e], logit_scale=self.model.logit_scale,
                                      eps=self.model.norm_eps)) * (e - s)
                      for s, e in zip(starts, ends)]
            metrics["val_loss"] = sum(losses) / n
        metrics["val_pairs"] = float(n)
        # every rank holds the same gathered values: no further reduction needed
        for key, value in metrics.items():
            self.log(key, value, prog_bar=key in ("val_loss", "val_image_to_spectrum_top1"),
                     sync_dist=False, rank_zero_only=False)

    def configure_optimizers(self):
        params = list(self.model.trainable_parameters())
        if not params:
            raise InputError("the freezing policy leaves no parameter to train; use "
                             "freeze='paper' or 'none'")
        return adamw_warmup_cosine(params, self.hparams)


# ============================================================ model assembly


_TRAINED = ("local", "released", "part", "file")


def _with_alignment_head(encoder, preset):
    """A class-token encoder (converted AstroDINO) gets a fresh head shaped as ``preset``'s."""
    if getattr(encoder, "embedding", "head") != "class_token":
        return encoder
    cfg = factory.model_config(preset, family="image")
    return encoder.with_head(embed_dim=cfg.get("embed_dim"), head_heads=cfg.get("head_heads"),
                             dropout=cfg.get("dropout"))


def _not_an_encoder(side, model):
    wanted = ("an ImageEncoder (e.g. create_model('image-resnet-small'); load a bare "
              "backbone's weights into its .backbone with load_backbone_weights)"
              if side == "image" else
              "a SpectrumEncoder or SpectrumEmbedder (e.g. create_model('spectrum-small'))")
    return InputError(f"{side}_model is a {type(model).__name__}, which does not embed "
                      f"{side} data (no encode_{side}); pass {wanted}, an AstroCLIP model, a "
                      "model name (astroclip.list_models()) or a weights path")


def resolve_image_encoder(image_model, *, preset="paper"):
    """Turn ``image_model`` into an `~astroclip.models.image.ImageEncoder`.

    Names and paths are resolved by the model factory
    (`astroclip.models.factory.create_model`, family ``"image"``).

    Parameters
    ----------
    image_model : str, path or `torch.nn.Module`
        An image preset name (random initialisation); a trained model (a
        folder in our format or a registered / released name) holding an
        ``ImageEncoder`` (e.g. from `pretrain_images`; a converted
        ``astrodino.ckpt``, which embeds with its class token, gets a fresh
        cross-attention head shaped as ``preset``'s) or an ``AstroCLIP`` (its
        image side); a torchvision / MoCo v2 ResNet or DINOv2 ViT checkpoint
        file, loaded into the backbone of image preset ``preset``; or an
        ``ImageEncoder`` / ``AstroCLIP`` instance.
    preset : str, optional
        Architecture for a backbone checkpoint file.

    Returns
    -------
    encoder : `~astroclip.models.image.ImageEncoder`
    pretrained : bool

    Examples
    --------
    >>> from astroclip.training.align import resolve_image_encoder
    >>> enc, pretrained = resolve_image_encoder("resnet-small")
    >>> type(enc).__name__, pretrained
    ('ImageEncoder', False)
    """
    if isinstance(image_model, ImageEncoder):
        return _with_alignment_head(image_model, preset), True
    if isinstance(image_model, AstroCLIP):
        return image_model.image_encoder, True
    if isinstance(image_model, torch.nn.Module):
        raise _not_an_encoder("image", image_model)
    kind = factory.model_kind(image_model, family="image")
    if kind == "file":
        model = factory.create_model(preset, family="image", pretrained=image_model)
    else:
        model = factory.create_model(image_model, family="image")
    model.train()
    if isinstance(model, AstroCLIP):
        return model.image_encoder, True
    if not isinstance(model, ImageEncoder):
        raise InputError(f"{image_model} holds a {type(model).__name__}, not an image encoder; "
                         "pass a model written by pretrain_images or align, or an image preset")
    return _with_alignment_head(model, preset), kind in _TRAINED


def resolve_spectrum_encoder(spectrum_model, *, pooling):
    """Turn ``spectrum_model`` into a `~astroclip.models.spectrum.SpectrumEmbedder`.

    Names and paths are resolved by the model factory
    (`astroclip.models.factory.create_model`, family ``"spectrum"``).

    Parameters
    ----------
    spectrum_model : str, path or `torch.nn.Module`
        A spectrum preset name (random initialisation); a trained model (a
        folder in our format or a registered / released name:
        ``SpectrumEncoder`` from `pretrain_spectra`, ``SpectrumEmbedder`` or
        ``AstroCLIP``); a released ``specformer.ckpt``; or a module.
    pooling : dict
        `~astroclip.models.heads.CrossAttentionHead` arguments of the new pooling
        head when the model is a bare transformer.

    Returns
    -------
    embedder : `~astroclip.models.spectrum.SpectrumEmbedder`
    pretrained : bool

    Examples
    --------
    >>> from astroclip.training.align import resolve_spectrum_encoder
    >>> emb, pretrained = resolve_spectrum_encoder("small", pooling={"embed_dim": 32})
    >>> emb.pooling.embed_dim, pretrained
    (32, False)
    """
    def wrap(encoder):
        emb = SpectrumEmbedder(backbone=encoder.config, pooling=pooling)
        emb.backbone = encoder
        return emb

    if isinstance(spectrum_model, SpectrumEmbedder):
        return spectrum_model, True
    if isinstance(spectrum_model, SpectrumEncoder):
        return wrap(spectrum_model), True
    if isinstance(spectrum_model, AstroCLIP):
        return spectrum_model.spectrum_encoder, True
    if isinstance(spectrum_model, torch.nn.Module):
        raise _not_an_encoder("spectrum", spectrum_model)
    kind = factory.model_kind(spectrum_model, family="spectrum")
    if kind == "preset":
        backbone = factory.model_config(spectrum_model, family="spectrum")
        return SpectrumEmbedder(backbone=backbone, pooling=pooling), False
    if kind == "file":
        model = factory.create_model("specformer", pretrained=spectrum_model)
    else:
        model = factory.create_model(spectrum_model, family="spectrum")
    model.train()
    if isinstance(model, AstroCLIP):
        return model.spectrum_encoder, True
    if isinstance(model, SpectrumEmbedder):
        return model, kind in _TRAINED
    if isinstance(model, SpectrumEncoder):
        return wrap(model), kind in _TRAINED
    raise InputError(f"{spectrum_model} holds a {type(model).__name__}, not a spectrum model; "
                     "pass a model written by pretrain_spectra or align, or a spectrum preset")


def build_clip_model(*, preset="small", image_model=None, spectrum_model=None, embed_dim=None,
                     pooling=None, logit_scale=None, freeze=None, image_preset=None):
    """Assemble an `~astroclip.models.clip.AstroCLIP` from a preset and (pretrained) parts.

    Parameters
    ----------
    preset : str, optional
        Where to start: a CLIP preset giving the default architectures
        (``list_models(kind="preset", family="clip")``: ``"small"`` or
        ``"clip-small"`` ...), or a trained aligned model (registered or
        released name, or folder) whose two sides, logit scale and freezing
        policy are the defaults.
    image_model, spectrum_model : optional
        See `resolve_image_encoder` / `resolve_spectrum_encoder`; default: the
        preset's (randomly initialised) encoders, or the trained model's sides.
    embed_dim : int, optional
        Check that the image head has this width.
    pooling : dict, optional
        Overrides of the spectrum pooling head.
    logit_scale : float, optional
        Override of the preset's logit scale.
    freeze : str or dict, optional
        Override of the preset's freezing policy.
    image_preset : str, optional
        Architecture of an image backbone checkpoint file (default: the preset's).

    Returns
    -------
    model : `~astroclip.models.clip.AstroCLIP`
    pretrained : dict
        ``{"image": bool, "spectrum": bool}``.

    Examples
    --------
    >>> from astroclip.training.align import build_clip_model
    >>> model, pre = build_clip_model(preset="small")
    >>> model.embed_dim, pre
    (128, {'image': False, 'spectrum': False})
    """
    kind = factory.model_kind(preset, family="clip")
    if kind == "preset":
        cfg = factory.model_config(preset, family="clip")
        img_preset = cfg["image"] if isinstance(cfg["image"], str) else "paper"
        default_image, default_spectrum = cfg["image"], cfg["spectrum"]["backbone"]
        pool = dict(cfg["spectrum"].get("pooling", {}))
    else:
        base = factory.create_model(preset, family="clip")
        if not isinstance(base, AstroCLIP):
            raise InputError(f"preset={preset!r} holds a {type(base).__name__}, not an aligned "
                             "model; give a CLIP preset (list_models(kind='preset', "
                             "family='clip')) or an AstroCLIP model to start from, and the "
                             "pretrained sides as image_model= / spectrum_model=")
        base.train()
        cfg = dict(logit_scale=base.logit_scale, freeze=base.config.get("freeze", "paper"))
        img_preset, default_image, default_spectrum = "paper", base, base
        pool = {}
    image_model = default_image if image_model is None else image_model
    if isinstance(image_model, dict):
        image, img_pre = ImageEncoder(**image_model), False
    else:
        image, img_pre = resolve_image_encoder(image_model, preset=image_preset or img_preset)
    if embed_dim is not None and int(embed_dim) != image.embed_dim:
        raise InputError(f"embed_dim={embed_dim} but the image encoder embeds into "
                         f"{image.embed_dim} dimensions; choose an image model of that width")
    pool.update(pooling or {})
    pool["embed_dim"] = image.embed_dim
    spectrum_model = default_spectrum if spectrum_model is None else spectrum_model
    if isinstance(spectrum_model, dict):
        spectrum, spec_pre = SpectrumEmbedder(backbone=spectrum_model, pooling=pool), False
    else:
        spectrum, spec_pre = resolve_spectrum_encoder(spectrum_model, pooling=pool)
    model = AstroCLIP.from_parts(
        image, spectrum, logit_scale=cfg["logit_scale"] if logit_scale is None else logit_scale,
        freeze=cfg.get("freeze", "paper") if freeze is None else freeze)
    return model, {"image": img_pre, "spectrum": spec_pre}


# ================================================================== function


def align(data, *, out, preset="small", spectrum_model=None, image_model=None, image_preset=None,
          val_data=None, batch_size=512, max_steps=None, epochs=None, lr=1e-4,
          weight_decay=0.05, betas=(0.9, 0.999), warmup_steps=None, min_lr_ratio=0.0,
          logit_scale=None, freeze=None, pooling=None, gather_negatives=False, augment=True,
          **options):
    """Align an image encoder and a spectrum encoder with the CLIP loss.

    Parameters
    ----------
    data : path or `torch.utils.data.Dataset`
        Our paired HDF5 training-set file (its ``train`` rows train, its ``val``
        rows validate) or any map-style Dataset whose items are dicts with
        ``"image"`` (3, H, W) nanomaggies and ``"spectrum"`` (7781,) flux, such
        as `astroclip.data.datasets.PairedDataset` or the mock survey's.
    out : path
        Run folder: ``last.ckpt``, ``logs/metrics.csv`` (and TensorBoard), and at
        the end ``model.safetensors`` + ``config.json`` of the aligned model.
    preset : str or path, optional
        Where to start, resolved by the model factory
        (`astroclip.models.factory`): a CLIP preset (``"small"``,
        ``"small-vit"``, ``"paper"``, ``"released"``, also spelled
        ``"clip-small"`` ...) giving the default architectures, pooling head,
        logit scale and freezing policy; or a trained aligned model (a
        registered or released name such as ``"astroclip-released"``, or a
        folder) to continue from: its two sides, logit scale and freezing
        policy are the defaults.
    spectrum_model : str, path or module, optional
        Pretrained spectrum model: a folder from `pretrain_spectra` (or an
        aligned model), a registered or released name
        (``"specformer-released"``), a released ``specformer.ckpt``, a
        spectrum preset name (random initialisation) or a module (see
        `resolve_spectrum_encoder`).
    image_model : str, path or module, optional
        Pretrained image model: a folder from `pretrain_images` (or an aligned
        model), a registered or released name (``"astrodino-released"``), a
        torchvision / MoCo v2 ResNet-50 or DINOv2 checkpoint file
        (architecture ``image_preset``), an image preset name, or a module.
    image_preset : str, optional
        Architecture of an image checkpoint file (default: the CLIP preset's).
    val_data : Dataset, optional
        Validation pairs when ``data`` is a Dataset (a file uses its ``val`` rows).
    batch_size : int, optional
        Pairs per optimizer step, all devices and accumulation micro-batches
        together (512: the paper's K).  Each micro-batch on each device holds
        ``batch_size / (devices * accumulate)`` pairs; the loss of a micro-batch
        uses its own pairs as negatives (and those of every device with
        ``gather_negatives``).
    max_steps, epochs : int, optional
        Length of the run in optimizer steps, or in passes over the training
        set (default: the paper's 15,000 steps).
    lr, weight_decay, betas : optional
        AdamW (released: 1e-4, 0.05).
    warmup_steps : int, optional
        Linear warm-up steps (default: a tenth of the run, at most 1000).
    min_lr_ratio : float, optional
        Final learning rate of the cosine as a fraction of ``lr``.
    logit_scale : float, optional
        Fixed logit scale (default: the preset's, 15.5).
    freeze : str or dict, optional
        Freezing policy (default: the preset's, ``"paper"``): see
        `astroclip.models.clip.FREEZE_POLICIES`.
    pooling : dict, optional
        Overrides of the spectrum pooling head (``num_heads``, ``dropout``...).
    gather_negatives : bool, optional
        With several devices, use the pairs of all devices as negatives.
    augment : bool, optional
        Random flips and rotations of the images.
    **options
        The options every stage shares (`~astroclip.training.options.RunOptions`):
        ``accumulate`` (micro-batches per step, when memory is short),
        ``checkpoint_every`` (default: one epoch, at most 1000 steps),
        ``val_every`` (default: one epoch), ``seed``, ``workers``, ``device``,
        ``accelerator``, ``devices``, ``strategy``, ``precision``, ``progress``,
        ``resume``, ``overwrite``, ``deterministic``, ``callbacks``...

    Returns
    -------
    `~astroclip.models.clip.AstroCLIP`
        The aligned model (CPU, evaluation mode), also saved in ``out``.

    Raises
    ------
    ValueError
        Too few pairs for a contrastive batch, a batch size that does not split
        over devices and micro-batches, incompatible models, a checkpoint of
        another configuration.
    FileExistsError
        ``out`` holds another run and neither ``resume`` nor ``overwrite`` is set.

    Examples
    --------
    >>> from astroclip import align
    >>> model = align("train.h5", out="run/", spectrum_model="specformer/",
    ...               image_model="moco/", max_steps=15000)  # doctest: +SKIP
    """
    out = Path(out)
    opts = RunOptions.from_options(**options)
    accumulate = opts.accumulate
    ckpt = check_run_folder(out, resume=opts.resume, overwrite=opts.overwrite)
    check_resume_run(out, ckpt, data=data, lr=lr, batch_size=batch_size, seed=opts.seed)

    train_set, val_set = train_val_sets(data, val_data)
    n_train = len(train_set)
    if n_train < 2:
        raise InputError(f"the training set has {n_train} pair(s); contrastive training needs at "
                         "least 2 (each pair's negatives are the other pairs of its batch)")

    pl.seed_everything(opts.seed, verbose=False)
    model, pretrained = build_clip_model(preset=preset, image_model=image_model,
                                         spectrum_model=spectrum_model, pooling=pooling,
                                         logit_scale=logit_scale, freeze=freeze,
                                         image_preset=image_preset)
    for side in ("image", "spectrum"):
        if not pretrained[side] and model.freeze[side] != "none":
            warnings.warn(f"the {side} backbone is randomly initialised and frozen "
                          f"(freeze={model.freeze}); pass a pretrained {side}_model or "
                          "freeze='none' unless this is intended")

    world = opts.world_size()
    micro = split_batch(batch_size, world, accumulate, what="pairs", n_train=n_train)
    if micro * (world if gather_negatives else 1) < 2:
        raise InputError(f"each contrastive micro-batch would hold {micro} pair(s); increase "
                         "batch_size or lower accumulate (at least 2 pairs per loss)")
    steps_per_epoch = max(1, n_train // (micro * world * accumulate))
    if max_steps is None:
        max_steps = 15000 if epochs is None else int(epochs) * steps_per_epoch
    elif epochs is not None:
        raise InputError("give max_steps or epochs, not both")
    if max_steps < 1:
        raise InputError(f"max_steps must be >= 1, got {max_steps}")
    val_every = steps_per_epoch if opts.val_every is None else int(opts.val_every)
    checkpoint_every = (min(1000, steps_per_epoch) if opts.checkpoint_every is None
                        else int(opts.checkpoint_every))
    if warmup_steps is None:
        warmup_steps = min(1000, max(1, max_steps // 10))
    trainer = opts.trainer(out, max_steps=max_steps, checkpoint_every=checkpoint_every,
                           val_every=val_every if val_set is not None else None,
                           log_every_n_steps=max(1, min(50, max_steps // 20)))
    if int(trainer.world_size) != world:  # pragma: no cover - guards world_size
        raise RuntimeError(f"world size {trainer.world_size} differs from the expected {world}")

    module = AlignmentModule(model, lr=lr, weight_decay=weight_decay, betas=tuple(betas),
                             warmup_steps=warmup_steps, max_steps=max_steps,
                             min_lr_ratio=min_lr_ratio, gather_negatives=gather_negatives,
                             augment=augment, val_loss_batch=micro * world)
    check_resume_config(ckpt, "model_config", model.config)
    datamodule = PairedDataModule(train_set, val_set, batch_size=micro, seed=opts.seed,
                                  workers=opts.workers)
    fit_resumable(trainer, module, datamodule, ckpt)

    return save_run(trainer, module.model, out, stage="align", data=data, preset=preset,
                    batch_size=batch_size, accumulate=accumulate, world_size=world, lr=lr,
                    seed=opts.seed, pretrained=pretrained)
