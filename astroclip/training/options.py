"""The options every training stage shares, declared once.

`pretrain_spectra`, `pretrain_images` and `align` take their own options
(model, optimizer, length of the run, batch size) as keywords, and the options
they share — gradient accumulation, checkpoint and validation periods, seed,
data-loader workers, devices, precision, progress, resume — as ``**options``,
read by `RunOptions.from_options`.  Each shared option is declared once, as a
field of `RunOptions` with its help text: the docstring below, the stages'
``**options`` and the command line's options (``astroclip pretrain-spectra
--help``) are all made from those fields.

``batch_size`` means the same in every stage: examples per optimizer step, over
all devices and accumulation micro-batches together (`split_batch`).
"""

import dataclasses
import difflib

from ..exceptions import InputError

__all__ = ["RunOptions", "RENAMED", "split_batch", "parse_devices"]

#: Option names of earlier versions -> the one spelling used now.
RENAMED = {"accumulate_grad_batches": "accumulate", "num_workers": "workers",
           "n_jobs": "workers"}


def parse_devices(value):
    """Lightning ``devices`` from their command-line form: ``auto``, a count, or ids.

    Examples
    --------
    >>> from astroclip.training.options import parse_devices
    >>> parse_devices("2"), parse_devices("0,1"), parse_devices("auto")
    (2, [0, 1], 'auto')
    """
    if not isinstance(value, str) or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        return [int(v) for v in value.split(",")]


