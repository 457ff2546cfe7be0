"""Self-supervised pretraining of the image encoder with MoCo v2.

The paper's image embedder (Stein et al. 2021) was trained this way
(the image pretraining of the AstroCLIP paper, section 3.2): two random augmentations of each
galaxy (`astroclip.data.augment.pretraining_augment`: reddening, flips,
rotations, size scaling, PSF blur, noise, jitter and crop) go through a query
encoder and a momentum (key) encoder (exponential moving average of the query
encoder's weights, momentum 0.999); the query must pick its own key among a
queue of negatives (keys of earlier batches, 65,536 by default) under an
InfoNCE loss with temperature 0.2.  The encoders are
`~astroclip.models.image.ImageEncoder` s whose embedding head is the
projection MLP (for a ResNet: ``fc = Linear - ReLU - Linear``, the MoCo v2
layout, so the query encoder *is* a MoCo v2 ``encoder_q``).

MoCo's "shuffled BatchNorm" (keys computed on a batch order the queries never
see, so that BatchNorm statistics cannot leak the positive) is done on each
device by shuffling the key batch and normalising it in ``bn_splits`` separate
groups.  Under DDP the queue receives the keys of every process, so all
processes keep the same queue.

Training runs through Lightning like the other stages (CPU, GPUs, DDP, bf16,
warm-up + cosine, gradient clipping, atomic checkpoints, exact resume; the
queue and the key encoder are part of the checkpoint); `pretrain_images`
writes the query encoder in our safetensors + JSON format at the end, ready to
be the ``image_model`` of `astroclip.training.align.align`.
"""

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.augment import pretraining_augment
from ..evaluation.metrics import retrieval_accuracy
from ..models.image import ImageEncoder
from ..models import factory
from .schedule import warmup_cosine_scheduler
from .sampling import step_generator, StepDataModule, train_val_sets
from .runs import check_resume_config, check_resume_run, check_run_folder, save_run
from .options import RunOptions, split_batch
from .trainer import pl, default_periods, fit_resumable
from ..exceptions import InputError

__all__ = ["MoCoPretraining", "ImagesDataModule", "collate_images", "moco_loss",
           "pretrain_images"]


def collate_images(items):
    """Stack the ``"image"`` entries of dataset items into ``(B, 3, H, W)``.

    Examples
    --------
    >>> import torch
    >>> from astroclip.training.images import collate_images
    >>> collate_images([{"image": torch.zeros(3, 8, 8)}] * 2)["image"].shape
    torch.Size([2, 3, 8, 8])
    """
    if not items:
        raise ValueError("empty batch: the dataset has no items")
    if not isinstance(items[0], dict) or "image" not in items[0]:
        keys = sorted(items[0]) if isinstance(items[0], dict) else type(items[0]).__name__
        raise ValueError(f"dataset items must be dicts with an 'image' entry (3, H, W) in "
                         f"nanomaggies; got {keys}")
    shapes = {tuple(torch.as_tensor(it["image"]).shape) for it in items}
    if len(shapes) > 1:
        raise ValueError(f"dataset items have images of different shapes {sorted(shapes)}")
    return {"image": torch.stack([torch.as_tensor(it["image"], dtype=torch.float32)
                                  for it in items])}


