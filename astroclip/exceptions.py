"""The exceptions and warnings that astroclip raises, in one place.

Every check of the package raises a member of the `AstroclipError` family.
Each class also subclasses the built-in exception it refines, so code that
catches ``ValueError``, ``LookupError``, ``ImportError`` or ``OSError`` keeps
working, while ``except AstroclipError`` catches exactly the problems that the
package diagnosed itself (the command line shows those as one line and
everything else, an internal bug, with its traceback).

Examples
--------
>>> from astroclip.exceptions import AstroclipError, InputError
>>> issubclass(InputError, ValueError) and issubclass(InputError, AstroclipError)
True
"""

__all__ = [
    "AstroclipError", "InputError", "UnitsError", "NonFiniteError", "ModelNotFoundError",
    "ModelFormatError", "CheckpointError", "ResumeMismatchError", "MergeError", "DataFileError",
    "OptionalDependencyError", "DeviceUnavailableError", "AstroclipWarning",
]


class AstroclipError(Exception):
    """Base class of every error that astroclip raises on purpose."""


class InputError(AstroclipError, ValueError):
    """An input (array, spectrum, image, table, option) is not usable as given."""


class UnitsError(InputError):
    """Units are missing or cannot be converted to what the model needs."""


class NonFiniteError(InputError):
    """NaN or infinite values where finite numbers are required (inputs or results)."""


class ModelNotFoundError(AstroclipError, LookupError, ValueError):
    """A model name, preset or checkpoint part is not known.

    A `LookupError` (a name not in a table) and a `ValueError` (a bad value
    of an argument), so code written against either keeps working; the
    message lists the closest known names.
    """


class ModelFormatError(AstroclipError, ValueError):
    """A model folder (weights or configuration) is incomplete or corrupt."""


class CheckpointError(ModelFormatError):
    """A checkpoint file does not have a layout that can be read or converted."""


class ResumeMismatchError(AstroclipError, ValueError):
    """Refused to resume into output or a run made by another model, input or options."""


class MergeError(AstroclipError, ValueError):
    """Shard or per-rank part files that cannot be merged: made by another model, options or
    input, a shard missing or given twice, rows missing or duplicated."""


class DataFileError(AstroclipError, OSError):
    """A data file is missing, truncated, locked, corrupt or cannot be written."""


class OptionalDependencyError(AstroclipError, ImportError):
    """An optional dependency is needed for this feature but is not installed."""


class DeviceUnavailableError(AstroclipError, RuntimeError):
    """The requested accelerator is not available on this machine."""


class AstroclipWarning(UserWarning):
    """Base class of the warnings astroclip emits."""
