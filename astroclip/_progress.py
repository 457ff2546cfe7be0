"""The one progress-bar helper: tqdm bars that honour ``astroclip.conf.progress``.

Every long loop of the package (preparing spectra, simulating a survey,
embedding a catalogue, building an index, k-NN batches, training a few-shot
head, converting a file) shows its bar through `progress_bar`, so that one
switch turns them all off::

    import astroclip
    astroclip.conf.progress = False

Each public function also takes ``progress=`` (True, False, or None for the
configuration value).
"""

from ._config import conf

__all__ = ["progress_enabled", "progress_bar"]


def progress_enabled(progress=None):
    """Whether to show a bar: ``progress``, or ``conf.progress`` when it is None.

    Examples
    --------
    >>> from astroclip._progress import progress_enabled
    >>> progress_enabled(False)
    False
    """
    return bool(conf.progress) if progress is None else bool(progress)


def progress_bar(iterable=None, *, total=None, desc=None, unit="it", progress=None,
                 min_total=0, leave=True, initial=0):
    """A `tqdm.auto.tqdm` bar, disabled when progress is off or the work is small.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over (leave out and call ``bar.update(n)`` instead).
    total : int, optional
        Number of steps (default ``len(iterable)`` when it has one).
    desc, unit : str, optional
        Label and unit of the bar.
    progress : bool, optional
        Show the bar (default: ``conf.progress``).
    min_total : int, optional
        Hide the bar when ``total`` is at most this (work too short for a bar).
    leave : bool, optional
        Keep the finished bar on screen.
    initial : int, optional
        Steps already done (a resumed job).

    Returns
    -------
    `tqdm.tqdm`
        Iterable, a context manager, with ``update`` and ``close``; a disabled
        bar costs nothing and prints nothing.

    Examples
    --------
    >>> from astroclip._progress import progress_bar
    >>> with progress_bar(total=3, desc="work", progress=False) as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    >>> sum(progress_bar(range(4), progress=False))
    6
    """
    from tqdm.auto import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    show = progress_enabled(progress) and not (total is not None and total <= min_total)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not show, leave=leave,
                initial=initial)
