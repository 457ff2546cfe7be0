"""Lightning training of the three stages: spectrum pretraining, image pretraining, alignment.

- `astroclip.training.spectra`: `pretrain_spectra` (masked filling);
- `astroclip.training.images`: `pretrain_images` (MoCo v2);
- `astroclip.training.align`: `align` (CLIP loss) and `build_clip_model`;
- `astroclip.training.common`: schedules, sampling, resumable runs, the trainer.

Model names (presets, trained and released models) are resolved by the model
factory, `astroclip.models.factory`.  The names below are imported from their
modules on first use (Lightning is imported only then).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["spectra", "images", "align", "common"],
    submod_attrs={
        "spectra": ["pretrain_spectra", "SpectrumPretraining"],
        "images": ["pretrain_images", "MoCoPretraining"],
        "align": [
            "align", "build_clip_model", "resolve_image_encoder", "resolve_spectrum_encoder",
            "AlignmentModule",
        ],
    },
)
