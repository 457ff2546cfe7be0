"""Named architecture sizes: the one place where model dimensions are declared.

Each family has a dict of presets (name -> keyword arguments of the module's
constructor).  `get_preset` looks one up and gives a clear error for an unknown
name.
"""

__all__ = ["SPECTRUM_PRESETS", "IMAGE_PRESETS", "CLIP_PRESETS", "get_preset"]

# ---------------------------------------------------------------- spectrum encoder
# SpectrumEncoder keyword arguments (method.md section 2).  "paper" and
# "released" share the architecture (43.2 M parameters); they differ in the
# pretraining masks (paper: 6 runs of 30 tokens anywhere; released: 6 runs of
# 50 tokens, one per sixth of the sequence).  "small" trains on a CPU in minutes.
SPECTRUM_PRESETS = {
    "paper": dict(embed_dim=768, num_layers=6, num_heads=6, window=20, stride=10,
                  max_len=800, mlp_ratio=4.0, dropout=0.0, mask_runs=6,
                  mask_run_length=30, mask_placement="anywhere"),
    "released": dict(embed_dim=768, num_layers=6, num_heads=6, window=20, stride=10,
                     max_len=800, mlp_ratio=4.0, dropout=0.0, mask_runs=6,
                     mask_run_length=50, mask_placement="per_section"),
    "small": dict(embed_dim=128, num_layers=2, num_heads=4, window=20, stride=10,
                  max_len=800, mlp_ratio=4.0, dropout=0.0, mask_runs=6,
                  mask_run_length=30, mask_placement="anywhere"),
}

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
