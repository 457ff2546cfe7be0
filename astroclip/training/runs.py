"""Run folders: atomic checkpoints, the resume decision and its identity checks, the saved model.

`AtomicCheckpoint` writes ``<out_dir>/last.ckpt`` every N optimizer steps and at
the end of training, through ``trainer.save_checkpoint`` into a temporary file
that is moved into place with `os.replace` by rank 0 only (all ranks take part
in the save and in the barriers around it, so it is safe under DDP): a reader
never sees a half-written checkpoint.  `find_resume_checkpoint` returns that file
when it exists; `check_run_folder` decides between resuming, refusing and
starting over; `check_resume_config` and `check_resume_run` refuse to resume a
run with another model configuration, data or settings (the run record,
``run.json``); `save_run` writes the trained model in our format.
"""

import os
from pathlib import Path

import numpy as np
import torch

from .._optional import require
from ..exceptions import DataFileError, ResumeMismatchError

require("lightning.pytorch", purpose="training")
from lightning.pytorch.callbacks import Callback  # noqa: E402

__all__ = ["CHECKPOINT_NAME", "RUN_RECORD", "AtomicCheckpoint", "find_resume_checkpoint",
           "check_run_folder", "checkpoint_hparams", "check_resume_config", "data_identity",
           "check_resume_run", "save_run"]


#: File name of the resumable checkpoint inside a run folder.
CHECKPOINT_NAME = "last.ckpt"


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
    >>> from astroclip.training.runs import find_resume_checkpoint
    >>> find_resume_checkpoint(tempfile.mkdtemp()) is None
    True
    """
    path = Path(out_dir) / CHECKPOINT_NAME
    return path if path.is_file() else None


def check_run_folder(out_dir, *, resume, overwrite):
    """Decide what to do with a run folder: the checkpoint to resume from, or None.

    Raises `FileExistsError` when the folder holds a run or a finished model
    that neither ``resume`` nor ``overwrite`` allows touching; with
    ``overwrite`` and not ``resume`` an old checkpoint is removed.

    Examples
    --------
    >>> import tempfile
    >>> from astroclip.training.runs import check_run_folder
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
    >>> from astroclip.training.runs import check_resume_run
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
