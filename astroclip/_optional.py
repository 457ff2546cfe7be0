"""Optional dependencies: one table, one helper.

The core install (``pip install astroclip``) loads models and embeds spectra
and images.  Everything else is behind a named extra; `require` imports an
optional module or raises `~astroclip.exceptions.OptionalDependencyError`
naming the extra to install.
"""

import importlib

from .exceptions import OptionalDependencyError

__all__ = ["OPTIONAL", "install_hint", "require"]

#: top-level module -> (PyPI distribution, extra of astroclip that installs it, or None)
OPTIONAL = {
    "lightning": ("lightning", "train"),
    "tensorboard": ("tensorboard", "train"),
    "faiss": ("faiss-cpu", "search"),
    "kcorrect": ("kcorrect", "simulate"),
    "speclite": ("speclite", "simulate"),
    "bagpipes": ("bagpipes", "simulate"),
    "fastspecfit": ("fastspecfit", "test"),
    "matplotlib": ("matplotlib", "plot"),
    "sklearn": ("scikit-learn", "plot"),
    "umap": ("umap-learn", None),
    "pyarrow": ("pyarrow", None),
    "pandas": ("pandas", None),
    "huggingface_hub": ("huggingface_hub", None),
}


def install_hint(module):
    """The pip command that installs the optional ``module``.

    Examples
    --------
    >>> from astroclip._optional import install_hint
    >>> install_hint("faiss")
    'pip install "astroclip[search]"'
    >>> install_hint("umap")
    'pip install umap-learn'
    """
    top = module.split(".")[0]
    dist, extra = OPTIONAL[top]
    return f'pip install "astroclip[{extra}]"' if extra else f"pip install {dist}"


def require(module, *, purpose):
    """Import the optional ``module``, or say which extra installs it.

    Parameters
    ----------
    module : str
        Module to import, e.g. ``"faiss"`` or ``"lightning.pytorch"``; its
        top-level package must be listed in `OPTIONAL`.
    purpose : str
        What needs it, for the message (``"similarity search"``).

    Returns
    -------
    module

    Raises
    ------
    OptionalDependencyError
        (an `ImportError`) if the module cannot be imported; the message names
        the package and the ``pip install`` command.

    Examples
    --------
    >>> from astroclip._optional import require
    >>> require("faiss", purpose="similarity search").__name__
    'faiss'
    """
    top = module.split(".")[0]
    if top not in OPTIONAL:
        raise KeyError(f"{top} is not in astroclip._optional.OPTIONAL")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{purpose} needs the optional package {OPTIONAL[top][0]!r}, which is not "
            f"installed ({exc}); install it with: {install_hint(module)}") from exc
