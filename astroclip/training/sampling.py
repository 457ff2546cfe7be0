"""Data order and randomness that replay exactly after a resume.

Lightning does not fast-forward an ordinary sampler to the middle of an epoch,
so the stages do not use epochs at all.  The training data is one infinite
stream indexed by the *micro-batch number* ``b`` (optimizer steps times
``accumulate_grad_batches``): `StepBatchSampler` makes the items of micro-batch
``b`` a pure function of ``(seed, b, rank, world_size)`` (item order: one seeded
permutation of the dataset per pass, concatenated; each rank takes its own slice
of every global batch).  When training resumes, the sampler starts from
``trainer.global_step * accumulate_grad_batches`` (read lazily when the data
loader is iterated, i.e. after Lightning has restored the checkpoint).
`StepSeedCallback` re-seeds torch's global generator at the start of every
micro-batch from ``(seed, b, rank)`` so dropout is reproducible too, and
`step_generator` gives a `torch.Generator` seeded the same way for explicit
random draws (masks, augmentations done in ``training_step``).  With the
optimizer and scheduler states of the checkpoint (`astroclip.training.runs`),
"killed mid-way and resumed" ends with the same weights as an uninterrupted run
(bitwise on CPU with the same thread count).  Datasets used for training should
therefore be deterministic per index; do random augmentations on the batch
inside ``training_step`` with `step_generator`.
"""

import os
from pathlib import Path

import numpy as np
import torch

from .._optional import require
from ..exceptions import InputError

pl = require("lightning.pytorch", purpose="training")
from lightning.pytorch.accelerators import CUDAAccelerator  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

__all__ = ["step_seed", "step_generator", "StepBatchSampler", "build_train_loader",
           "resolve_dataset", "train_val_sets", "StepSeedCallback", "StepDataModule"]


def step_seed(seed, *keys):
    """A 63-bit seed derived from ``seed`` and integer keys (step, rank, ...).

    Uses `numpy.random.SeedSequence`, so nearby keys give unrelated streams.

    Examples
    --------
    >>> from astroclip.training.sampling import step_seed
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
    >>> from astroclip.training.sampling import step_generator
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
    >>> from astroclip.training.sampling import StepBatchSampler
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


def build_train_loader(dataset, *, batch_size, seed=0, start=0, workers=0,
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
    workers : int, optional
        Loader worker processes.
    pin_memory : bool, optional
        Pin host memory (GPU training).
    collate_fn : callable, optional
        Batch collation.
    """
    sampler = StepBatchSampler(len(dataset), batch_size, seed=seed, start=start)
    kwargs = dict(batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
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


class StepDataModule(pl.LightningDataModule):
    """Step-indexed training loader (`build_train_loader`) and a plain validation loader.

    The training batches continue from ``trainer.global_step`` after a resume,
    so interrupted and uninterrupted runs see the same data.  Subclasses set
    ``collate_fn`` (a staticmethod) and may wrap the validation set
    (``_wrap_val``) or give it a sampler (``_val_sampler``).
    """

    collate_fn = None

    def __init__(self, train, val=None, *, batch_size, val_batch_size=None, seed=0,
                 workers=0):
        super().__init__()
        self.train_set = train
        self.val_set = self._wrap_val(val) if val is not None and len(val) > 0 else None
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.seed = int(seed)
        self.workers = int(workers)

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
                                  start=self._start, workers=self.workers,
                                  pin_memory=self._pin(), collate_fn=self.collate_fn)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return torch.utils.data.DataLoader(self.val_set, batch_size=self.val_batch_size,
                                           shuffle=False, sampler=self._val_sampler(),
                                           num_workers=self.workers, pin_memory=self._pin(),
                                           collate_fn=self.collate_fn)


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
