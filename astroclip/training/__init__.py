"""Lightning training of the three stages: spectrum pretraining, image pretraining, alignment.

One module per stage (`~astroclip.training.spectra`, `~astroclip.training.images`,
`~astroclip.training.align`), each a `lightning.pytorch.LightningModule` with its
data module and a function that runs it (`pretrain_spectra`, `pretrain_images`,
`align`).  What they share, one idea per module:

- `~astroclip.training.schedule`: AdamW with linear warm-up and cosine decay;
- `~astroclip.training.sampling`: step-indexed data order and per-step seeds, so
  that a run killed mid-way and resumed ends with the weights of an
  uninterrupted one;
- `~astroclip.training.runs`: run folders (atomic checkpoints, the resume
  decision, the identity checks that refuse to resume another run, the saved
  model);
- `~astroclip.training.trainer`: the Lightning trainer every stage uses (precision,
  clipping, loggers, DDP), and its quiet mode.

Importing a stage needs the ``train`` extra (Lightning).

Model names (presets, trained and released models) are resolved by the model
factory, `astroclip.models.factory`.  The names below are imported from their
modules on first use (Lightning is imported only then).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["spectra", "images", "align", "schedule", "sampling", "runs", "trainer", "options"],
    submod_attrs={
        "spectra": ["pretrain_spectra", "SpectrumPretraining"],
        "images": ["pretrain_images", "MoCoPretraining"],
        "options": ["RunOptions"],
        "align": [
            "align", "build_clip_model", "resolve_image_encoder", "resolve_spectrum_encoder",
            "AlignmentModule",
        ],
    },
)
