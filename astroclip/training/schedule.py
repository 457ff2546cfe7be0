"""The learning-rate schedule of every stage: linear warm-up, then cosine decay.

`warmup_cosine_scheduler` gives AdamW a linear warm-up followed by a cosine decay
down to ``min_lr_ratio`` times the base rate, stepped once per optimizer step
(``interval="step"`` in ``configure_optimizers``); `adamw_warmup_cosine` builds
both from a stage's hyper-parameters.
"""

import math

import torch

from ..exceptions import InputError

__all__ = ["WarmupCosine", "warmup_cosine_lambda", "warmup_cosine_scheduler",
           "adamw_warmup_cosine"]


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
    >>> from astroclip.training.schedule import warmup_cosine_lambda
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
    >>> from astroclip.training.schedule import warmup_cosine_scheduler
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
