"""Pure torch modules: spectrum transformer, image backbones, heads, the aligned model.

- `astroclip.models.factory`: the one table of model names, `create_model`,
  `list_models`, `register_model` (every entry point resolves names here);
- `astroclip.models.presets`: the architecture sizes;
- `astroclip.models.spectrum`, `image`, `heads`, `transformer`, `clip`: the modules;
- `astroclip.models.weights`: our file format (safetensors + JSON);
- `astroclip.models.convert`: reading and mapping the released checkpoints;
- `astroclip.models.store`: the local model directory and downloads.

The names below are imported from their modules on first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=[
        "factory", "presets", "spectrum", "image", "heads", "transformer", "clip", "weights",
        "convert", "store",
    ],
    submod_attrs={
        "factory": [
            "create_model", "list_models", "register_model", "model_config", "model_path",
            "fetch_released", "convert_released_checkpoint",
        ],
        "spectrum": ["SpectrumEncoder", "SpectrumEmbedder"],
        "image": ["ImageEncoder"],
        "heads": ["CrossAttentionHead", "MLP"],
        "clip": ["AstroCLIP", "clip_loss"],
        "weights": ["save_model", "read_model_config"],
        "convert": ["read_checkpoint"],
        "presets": ["SPECTRUM_PRESETS", "IMAGE_PRESETS", "CLIP_PRESETS"],
    },
)
