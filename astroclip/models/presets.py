"""Named architecture sizes: the one place where model dimensions are declared.

Each family has a dict of presets (name -> keyword arguments of the module's
constructor).  `get_preset` looks one up and gives a clear error for an unknown
name.
"""

__all__ = ["SPECTRUM_PRESETS", "IMAGE_PRESETS", "CLIP_PRESETS", "get_preset"]

# ---------------------------------------------------------------- spectrum encoder
SPECTRUM_PRESETS = {}

# ---------------------------------------------------------------- image encoders
IMAGE_PRESETS = {}

# ---------------------------------------------------------------- aligned model
CLIP_PRESETS = {}

_FAMILIES = {"spectrum": SPECTRUM_PRESETS, "image": IMAGE_PRESETS, "clip": CLIP_PRESETS}


def get_preset(family, name):
    """Constructor keyword arguments of a named preset.

    Parameters
    ----------
    family : {"spectrum", "image", "clip"}
        Which model family.
    name : str
        Preset name, e.g. ``"paper"`` or ``"small"``.

    Returns
    -------
    dict
        A fresh copy, safe to modify.

    Raises
    ------
    ValueError
        If the family or the preset name does not exist.
    """
    try:
        presets = _FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; choose one of "
                         f"{sorted(_FAMILIES)}") from None
    if name not in presets:
        raise ValueError(f"unknown {family} preset {name!r}; available presets: "
                         f"{sorted(presets)}")
    return dict(presets[name])
