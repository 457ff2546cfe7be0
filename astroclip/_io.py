"""Atomic file writing, shared by every stage that writes results."""

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "check_output_path"]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary file lives in the same directory so that the final
    `os.replace` is atomic: readers see either the old file or the new one,
    never a half-written file.  On an exception the temporary file is removed.

    Examples
    --------
    >>> import os, tempfile
    >>> from astroclip._io import atomic_path
    >>> target = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(target).read()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def check_output_path(path, *, overwrite=False):
    """Refuse to clobber an existing output unless ``overwrite`` is set.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another path or pass "
                              "overwrite=True (--overwrite on the command line)")
    return path
