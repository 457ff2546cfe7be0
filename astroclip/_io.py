"""Atomic file writing, shared by every stage that writes results."""

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .exceptions import DataFileError

__all__ = ["atomic_path", "atomic_write_bytes", "check_output_path", "file_identity",
           "same_file_identity", "check_free_space", "disk_errors"]

#: Blocks read by `file_identity`, spread evenly over the file, and their size.
_SAMPLE_BLOCKS = 16
_SAMPLE_BYTES = 1 << 16


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


def file_identity(path):
    """What identifies the content of a data file, cheaply: size, mtime and sampled bytes.

    Returns a JSON-able dict with the resolved ``path``, the ``size`` in
    bytes, the modification time ``mtime_ns`` and ``sample_sha256``, the
    sha256 of 16 blocks of 64 kB spread evenly over the file (the whole file
    when it is small), so that another file written at the same path is told
    apart without reading gigabytes.  Compare two identities with
    `same_file_identity` (which ignores the path: a moved file is the same data).

    Examples
    --------
    >>> import os, tempfile
    >>> from astroclip._io import file_identity, same_file_identity
    >>> path = os.path.join(tempfile.mkdtemp(), "a.bin")
    >>> _ = open(path, "wb").write(b"spectra")
    >>> ident = file_identity(path)
    >>> ident["size"], same_file_identity(ident, file_identity(path))
    (7, True)
    """
    path = Path(path)
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if st.st_size <= _SAMPLE_BLOCKS * _SAMPLE_BYTES:
            h.update(fh.read())
        else:
            step = (st.st_size - _SAMPLE_BYTES) // (_SAMPLE_BLOCKS - 1)
            for k in range(_SAMPLE_BLOCKS):
                fh.seek(k * step)
                h.update(fh.read(_SAMPLE_BYTES))
    return {"path": str(path.resolve()), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns),
            "sample_sha256": h.hexdigest()}


def same_file_identity(a, b):
    """Whether two `file_identity` results describe the same content (paths aside)."""
    keys = ("size", "mtime_ns", "sample_sha256")
    return all(a.get(k) == b.get(k) for k in keys)


#: Room kept free beyond the estimate of a write (file-system metadata, HDF5 headers).
_MARGIN = 1 << 20


def _file_size_limit():
    """The soft RLIMIT_FSIZE of this process (``ulimit -f``) in bytes, or None."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def check_free_space(path, nbytes, *, grows=None):
    """Refuse a write of ``nbytes`` to ``path`` that the disk (or ``ulimit -f``) cannot hold.

    Parameters
    ----------
    path : path
        The file about to be written (its folder must exist).
    nbytes : int
        Upper estimate of the bytes to write.
    grows : path, optional
        The file that grows by ``nbytes`` (default ``path``), for the
        per-file size limit.

    Raises
    ------
    DataFileError
        (an `OSError`, errno ENOSPC or EFBIG) naming the path, the room needed
        and the room left.

    Examples
    --------
    >>> import tempfile
    >>> from astroclip._io import check_free_space
    >>> check_free_space(tempfile.mkdtemp() + "/out.h5", 1000)
    """
    path = Path(path)
    need = int(nbytes) + _MARGIN
    free = shutil.disk_usage(path.parent).free
    if need > free:
        raise DataFileError(errno.ENOSPC, f"not enough free space to write {path}: it needs "
                            f"about {need / 1e6:.1f} MB, the disk has {free / 1e6:.1f} MB free; "
                            "free some space (or write elsewhere) and run again: what was "
                            "written before is kept")
    limit = _file_size_limit()
    grows = Path(grows) if grows is not None else path
    size = grows.stat().st_size if grows.exists() else 0
    if limit is not None and size + need > limit:
        raise DataFileError(errno.EFBIG, f"writing {path} would pass the file-size limit of "
                            f"this process ({limit} bytes, ulimit -f): it would reach about "
                            f"{size + need} bytes; raise the limit (ulimit -f unlimited) or "
                            "write smaller files, and run again: what was written before is "
                            "kept")


_DISK_FULL = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))
_DISK_FULL_TEXT = ("errno = 28", "errno = 27", "errno = 122", "No space left", "File too large",
                   "Disk quota")


@contextlib.contextmanager
def disk_errors(path):
    """Turn a full disk or file-size limit hit while writing ``path`` into `DataFileError`.

    HDF5 reports these as `OSError` or `RuntimeError` with the errno in the
    text; both become a `DataFileError` naming ``path`` and the fix.
    """
    try:
        yield
    except DataFileError:
        raise
    except (OSError, RuntimeError) as exc:
        code = getattr(exc, "errno", None)
        if code not in _DISK_FULL and not any(t in str(exc) for t in _DISK_FULL_TEXT):
            raise
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise DataFileError(code or errno.ENOSPC, f"writing {path} failed ({reason}): the disk "
                            "is full or the file-size limit was reached; free some space (or "
                            "write elsewhere) and run again: what was written before is "
                            "kept") from exc
