"""Pieces shared by the three training stages (spectra, images, alignment).

The contract
------------
Every stage is a `lightning.pytorch.LightningModule` trained by the trainer
that `build_trainer` makes.  What it guarantees:

**Schedule.** `warmup_cosine_scheduler` gives AdamW a linear warm-up followed by
a cosine decay down to ``min_lr_ratio`` times the base rate, stepped once per
optimizer step (``interval="step"`` in ``configure_optimizers``).

**Checkpoints.** `AtomicCheckpoint` writes ``<out_dir>/last.ckpt`` every N
optimizer steps and at the end of training, through
``trainer.save_checkpoint`` into a temporary file that is moved into place with
`os.replace` by rank 0 only (all ranks take part in the save and in the
barriers around it, so it is safe under DDP).  A reader never sees a
half-written checkpoint.  `find_resume_checkpoint` returns that file when it
exists.

**Exact resume.** Lightning does not fast-forward an ordinary sampler to the
middle of an epoch, so stages do not use epochs at all.  The training data is
one infinite stream indexed by the *micro-batch number* ``b`` (optimizer steps
times ``accumulate_grad_batches``): `StepBatchSampler` makes the items of
micro-batch ``b`` a pure function of ``(seed, b, rank, world_size)`` (item
order: one seeded permutation of the dataset per pass, concatenated; each rank
takes its own slice of every global batch).  When training resumes, the
sampler starts from ``trainer.global_step * accumulate_grad_batches`` (read
lazily when the data loader is iterated, i.e. after Lightning has restored the
checkpoint).  `StepSeedCallback` re-seeds torch's global generator at the start
of every micro-batch from ``(seed, b, rank)`` so dropout is reproducible too,
and `step_generator` gives a `torch.Generator` seeded the same way for explicit
random draws (masks, augmentations done in ``training_step``).  Optimizer and
scheduler states are in the checkpoint.  Together these make "killed mid-way
and resumed" end with the same weights as an uninterrupted run (bitwise on
CPU with the same thread count).  Datasets used for training should therefore
be deterministic per index; do random augmentations on the batch inside
``training_step`` with `step_generator`.

**Trainer.** `build_trainer` sets bf16 mixed precision on GPUs and fp32 on the
CPU, gradient clipping (1.0), a validation every ``val_every`` steps, a tqdm
progress bar (optional), a CSV logger (plus TensorBoard when it is installed)
under ``<out_dir>/logs``, and ``use_distributed_sampler=False`` (our sampler
shards by rank itself).  Multi-GPU training is Lightning DDP (``devices=N``,
``strategy="ddp"``), never home-made.
"""

import contextlib
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .._config import conf
from .._optional import require
from ..exceptions import (DataFileError, DeviceUnavailableError, InputError,
                          ResumeMismatchError)

pl = require("lightning.pytorch", purpose="training")
from lightning.pytorch.accelerators import CUDAAccelerator  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

__all__ = [
    "WarmupCosine", "warmup_cosine_lambda", "warmup_cosine_scheduler", "adamw_warmup_cosine",
    "step_seed", "step_generator", "StepBatchSampler", "build_train_loader",
    "StepDataModule", "fit_resumable", "StepSeedCallback", "AtomicCheckpoint",
    "find_resume_checkpoint", "check_run_folder",
    "checkpoint_hparams", "check_resume_config", "check_resume_run", "data_identity",
    "RUN_RECORD", "train_val_sets", "default_periods",
    "resolve_accelerator", "world_size", "save_run", "build_trainer",
    "resolve_precision", "resolve_dataset", "lightning_quiet", "CHECKPOINT_NAME",
]

#: File name of the resumable checkpoint inside a run folder.
CHECKPOINT_NAME = "last.ckpt"


