"""Named architecture sizes: the one place where model dimensions are declared.

Each family has a dict of presets (name -> keyword arguments of the module's
constructor).  `get_preset` looks one up within a family; the model factory
(`astroclip.models.factory`) names them ``<family>-<preset>`` in its table
(``create_model("spectrum-small")``) and every entry point resolves them
through it.
"""

__all__ = ["SPECTRUM_PRESETS", "IMAGE_PRESETS", "CLIP_PRESETS", "get_preset"]

# ---------------------------------------------------------------- spectrum encoder
# SpectrumEncoder keyword arguments (the AstroCLIP paper, section 3.2; the released
# SpecFormer).  "paper" and "released" share the architecture (43.2 M parameters);
# they differ in the pretraining masks (paper: 6 runs of 30 tokens anywhere;
# released: 6 runs of 50 tokens, one per sixth of the sequence).  "small" trains
# on a CPU in minutes.
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
    # "quick": the quickstart's CPU model.  Windows of 40 pixels without overlap
    # (194 tokens instead of 778) make a step ~15x cheaper than "small"; the
    # masked runs keep covering about a quarter of the sequence.
    "quick": dict(embed_dim=64, num_layers=2, num_heads=4, window=40, stride=40,
                  max_len=800, mlp_ratio=4.0, dropout=0.0, mask_runs=6,
                  mask_run_length=8, mask_placement="anywhere"),
    # "cpu": the quickstart's CPU model (issue 11): the "quick" sizes (194
    # non-overlapping 40-pixel tokens, width 64, 2 blocks), pretrained with the
    # "denoise-bottleneck" recipe of `astroclip.quickstart.SPECTRUM_RECIPES`.
    # Measured with benchmarks/bench_spectrum_pretraining.py (240 s of one CPU
    # thread, 8,000 mock training spectra, k-NN R2 on 1,000 held-out ones, fitted
    # on 4,000; fill = linear-interpolation MSE / prediction MSE on masked tokens,
    # against the observed | noiseless tokens):
    #   recipe (steps)                        mean tokens z/M*   pooled z/M*   fill
    #   quick, observed target, 300 steps *   0.44 / 0.55        -             -
    #   denoise + bottleneck (1135)           0.59 / 0.65        0.77 / 0.73   1.7 | 8.5
    #   same, 600 s (2987)                    0.71 / 0.70        0.84 / 0.76   1.7 | 8.9
    #   same + ConvStem (8,16,32,64) (595)    0.69 / 0.72        0.68 / 0.70   1.7 | 8.1
    # (* the previous quickstart's model, trained on the survey's 3,200 galaxies.)
    # The conv stem halves the steps per CPU second; per step it learns faster.
    # Longer runs: see the docs (docs/quickstart.rst).
    "cpu": dict(embed_dim=64, num_layers=2, num_heads=4, window=40, stride=40,
                max_len=800, mlp_ratio=4.0, dropout=0.0, mask_runs=6,
                mask_run_length=8, mask_placement="anywhere"),
}

# ---------------------------------------------------------------- image encoders
# ImageEncoder keyword arguments (the AstroCLIP paper, section 3.2).  "paper": the MoCo v2
# ResNet-50 of Stein et al. (2021) on 96 x 96 g, r, z fluxes, its projection MLP
# 2048 -> 2048 -> 128 being the dense layers trained in the alignment (28 M
# parameters, 4.5 M in the head).  "released": the AstroDINO ViT-L/12 on 144 x 144
# colour-mapped RGB with a cross-attention head of width 1024.  "resnet-small" and
# "vit-small" keep the same architectures at sizes that train on a CPU; both see
# colour-mapped images (the asinh stretch evens out brightness: on the mock survey
# a small ResNet trained from scratch on it reaches about twice the retrieval
# accuracy it reaches on raw nanomaggies in the same number of steps).
IMAGE_PRESETS = {
    "paper": dict(backbone="resnet", embed_dim=128, crop_size=96, input_mapping="flux",
                  backbone_kwargs=dict(layers=(3, 4, 6, 3), width=64, mlp_hidden=2048)),
    "released": dict(backbone="vit", embed_dim=1024, crop_size=144, input_mapping="color_map",
                     head_heads=4, dropout=0.1,
                     backbone_kwargs=dict(img_size=144, patch_size=12, embed_dim=1024, depth=24,
                                          num_heads=16, mlp_ratio=4.0, layerscale_init=1e-5,
                                          block_chunks=4)),
    "resnet-small": dict(backbone="resnet", embed_dim=128, crop_size=96,
                         input_mapping="color_map",
                         backbone_kwargs=dict(layers=(1, 1, 1, 1), width=16, mlp_hidden=256)),
    "vit-small": dict(backbone="vit", embed_dim=128, crop_size=144, input_mapping="color_map",
                      head_heads=4, dropout=0.0,
                      backbone_kwargs=dict(img_size=144, patch_size=12, embed_dim=96, depth=2,
                                           num_heads=4, mlp_ratio=4.0, layerscale_init=1e-5,
                                           block_chunks=0)),
}

# ---------------------------------------------------------------- aligned model
# AstroCLIP keyword arguments (the AstroCLIP paper, section 3.1): image preset, spectrum
# backbone preset + pooling head (4 heads, learned query, residual MLP), the
# fixed logit scale and the freezing policy.  "paper": d = 128 (the pooling head
# has ~362 k parameters); "released": d = 1024.
CLIP_PRESETS = {
    "paper": dict(image="paper", spectrum=dict(backbone="paper", pooling=dict(
        embed_dim=128, num_heads=4, dropout=0.0, residual=True)), logit_scale=15.5,
        freeze="paper"),
    "released": dict(image="released", spectrum=dict(backbone="released", pooling=dict(
        embed_dim=1024, num_heads=4, dropout=0.1, residual=True)), logit_scale=15.5,
        freeze="paper"),
    "small": dict(image="resnet-small", spectrum=dict(backbone="small", pooling=dict(
        embed_dim=128, num_heads=4, dropout=0.0, residual=True)), logit_scale=15.5,
        freeze="paper"),
    "small-vit": dict(image="vit-small", spectrum=dict(backbone="small", pooling=dict(
        embed_dim=128, num_heads=4, dropout=0.0, residual=True)), logit_scale=15.5,
        freeze="paper"),
}

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
    InputError
        An unknown family.
    ModelNotFoundError
        An unknown preset name (the message lists the closest ones).

    Examples
    --------
    >>> from astroclip.models.presets import get_preset
    >>> get_preset("spectrum", "small")["embed_dim"]
    128
    """
    import difflib

    from ..exceptions import InputError, ModelNotFoundError

    try:
        presets = _FAMILIES[family]
    except KeyError:
        raise InputError(f"unknown model family {family!r}; choose one of "
                         f"{sorted(_FAMILIES)}") from None
    if name not in presets:
        close = difflib.get_close_matches(str(name), list(presets), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise ModelNotFoundError(f"unknown {family} preset {name!r}; {hint}available presets: "
                                 f"{sorted(presets)} (all model names: astroclip.list_models())")
    return dict(presets[name])