def _option(default, help, *, cli=True, type=None):
    return dataclasses.field(default=default,
                             metadata={"help": help, "cli": cli, "type": type})


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Options shared by the training stages (given to them as keywords).

    Every stage accepts these as keyword arguments; an unknown name is an error
    that names the closest option.
    """

    accumulate: int = _option(1, "gradient-accumulation micro-batches per optimizer step")
    gradient_clip_val: float = _option(1.0, "gradient-norm clipping")
    checkpoint_every: int = _option(None, "optimizer steps between atomic checkpoints "
                                          "(default: the stage's, at most 1000)")
    val_every: int = _option(None, "optimizer steps between validations (default: the stage's)")
    limit_val_batches: int = _option(None, "cap on validation batches")
    seed: int = _option(0, "seed of the initialisation, data order, masks and augmentations")
    workers: int = _option(0, "data-loader worker processes")
    device: str = _option(None, "one device: cpu, cuda, cuda:1, mps (overrides accelerator "
                                "and devices)")
    accelerator: str = _option("auto", "Lightning accelerator")
    devices: object = _option("auto", "devices per node: auto, a count, or comma-separated ids",
                              type=parse_devices)
    num_nodes: int = _option(1, "nodes of a multi-node run")
    strategy: str = _option("auto", "Lightning strategy, e.g. ddp")
    precision: str = _option(None, "Lightning precision (default: bf16-mixed on CUDA GPUs, "
                                   "32-true elsewhere)")
    progress: bool = _option(None, "progress bar (default: astroclip.conf.progress)")
    resume: bool = _option(True, "continue from OUT/last.ckpt when it exists")
    overwrite: bool = _option(False, "start over in a folder that already holds a run")
    deterministic: bool = _option(False, "deterministic algorithms (slower on GPUs)")
    callbacks: tuple = _option((), "extra Lightning callbacks", cli=False)

    @classmethod
    def from_options(cls, **options):
        """Build from keyword options, with a clear error naming unknown ones.

        Examples
        --------
        >>> from astroclip.training.options import RunOptions
        >>> RunOptions.from_options(accumulate=2, seed=3).accumulate
        2
        >>> RunOptions.from_options(num_workers=2)
        Traceback (most recent call last):
        ...
        TypeError: unknown training option(s) 'num_workers' (renamed 'workers'); ...
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in options if k not in names]
        if unknown:
            hints = []
            for k in unknown:
                if k in RENAMED:
                    hints.append(f"{k!r} (renamed {RENAMED[k]!r})")
                    continue
                close = difflib.get_close_matches(k, names, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(f"unknown training option(s) {', '.join(hints)}; the options "
                            f"shared by the stages are {names}")
        opts = cls(**options)
        for name in ("accumulate", "num_nodes"):
            if int(getattr(opts, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(opts, name)}")
        if int(opts.workers) < 0:
            raise InputError(f"workers must be >= 0, got {opts.workers}")
        return opts

    def hardware(self):
        """Lightning ``(accelerator, devices)``, with the ``device`` shortcut applied."""
        from .trainer import resolve_accelerator

        return resolve_accelerator(self.device, self.accelerator, self.devices)

    def world_size(self):
        """Processes of a run with these settings."""
        from .trainer import world_size

        accelerator, devices = self.hardware()
        return world_size(accelerator=accelerator, devices=devices, num_nodes=self.num_nodes,
                          strategy=self.strategy)

    def trainer(self, out_dir, *, max_steps, checkpoint_every, val_every, log_every_n_steps):
        """The stage's `~lightning.pytorch.Trainer` (`astroclip.training.trainer.build_trainer`).

        ``checkpoint_every`` and ``val_every`` are the stage's resolved periods in
        optimizer steps (``val_every`` None: no validation loop).
        """
        from .._config import conf
        from .trainer import build_trainer

        accelerator, devices = self.hardware()
        return build_trainer(
            out_dir=out_dir, max_steps=max_steps, accelerator=accelerator, devices=devices,
            num_nodes=self.num_nodes, strategy=self.strategy, precision=self.precision,
            gradient_clip_val=self.gradient_clip_val, accumulate_grad_batches=self.accumulate,
            checkpoint_every=checkpoint_every,
            val_every=None if val_every is None else val_every * self.accumulate,
            limit_val_batches=self.limit_val_batches,
            progress=conf.progress if self.progress is None else bool(self.progress),
            seed=self.seed, deterministic=self.deterministic,
            log_every_n_steps=log_every_n_steps, callbacks=self.callbacks)


def _document(cls):
    """Append a numpydoc Parameters section made from the fields' help texts."""
    lines = ["", "    Parameters", "    ----------"]
    for f in dataclasses.fields(cls):
        typ = getattr(f.type, "__name__", str(f.type))
        lines.append(f"    {f.name} : {typ}, optional")
        lines.append(f"        {f.metadata['help'][0].upper()}{f.metadata['help'][1:]} "
                     f"(default {f.default!r}).")
    cls.__doc__ = cls.__doc__.rstrip() + "\n" + "\n".join(lines) + "\n"
    return cls


_document(RunOptions)


def split_batch(batch_size, world, accumulate, *, what="examples", n_train=None, minimum=1):
    """Examples per micro-batch and device of a global ``batch_size``.

    Parameters
    ----------
    batch_size : int
        Examples per optimizer step, all devices and micro-batches together.
    world, accumulate : int
        Processes, and accumulation micro-batches per step.
    what : str, optional
        What an example is, for the error messages (``"pairs"``, ``"spectra"``...).
    n_train : int, optional
        Training-set size: a micro-batch may not be larger.
    minimum : int, optional
        Least examples a micro-batch may hold.

    Returns
    -------
    int

    Raises
    ------
    InputError
        ``batch_size`` does not split evenly, or gives micro-batches that are too
        small or larger than the training set.

    Examples
    --------
    >>> from astroclip.training.options import split_batch
    >>> split_batch(512, 4, 2)
    64
    """
    per = batch_size / (world * accumulate)
    if per != int(per) or per < 1:
        raise InputError(f"batch_size={batch_size} does not split into {world} device(s) x "
                         f"{accumulate} micro-batch(es); choose a multiple of {world * accumulate}")
    micro = int(per)
    if micro < minimum:
        raise InputError(f"each micro-batch would hold {micro} {what}; at least {minimum} are "
                         "needed: increase batch_size or lower accumulate")
    if n_train is not None and micro > n_train:
        raise InputError(f"the micro-batch ({micro} {what}) is larger than the training set "
                         f"({n_train} {what}); lower batch_size")
    return micro