# ------------------------------------------------------------------ schedule
class WarmupCosine:
    """Learning-rate factor: linear warm-up, then cosine decay.

    ``factor(step) = (step + 1) / warmup_steps`` during the warm-up, then
    ``min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * t)) / 2`` with ``t``
    going from 0 to 1 between ``warmup_steps`` and ``total_steps`` (and staying
    at ``min_lr_ratio`` after).  A plain object (not a closure) so that it
    pickles and its state is saved with the scheduler.
    """

    def __init__(self, *, warmup_steps, total_steps, min_lr_ratio=0.0):
        if warmup_steps < 0 or total_steps < 1:
            raise InputError(f"need warmup_steps >= 0 and total_steps >= 1, got "
                             f"{warmup_steps} and {total_steps}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise InputError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step):
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_cosine_lambda(*, warmup_steps, total_steps, min_lr_ratio=0.0):
    """The learning-rate factor function of a warm-up + cosine schedule.

    Parameters
    ----------
    warmup_steps : int
        Steps of linear warm-up (0 for none).
    total_steps : int
        Step at which the cosine reaches ``min_lr_ratio``.
    min_lr_ratio : float, optional
        Final learning rate as a fraction of the base rate.

    Returns
    -------
    `WarmupCosine`
        Callable ``step -> factor``.

    Examples
    --------
    >>> from astroclip.training.common import warmup_cosine_lambda
    >>> f = warmup_cosine_lambda(warmup_steps=10, total_steps=110)
    >>> f(0), f(9), round(f(60), 3), f(110)
    (0.1, 1.0, 0.5, 0.0)
    """
    return WarmupCosine(warmup_steps=warmup_steps, total_steps=total_steps,
                        min_lr_ratio=min_lr_ratio)


def warmup_cosine_scheduler(optimizer, *, warmup_steps, total_steps, min_lr_ratio=0.0):
    """A `torch.optim.lr_scheduler.LambdaLR` with `warmup_cosine_lambda`.

    Step it once per optimizer step (Lightning: ``"interval": "step"``).

    Examples
    --------
    >>> import torch
    >>> from astroclip.training.common import warmup_cosine_scheduler
    >>> opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    >>> sched = warmup_cosine_scheduler(opt, warmup_steps=4, total_steps=10)
    >>> opt.param_groups[0]["lr"]
    0.00025
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine_lambda(warmup_steps=warmup_steps, total_steps=total_steps,
                                        min_lr_ratio=min_lr_ratio))


def adamw_warmup_cosine(params, hparams):
    """AdamW with weight decay on matrices only, under the warm-up + cosine schedule.

    ``hparams`` holds ``lr``, ``betas``, ``weight_decay``, ``warmup_steps``,
    ``max_steps`` and ``min_lr_ratio`` (a LightningModule's ``hparams``).
    Returns what ``configure_optimizers`` returns.

    Raises
    ------
    ValueError
        No parameter requires a gradient.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise InputError("no parameter is left to train (all are frozen)")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hparams.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=hparams.lr, betas=tuple(hparams.betas))
    sched = warmup_cosine_scheduler(opt, warmup_steps=hparams.warmup_steps,
                                    total_steps=hparams.max_steps,
                                    min_lr_ratio=hparams.min_lr_ratio)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ------------------------------------------------------------------ seeds
def step_seed(seed, *keys):
    """A 63-bit seed derived from ``seed`` and integer keys (step, rank, ...).

    Uses `numpy.random.SeedSequence`, so nearby keys give unrelated streams.

    Examples
    --------
    >>> from astroclip.training.common import step_seed
    >>> step_seed(0, 5) == step_seed(0, 5) != step_seed(0, 6)
    True
    """
    ints = [int(seed)] + [int(k) for k in keys]
    if any(i < 0 for i in ints):
        raise InputError(f"seeds and keys must be non-negative integers, got {ints}")
    state = np.random.SeedSequence(ints).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def step_generator(seed, *keys, device="cpu"):
    """A `torch.Generator` seeded by `step_seed` ``(seed, *keys)``.

    Examples
    --------
    >>> import torch
    >>> from astroclip.training.common import step_generator
    >>> a = torch.rand(3, generator=step_generator(1, 10))
    >>> b = torch.rand(3, generator=step_generator(1, 10))
    >>> bool((a == b).all())
    True
    """
    g = torch.Generator(device=device)
    g.manual_seed(step_seed(seed, *keys))
    return g


def _dist_info():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


# ------------------------------------------------------------------ data order
class StepBatchSampler(torch.utils.data.Sampler):
    """Infinite batch sampler whose batch ``b`` is a pure function of ``(seed, b)``.

    The item stream is the concatenation of one seeded permutation of
    ``range(n_items)`` per pass (pass ``e`` uses ``step_seed(seed, e)``).
    Global micro-batch ``b`` is the stream slice
    ``[b * G, (b + 1) * G)`` with ``G = batch_size * world_size``; rank ``r``
    takes the ``r``-th ``batch_size`` of it.

    Parameters
    ----------
    n_items : int
        Dataset length.
    batch_size : int
        Items per batch and per rank.
    seed : int, optional
        Seed of the permutations.
    start : int or callable, optional
        First micro-batch number, or a function returning it, called when
        iteration starts (so it can read ``trainer.global_step`` after a
        resume).
    num_replicas, rank : int, optional
        Data-parallel world size and rank; by default read from
        `torch.distributed` when iteration starts.

    Examples
    --------
    >>> from astroclip.training.common import StepBatchSampler
    >>> it = iter(StepBatchSampler(10, 4, seed=0))
    >>> first = [next(it) for _ in range(5)]
    >>> it2 = iter(StepBatchSampler(10, 4, seed=0, start=3))
    >>> next(it2) == first[3]
    True
    >>> sorted(first[0] + first[1] + first[2][:2])
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """

    def __init__(self, n_items, batch_size, *, seed=0, start=0, num_replicas=None, rank=None):
        if n_items < 1:
            raise InputError("the training dataset is empty; it needs at least one item")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.n_items = int(n_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.start = start
        self.num_replicas = num_replicas
        self.rank = rank
        self._perms = {}

    def _perm(self, epoch):
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng(step_seed(self.seed, epoch)).permutation(
                self.n_items)
        return self._perms[epoch]

    def batch_indices(self, b, *, num_replicas=1, rank=0):
        """Dataset indices of micro-batch ``b`` on ``rank``."""
        g = self.batch_size * num_replicas
        pos = np.arange(b * g + rank * self.batch_size, b * g + (rank + 1) * self.batch_size,
                        dtype=np.int64)
        epochs, offsets = np.divmod(pos, self.n_items)
        out = np.empty_like(pos)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e))[offsets[sel]]
        return out.tolist()

    def __iter__(self):
        world, rank = _dist_info()
        world = world if self.num_replicas is None else self.num_replicas
        rank = rank if self.rank is None else self.rank
        b = int(self.start() if callable(self.start) else self.start)
        while True:
            yield self.batch_indices(b, num_replicas=world, rank=rank)
            b += 1


