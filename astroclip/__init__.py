"""astroclip: cross-modal foundation models for galaxies.

The public API is importable from the top level; submodules are imported only
when one of their names is first used (``lazy_loader.attach_stub``), so
``import astroclip`` stays light.  The table of public names is the stub file
``astroclip/__init__.pyi``, which IDEs and type checkers read too.
"""

import lazy_loader as _lazy

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - not installed from a git checkout
    __version__ = "0.0.0"

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