def moco_loss(q, k, queue, *, temperature=0.2):
    """MoCo InfoNCE: each query against its key (positive) and the queue (negatives).

    Parameters
    ----------
    q, k : `torch.Tensor`
        L2-normalised queries and keys ``(B, d)``.
    queue : `torch.Tensor`
        L2-normalised negatives ``(K, d)``.
    temperature : float, optional
        Softmax temperature (0.2 in MoCo v2).

    Returns
    -------
    loss : `torch.Tensor`
        Scalar cross-entropy.
    logits : `torch.Tensor`
        ``(B, 1 + K)``, the positive first.

    Examples
    --------
    >>> import torch, torch.nn.functional as F
    >>> from astroclip.training.images import moco_loss
    >>> q = F.normalize(torch.randn(4, 8), dim=1)
    >>> loss, logits = moco_loss(q, q, F.normalize(torch.randn(16, 8), dim=1))
    >>> logits.shape
    torch.Size([4, 17])
    """
    if q.shape != k.shape:
        raise ValueError(f"queries {tuple(q.shape)} and keys {tuple(k.shape)} differ in shape")
    pos = (q * k).sum(1, keepdim=True)
    neg = q @ queue.T
    logits = torch.cat([pos, neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.float(), labels), logits


class MoCoPretraining(pl.LightningModule):
    """LightningModule of MoCo v2 on galaxy images.

    Parameters
    ----------
    encoder_config : dict
        `~astroclip.models.image.ImageEncoder` keyword arguments (the query and
        key encoders; ``embed_dim`` is the MoCo feature size, 128).
    queue_size : int, optional
        Negatives kept in the queue (65,536 in MoCo v2).
    momentum : float, optional
        Momentum of the key encoder (0.999).
    temperature : float, optional
        InfoNCE temperature (0.2).
    bn_splits : int, optional
        Groups of the shuffled-BatchNorm key pass on each device.
    optimizer : {"sgd", "adamw"}, optional
        SGD with momentum 0.9 (MoCo v2) or AdamW.
    lr, weight_decay : float, optional
        Learning rate and weight decay (MoCo v2: 0.03 for a batch of 256, 1e-4).
    warmup_steps, max_steps, min_lr_ratio : optional
        Warm-up + cosine schedule.
    seed : int, optional
        Seed of the initial queue and of the validation augmentations.
    augment_options : dict, optional
        Keyword arguments of `astroclip.data.augment.pretraining_augment`
        (``max_shift``, ``scale_range``, ``ebv_range``, ``blur``, ``noise``, ...).
    """

    def __init__(self, encoder_config, *, queue_size=65536, momentum=0.999, temperature=0.2,
                 bn_splits=2, optimizer="sgd", lr=0.03, weight_decay=1e-4, warmup_steps=100,
                 max_steps=1000, min_lr_ratio=0.0, seed=0, augment_options=None):
        super().__init__()
        if optimizer not in ("sgd", "adamw"):
            raise InputError(f"optimizer={optimizer!r} must be 'sgd' or 'adamw'")
        if not 0.0 <= momentum <= 1.0:
            raise InputError(f"momentum must be in [0, 1], got {momentum}")
        self.save_hyperparameters()
        self.encoder_q = ImageEncoder(**encoder_config)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        d = self.encoder_q.embed_dim
        g = torch.Generator().manual_seed(int(seed))
        self.register_buffer("queue", F.normalize(torch.randn(int(queue_size), d, generator=g),
                                                  dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.augment = pretraining_augment(self.encoder_q.crop_size, **(augment_options or {}))

    # ------------------------------------------------------------ MoCo pieces
    @torch.no_grad()
    def _momentum_update(self):
        m = self.hparams.momentum
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def _keys(self, images, generator):
        """Key embeddings with shuffled, split BatchNorm; returned in the input order."""
        b = images.shape[0]
        perm = torch.randperm(b, generator=generator, device=images.device)
        splits = max(1, min(int(self.hparams.bn_splits), b))
        shuffled = images[perm]
        k = torch.cat([self.encoder_k(chunk) for chunk in shuffled.chunk(splits)])
        out = torch.empty_like(k)
        out[perm] = k
        return F.normalize(out.float(), dim=1)

    @torch.no_grad()
    def _enqueue(self, keys):
        if self._trainer is not None and self.trainer.world_size > 1:
            keys = self.all_gather(keys).flatten(0, 1)
        n, size = keys.shape[0], self.queue.shape[0]
        keys = keys[-size:]
        idx = (int(self.queue_ptr) + torch.arange(len(keys), device=keys.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + n) % size)

    def _views(self, images, generator):
        images = images.float()
        return self.augment(images, generator=generator), self.augment(images, generator=generator)

    def training_step(self, batch, batch_idx):
        images = batch["image"]
        if images.shape[0] < 2:
            raise ValueError("MoCo needs at least 2 images per batch")
        seed = int(torch.randint(0, 2**62, (1,)).item())  # global RNG: re-seeded per micro-batch
        g = torch.Generator(device=images.device)
        g.manual_seed(seed)
        xq, xk = self._views(images, g)
        q = F.normalize(self.encoder_q(xq).float(), dim=1)
        self._momentum_update()
        k = self._keys(xk, g)
        loss, logits = moco_loss(q, k, self.queue.clone().detach(),
                                 temperature=self.hparams.temperature)
        self._enqueue(k)
        n = images.shape[0]
        acc = (logits.argmax(1) == 0).float().mean()
        self.log("train_loss", loss, prog_bar=True, on_step=True, batch_size=n)
        self.log("train_pos_top1", acc, prog_bar=False, on_step=True, batch_size=n)
        self.log("lr", self.lr_schedulers().get_last_lr()[0], on_step=True, batch_size=n)
        return loss

    # ------------------------------------------------------------ validation
    def on_validation_epoch_start(self):
        self._val = []

    def validation_step(self, batch, batch_idx):
        g = step_generator(self.hparams.seed, 11, batch_idx, device=batch["image"].device)
        xq, xk = self._views(batch["image"], g)
        q = F.normalize(self.encoder_q(xq).float(), dim=1)
        k = F.normalize(self.encoder_k(xk).float(), dim=1)
        loss, _ = moco_loss(q, k, self.queue, temperature=self.hparams.temperature)
        self.log("val_loss", loss, prog_bar=True, on_epoch=True, sync_dist=True,
                 batch_size=len(q))
        self._val.append((q, k))

    def on_validation_epoch_end(self):
        if not getattr(self, "_val", None):
            return
        q = torch.cat([v[0] for v in self._val])
        k = torch.cat([v[1] for v in self._val])
        self._val = []
        if len(q) >= 2:
            acc = retrieval_accuracy(q, k, k=(1, 5))["accuracy"]
            # view-to-view retrieval: does one augmentation find the other among the batch?
            self.log("val_view_top1", float(acc[0]), sync_dist=True)
            self.log("val_view_top5", float(acc[1]), sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.encoder_q.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        sched = warmup_cosine_scheduler(opt, warmup_steps=hp.warmup_steps,
                                        total_steps=hp.max_steps, min_lr_ratio=hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ImagesDataModule(StepDataModule):
    """Step-indexed training loader and a plain validation loader of images."""

    collate_fn = staticmethod(collate_images)


def pretrain_images(data, *, preset, out, model_config=None, val_data=None, max_steps=1000,
                    batch_size=256, queue_size=65536, momentum=0.999, temperature=0.2,
                    bn_splits=2, optimizer="sgd", lr=None, weight_decay=1e-4,
                    warmup_steps=None, min_lr_ratio=0.0, augment_options=None, **options):
    """Pretrain an image encoder with MoCo v2 on galaxy cutouts.

    Parameters
    ----------
    data : path or `torch.utils.data.Dataset`
        Our paired HDF5 file (``train`` rows train, ``val`` rows validate) or
        any map-style Dataset whose items are dicts with an ``"image"`` entry
        (3, H, W) in nanomaggies (H, W larger than the crop, 152 as stored).
    preset : str
        Image preset (``"paper"``: ResNet-50 with the 2048 -> 2048 -> 128
        projection MLP; ``"resnet-small"``, ``"vit-small"``, ...).
    out : path
        Run folder: ``last.ckpt``, ``logs/``, then ``model.safetensors`` +
        ``config.json`` of the query encoder.
    model_config : dict, optional
        Overrides of the preset's `~astroclip.models.image.ImageEncoder` arguments.
    val_data : Dataset, optional
        Validation images when ``data`` is a Dataset.
    max_steps : int, optional
        Optimizer steps.
    batch_size : int, optional
        Images per optimizer step, all devices and accumulation micro-batches
        together (MoCo v2: 256).
    queue_size, momentum, temperature : optional
        MoCo v2: 65,536 negatives, 0.999, 0.2.  The queue may not be smaller
        than one global batch.
    bn_splits : int, optional
        Shuffled-BatchNorm groups of the key pass.
    optimizer : {"sgd", "adamw"}, optional
        SGD with momentum (MoCo v2) or AdamW.
    lr : float, optional
        Learning rate (default: ``0.03 * batch_size / 256`` for SGD, 1e-3 for AdamW).
    weight_decay : float, optional
        Weight decay (MoCo v2: 1e-4).
    warmup_steps : int, optional
        Linear warm-up (default: 5 % of the run).
    min_lr_ratio : float, optional
        Final learning rate of the cosine, as a fraction of ``lr``.
    augment_options : dict, optional
        Options of the augmentations (`astroclip.data.augment.pretraining_augment`).
    **options
        The options every stage shares (`~astroclip.training.options.RunOptions`):
        ``accumulate``, ``checkpoint_every``, ``val_every`` (default: a tenth of
        the run, at most 1000 steps), ``seed``, ``workers``, ``device``,
        ``accelerator``, ``devices``, ``strategy``, ``precision``, ``progress``,
        ``resume``, ``overwrite``, ``callbacks``...

    Returns
    -------
    `~astroclip.models.image.ImageEncoder`
        The query encoder (CPU, evaluation mode), also saved in ``out``.

    Examples
    --------
    >>> from astroclip import pretrain_images
    >>> enc = pretrain_images("train.h5", preset="resnet-small", out="moco/",
    ...                       max_steps=5000)  # doctest: +SKIP
    """
    out = Path(out)
    config = factory.model_config(preset, family="image")
    config.update(model_config or {})
    with torch.device("meta"):
        ImageEncoder(**config)  # validates the configuration cheaply
    if max_steps < 1:
        raise InputError(f"max_steps must be >= 1, got {max_steps}")
    opts = RunOptions.from_options(**options)

    ckpt = check_run_folder(out, resume=opts.resume, overwrite=opts.overwrite)
    check_resume_config(ckpt, "encoder_config", config, what="encoder configuration")

    train_set, val_set = train_val_sets(data, val_data)
    if len(train_set) < 2:
        raise InputError(f"the training set has {len(train_set)} image(s); MoCo needs at least 2")
    world = opts.world_size()
    micro = split_batch(batch_size, world, opts.accumulate, what="images",
                        n_train=len(train_set), minimum=2)
    if queue_size < micro * world:
        raise InputError(f"queue_size={queue_size} is smaller than the keys of one step "
                         f"({micro * world}); enlarge the queue")
    if lr is None:
        lr = 0.03 * batch_size / 256 if optimizer == "sgd" else 1e-3
    check_resume_run(out, ckpt, data=data, lr=lr, batch_size=batch_size, seed=opts.seed)
    checkpoint_every, val_every = default_periods(max_steps, opts.checkpoint_every,
                                                  opts.val_every)
    if warmup_steps is None:
        warmup_steps = max(1, max_steps // 20)
    trainer = opts.trainer(out, max_steps=max_steps, checkpoint_every=checkpoint_every,
                           val_every=val_every if val_set is not None else None,
                           log_every_n_steps=max(1, min(50, max_steps // 20)))
    pl.seed_everything(opts.seed, verbose=False)
    module = MoCoPretraining(config, queue_size=queue_size, momentum=momentum,
                             temperature=temperature, bn_splits=bn_splits, optimizer=optimizer,
                             lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                             max_steps=max_steps, min_lr_ratio=min_lr_ratio, seed=opts.seed,
                             augment_options=augment_options)
    datamodule = ImagesDataModule(train_set, val_set, batch_size=micro, seed=opts.seed,
                                  workers=opts.workers)
    fit_resumable(trainer, module, datamodule, ckpt)

    return save_run(trainer, module.encoder_q, out, stage="pretrain-images", data=data,
                    method="MoCo v2", preset=preset, batch_size=batch_size, world_size=world,
                    queue_size=queue_size, lr=lr, seed=opts.seed)