def build_train_loader(dataset, *, batch_size, seed=0, start=0, num_workers=0,
                       pin_memory=False, collate_fn=None):
    """An infinite, step-indexed training `~torch.utils.data.DataLoader`.

    Parameters
    ----------
    dataset : `torch.utils.data.Dataset`
        Map-style dataset.
    batch_size : int
        Items per batch and per rank.
    seed : int, optional
        Seed of the data order.
    start : int or callable, optional
        First micro-batch number (see `StepBatchSampler`); inside a
        LightningModule pass ``lambda: self.trainer.global_step *
        self.trainer.accumulate_grad_batches``.
    num_workers : int, optional
        Loader worker processes.
    pin_memory : bool, optional
        Pin host memory (GPU training).
    collate_fn : callable, optional
        Batch collation.
    """
    sampler = StepBatchSampler(len(dataset), batch_size, seed=seed, start=start)
    kwargs = dict(batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                  persistent_workers=False)
    if collate_fn is not None:
        kwargs["collate_fn"] = collate_fn
    return torch.utils.data.DataLoader(dataset, **kwargs)


def resolve_dataset(data, *, split=None):
    """A training-set path or a Dataset -> a map-style Dataset.

    Parameters
    ----------
    data : str, `os.PathLike` or `torch.utils.data.Dataset`
        Our paired HDF5 training-set file (read with
        `astroclip.data.datasets.PairedDataset`), or any map-style Dataset
        yielding the same item dicts (then ``split`` is ignored).
    split : {"train", "val", "test"} or None
        Rows of the file to use.
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"training-set file {path} does not exist; write one with "
                                    "astroclip.PairedDatasetWriter or `astroclip simulate`")
        from astroclip.data.datasets import PairedDataset
        return PairedDataset(path, split=split)
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        return data
    raise TypeError(f"data must be a path to a paired HDF5 file or a map-style torch Dataset "
                    f"with __len__, got {type(data).__name__}")


# ------------------------------------------------------------------ callbacks
class StepSeedCallback(Callback):
    """Re-seed torch's global generator before every micro-batch.

    The seed is ``step_seed(seed, b, rank)`` with ``b`` the micro-batch
    number (``global_step * accumulate_grad_batches`` plus the position
    inside the accumulation window), so dropout and any other use of the
    global generator inside ``training_step`` replay exactly after a
    resume.
    """

    def __init__(self, seed=0):
        self.seed = int(seed)
        self._last_step = None
        self._pos = 0

    def micro_batch(self, trainer):
        return trainer.global_step * trainer.accumulate_grad_batches + self._pos

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        self._pos = self._pos + 1 if step == self._last_step else 0
        self._last_step = step
        torch.manual_seed(step_seed(self.seed, self.micro_batch(trainer), trainer.global_rank))


class AtomicCheckpoint(Callback):
    """Write ``<dirpath>/last.ckpt`` atomically every N optimizer steps and at the end.

    All ranks call ``trainer.save_checkpoint`` (a collective in DDP;
    only rank 0 writes) into a temporary file, then rank 0 moves it into
    place with `os.replace`; barriers keep the ranks together.

    Parameters
    ----------
    dirpath : path
        Run folder.
    every_n_steps : int
        Checkpoint period in optimizer steps (0 or None: only at the end).
    filename : str, optional
        Checkpoint file name.
    """

    def __init__(self, dirpath, *, every_n_steps, filename=CHECKPOINT_NAME):
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps or 0)
        self.filename = filename
        self._step_at_start = None
        self._last_saved = None

    @property
    def path(self):
        return self.dirpath / self.filename

    def save(self, trainer):
        if self._last_saved == trainer.global_step:
            return
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier("atomic_checkpoint_mkdir")
        tmp = self.dirpath / f".{self.filename}.tmp"
        trainer.save_checkpoint(tmp, weights_only=False)
        trainer.strategy.barrier("atomic_checkpoint_saved")
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("atomic_checkpoint_moved")
        self._last_saved = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step_at_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        stepped = trainer.global_step != self._step_at_start
        if (stepped and self.every_n_steps and trainer.global_step > 0
                and trainer.global_step % self.every_n_steps == 0):
            self.save(trainer)

    def on_train_end(self, trainer, pl_module):
        self.save(trainer)


def find_resume_checkpoint(out_dir):
    """Path of the resumable checkpoint of a run folder, or None.

    Examples
    --------
    >>> import tempfile
    >>> from astroclip.training.common import find_resume_checkpoint
    >>> find_resume_checkpoint(tempfile.mkdtemp()) is None
    True
    """
    path = Path(out_dir) / CHECKPOINT_NAME
    return path if path.is_file() else None


class StepDataModule(pl.LightningDataModule):
    """Step-indexed training loader (`build_train_loader`) and a plain validation loader.

    The training batches continue from ``trainer.global_step`` after a resume,
    so interrupted and uninterrupted runs see the same data.  Subclasses set
    ``collate_fn`` (a staticmethod) and may wrap the validation set
    (``_wrap_val``) or give it a sampler (``_val_sampler``).
    """

    collate_fn = None

    def __init__(self, train, val=None, *, batch_size, val_batch_size=None, seed=0,
                 num_workers=0):
        super().__init__()
        self.train_set = train
        self.val_set = self._wrap_val(val) if val is not None and len(val) > 0 else None
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.seed = int(seed)
        self.num_workers = int(num_workers)

    def _wrap_val(self, val):
        return val

    def _val_sampler(self):
        return None

    def _start(self):
        trainer = self.trainer
        return trainer.global_step * trainer.accumulate_grad_batches if trainer else 0

    def _pin(self):
        return self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)

    def train_dataloader(self):
        return build_train_loader(self.train_set, batch_size=self.batch_size, seed=self.seed,
                                  start=self._start, num_workers=self.num_workers,
                                  pin_memory=self._pin(), collate_fn=self.collate_fn)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return torch.utils.data.DataLoader(self.val_set, batch_size=self.val_batch_size,
                                           shuffle=False, sampler=self._val_sampler(),
                                           num_workers=self.num_workers, pin_memory=self._pin(),
                                           collate_fn=self.collate_fn)


#: Lightning's loggers, whose banners and tips `lightning_quiet` holds back.
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")

#: Lightning warnings that are expected in our stages (frozen parts run in eval
#: mode; data come from an in-process sampler, so few workers is by design).
_EXPECTED_WARNINGS = (r".*module\(s\) in eval mode.*", r".*does not have many workers.*",
                      r".*`Trainer\(val_check_interval=.*")


@contextlib.contextmanager
def lightning_quiet(quiet=None):
    """Hold back Lightning's own banners, tips and expected warnings.

    Our stages print their own progress; Lightning's messages ("GPU available:
    ...", "Tip: For seamless cloud logging ...", "Found N module(s) in eval
    mode ...") are noise for a user.  Set ``astroclip.conf.lightning_messages =
    True`` (or pass ``quiet=False``) to see them again.

    Examples
    --------
    >>> import logging
    >>> from astroclip.training.common import lightning_quiet
    >>> with lightning_quiet():
    ...     logging.getLogger("lightning.pytorch").isEnabledFor(logging.INFO)
    False
    """
    if quiet is None:
        quiet = not conf.lightning_messages
    if not quiet:
        yield
        return
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for pattern in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            for lg in loggers:
                lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def fit_resumable(trainer, module, datamodule, ckpt):
    """``trainer.fit``, resuming from ``ckpt`` (or None) read with ``weights_only=True``."""
    kwargs = {"weights_only": True} if ckpt is not None else {}
    with lightning_quiet():
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, **kwargs)


def check_run_folder(out_dir, *, resume, overwrite):
    """Decide what to do with a run folder: the checkpoint to resume from, or None.

    Raises `FileExistsError` when the folder holds a run or a finished model
    that neither ``resume`` nor ``overwrite`` allows touching; with
    ``overwrite`` and not ``resume`` an old checkpoint is removed.

    Examples
    --------
    >>> import tempfile
    >>> from astroclip.training.common import check_run_folder
    >>> check_run_folder(tempfile.mkdtemp(), resume=True, overwrite=False) is None
    True
    """
    from ..models.weights import CONFIG_FILE

    out_dir = Path(out_dir)
    ckpt = find_resume_checkpoint(out_dir)
    if ckpt is not None and not resume and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a training run ({ckpt.name}); pass "
                              "resume=True to continue it or overwrite=True to start over")
    if (out_dir / CONFIG_FILE).exists() and ckpt is None and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a model ({CONFIG_FILE}); choose another "
                              "folder or pass overwrite=True")
    if ckpt is not None and overwrite and not resume:
        ckpt.unlink()
        ckpt = None
    return ckpt


def checkpoint_hparams(path):
    """The ``hyper_parameters`` of a Lightning checkpoint, read safely (weights only)."""
    return torch.load(path, map_location="cpu", weights_only=True,
                      mmap=True).get("hyper_parameters", {})


def _plain(value):
    """Tuples -> lists, recursively (to compare configs with checkpointed ones)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check_resume_config(ckpt, key, config, *, what="model configuration"):
    """Refuse to resume ``ckpt`` when the ``key`` it saved in its hyper-parameters differs.

    Raises
    ------
    ResumeMismatchError
        (a `ValueError`) The checkpoint was trained with another configuration.
    """
    if ckpt is None:
        return
    old = checkpoint_hparams(ckpt).get(key)
    if old is not None and _plain(old) != _plain(config):
        raise ResumeMismatchError(
            f"{ckpt} was trained with another {what} (its {key} differs: {_plain(old)} != "
            f"{_plain(config)}); use the same preset/options to resume, or overwrite=True "
            "(--overwrite --no-resume) to start over")


