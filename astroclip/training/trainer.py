"""The Lightning trainer of every stage, and how it is configured and kept quiet.

`build_trainer` sets bf16 mixed precision on GPUs and fp32 on the CPU, gradient
clipping (1.0), a validation every ``val_every`` steps, a tqdm progress bar
(optional), a CSV logger (plus TensorBoard when it is installed) under
``<out_dir>/logs``, the step-seeding and atomic-checkpoint callbacks, and
``use_distributed_sampler=False`` (our sampler shards by rank itself).
Multi-GPU training is Lightning DDP (``devices=N``, ``strategy="ddp"``), never
home-made.  Device settings a user got wrong become our errors (`_trainer`);
Lightning's banners and expected warnings are held back (`lightning_quiet`).
"""

import contextlib
import logging
import warnings
from pathlib import Path

import torch

from .._config import conf
from .._optional import require
from ..exceptions import DeviceUnavailableError, InputError
from .runs import AtomicCheckpoint
from .sampling import StepSeedCallback

pl = require("lightning.pytorch", purpose="training")

__all__ = ["lightning_quiet", "fit_resumable", "default_periods", "resolve_accelerator",
           "world_size", "resolve_precision", "build_trainer"]


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
    >>> from astroclip.training.trainer import lightning_quiet
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
        names = ("accelerator", "devices", "strategy", "precision")
        settings = ", ".join(f"{k}={kwargs[k]!r}" for k in names if k in kwargs)
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


def _uses_cuda(accelerator):
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def resolve_precision(precision, accelerator="auto"):
    """Default precision: ``"bf16-mixed"`` on CUDA GPUs (``"16-mixed"`` without bf16), else fp32.

    Examples
    --------
    >>> from astroclip.training.trainer import resolve_precision
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