#: File of a run folder recording what the run trains on and with (see `check_resume_run`).
RUN_RECORD = "run.json"

_RUN_LABELS = {"data": "data", "lr": "learning rate (lr)", "batch_size": "batch size",
               "seed": "seed"}


def data_identity(data):
    """What identifies a training set: a file's `~astroclip._io.file_identity`, else its content.

    Paths give their size, mtime and sampled-bytes hash; arrays and tensors the
    sha256 of their bytes; other datasets their type and length.
    """
    import hashlib

    from .._io import file_identity

    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        return file_identity(path) if path.is_file() else {"path": str(path)}
    if isinstance(data, (np.ndarray, torch.Tensor)):
        array = np.ascontiguousarray(data.detach().cpu().numpy() if isinstance(data, torch.Tensor)
                                     else data)
        h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        h.update(memoryview(array).cast("B"))
        return {"array_sha256": h.hexdigest()}
    size = len(data) if hasattr(data, "__len__") else None
    return {"dataset": f"{type(data).__module__}.{type(data).__qualname__}", "len": size}


def _same_data(a, b):
    if "sample_sha256" in a and "sample_sha256" in b:
        from .._io import same_file_identity
        return same_file_identity(a, b)
    return a == b


def check_resume_run(out_dir, ckpt, *, data, **settings):
    """Record what a run is made of, and refuse to resume it with other data or settings.

    A fresh run (``ckpt`` None) writes ``<out_dir>/run.json`` with the
    `data_identity` of ``data`` and ``settings`` (learning rate, batch size,
    seed).  Resuming compares them with the record (or, for a run folder
    without one, with the ``lr``/``seed`` saved in the checkpoint's
    hyper-parameters): the metadata saved at the end would otherwise misreport
    a run trained on two data sets or with two settings.

    Raises
    ------
    ResumeMismatchError
        (a `ValueError`) The run in ``out_dir`` used other data or settings.

    Examples
    --------
    >>> import tempfile
    >>> from astroclip.training.common import check_resume_run
    >>> check_resume_run(tempfile.mkdtemp(), None, data=[1, 2], lr=1e-3, seed=0)
    """
    import json

    from .._io import atomic_path

    out_dir = Path(out_dir)
    record_path = out_dir / RUN_RECORD
    current = {"data": data_identity(data), **_plain(settings)}
    if ckpt is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(record_path) as tmp:
            Path(tmp).write_text(json.dumps(current, indent=1, default=repr))
        return
    if record_path.is_file():
        try:
            earlier = json.loads(record_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFileError(f"{record_path} is not readable JSON ({exc}); pass "
                                "overwrite=True (--overwrite --no-resume) to start over") from None
    else:  # a run folder written before the record existed: what the checkpoint saved
        hparams = checkpoint_hparams(ckpt)
        earlier = {k: _plain(hparams[k]) for k in ("lr", "seed") if k in hparams}
    differ = []
    for key, now in current.items():
        if key not in earlier:
            continue
        old = earlier[key]
        same = _same_data(old, now) if key == "data" else old == json.loads(
            json.dumps(now, default=repr))
        if not same:
            if key == "data":
                differ.append(f"data: earlier {old.get('path', old)}, now {now.get('path', now)}"
                              " (another file, or the file changed)")
            else:
                differ.append(f"{_RUN_LABELS.get(key, key)}: earlier {old}, now {now}")
    if differ:
        raise ResumeMismatchError(
            f"the run in {out_dir} cannot be resumed with these settings: {'; '.join(differ)}. "
            "Resume with the data and settings of the run, or pass overwrite=True with "
            "resume=False (--overwrite --no-resume) to start over")


def train_val_sets(data, val_data=None, *, resolve=None):
    """Training and validation datasets of a run: ``(train, val or None)``.

    The validation set is ``val_data``, else the ``val`` split of a training
    file; none for in-memory data or an empty split.
    """
    resolve = resolve or (lambda d, split: resolve_dataset(d, split=split))
    train = resolve(data, "train")
    if val_data is not None:
        val = resolve(val_data, "val")
    elif isinstance(data, (str, Path)):
        val = resolve(data, "val")
    else:
        val = None
    return train, (val if val is not None and len(val) > 0 else None)


def default_periods(max_steps, checkpoint_every=None, val_every=None):
    """Checkpoint and validation periods: given, or a tenth of the run (at most 1000 steps)."""
    period = max(1, min(1000, max_steps // 10))
    return (period if checkpoint_every is None else int(checkpoint_every),
            period if val_every is None else int(val_every))


def resolve_accelerator(device, accelerator, devices):
    """Lightning ``(accelerator, devices)`` from a ``device=`` shortcut (None keeps them)."""
    if device is None:
        return accelerator, devices
    from .._device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cpu":
        return "cpu", 1
    if dev.type == "cuda":
        return "gpu", [dev.index] if dev.index is not None else devices
    return dev.type, 1


def _trainer(**kwargs):
    """`lightning.pytorch.Trainer`, with the device settings a user got wrong as our errors."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return pl.Trainer(**kwargs)
    except MisconfigurationException as exc:
        settings = ", ".join(f"{k}={kwargs[k]!r}" for k in ("accelerator", "devices", "strategy",
                                                              "precision") if k in kwargs)
        text = " ".join(str(exc).split())
        cls = (DeviceUnavailableError if any(w in text.lower() for w in (
            "backend", "not available", "no supported", "cuda", "mps")) else InputError)
        raise cls(f"Lightning cannot run with {settings}: {text}; check --accelerator, "
                  "--devices and --strategy (or pass --device cpu)") from exc


def world_size(**kwargs):
    """Processes of a run with these Lightning settings (a throw-away trainer tells)."""
    with lightning_quiet():
        trainer = _trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, **kwargs)
    return int(trainer.world_size)


def save_run(trainer, model, out, *, stage, data, **metadata):
    """Save the trained ``model`` (CPU, evaluation mode) in ``out`` from rank zero.

    The metadata records the stage, the optimizer steps done and the data
    source; every rank waits until the files exist.  Returns the model.
    """
    from ..models.weights import save_model

    model = model.to("cpu").eval()
    if trainer.is_global_zero:
        source = str(data) if isinstance(data, (str, Path)) else type(data).__name__
        save_model(model, out, overwrite=True,
                   metadata={"stage": stage, "steps": int(trainer.global_step), **metadata,
                             "data": source})
    trainer.strategy.barrier(f"{stage}_saved")
    return model


# ------------------------------------------------------------------ trainer
def _uses_cuda(accelerator):
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def resolve_precision(precision, accelerator="auto"):
    """Default precision: ``"bf16-mixed"`` on CUDA GPUs (``"16-mixed"`` without bf16), else fp32.

    Examples
    --------
    >>> from astroclip.training.common import resolve_precision
    >>> resolve_precision(None, "cpu")
    '32-true'
    """
    if precision is not None:
        return precision
    if _uses_cuda(accelerator) and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_trainer(*, out_dir, max_steps, accelerator="auto", devices="auto", num_nodes=1,
                  strategy="auto", precision=None, gradient_clip_val=1.0,
                  accumulate_grad_batches=1, checkpoint_every=1000, val_every=1000,
                  limit_val_batches=None, progress=True, seed=0, deterministic=False,
                  log_every_n_steps=50, callbacks=()):
    """A Lightning `~lightning.pytorch.Trainer` following the module contract.

    Parameters
    ----------
    out_dir : path
        Run folder: ``last.ckpt`` and ``logs/`` go there.
    max_steps : int
        Optimizer steps to train for.
    accelerator, devices, num_nodes, strategy :
        Passed to Lightning (``strategy="ddp"`` with ``devices=N`` for several
        GPUs).
    precision : str, optional
        Lightning precision; default ``"bf16-mixed"`` on CUDA, ``"32-true"``
        elsewhere.
    gradient_clip_val : float, optional
        Gradient-norm clipping.
    accumulate_grad_batches : int, optional
        Micro-batches per optimizer step.
    checkpoint_every : int, optional
        Optimizer steps between atomic checkpoints.
    val_every : int or None, optional
        Micro-batches between validations (None: no validation loop).
    limit_val_batches : int or float, optional
        Cap on validation batches.
    progress : bool, optional
        Show the tqdm progress bar.
    seed : int, optional
        Seed of `StepSeedCallback` and of ``lightning.seed_everything``.
    deterministic : bool, optional
        ``torch.use_deterministic_algorithms`` (slower on GPU).
    log_every_n_steps : int, optional
        Logging period.
    callbacks : sequence, optional
        Extra callbacks.

    Returns
    -------
    `lightning.pytorch.Trainer`
    """
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    if max_steps < 1:
        raise InputError(f"max_steps must be >= 1, got {max_steps}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(seed, workers=True, verbose=False)
    loggers = [CSVLogger(out_dir, name="logs", version="")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger
        loggers.append(TensorBoardLogger(out_dir, name="logs", version="tensorboard"))
    except ImportError:
        pass
    cbs = [StepSeedCallback(seed), AtomicCheckpoint(out_dir, every_n_steps=checkpoint_every)]
    if progress:
        from lightning.pytorch.callbacks import TQDMProgressBar
        cbs.append(TQDMProgressBar(refresh_rate=1))
    cbs.extend(callbacks)
    kwargs = {}
    if val_every is None:
        kwargs.update(limit_val_batches=0)
    else:
        kwargs.update(val_check_interval=int(val_every), check_val_every_n_epoch=None)
        if limit_val_batches is not None:
            kwargs["limit_val_batches"] = limit_val_batches
    with lightning_quiet():
        return _trainer(
            default_root_dir=out_dir, max_steps=int(max_steps), max_epochs=-1,
            accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
            precision=resolve_precision(precision, accelerator),
            gradient_clip_val=gradient_clip_val, accumulate_grad_batches=accumulate_grad_batches,
            logger=loggers, callbacks=cbs, enable_checkpointing=False,
            enable_progress_bar=bool(progress), enable_model_summary=False,
            use_distributed_sampler=False, num_sanity_val_steps=0,
            log_every_n_steps=log_every_n_steps, deterministic=deterministic, **kwargs)
