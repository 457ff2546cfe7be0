"""Training sets on disk and in memory: the paired file format and its layouts, torch
Datasets, augmentations, the embeddings file.

- `astroclip.data.paired`: `PairedDatasetWriter`, `read_paired_dataset`;
- `astroclip.data.layouts`: one module per on-disk layout, behind a registry;
- `astroclip.data.datasets`: `PairedDataset`, `MultimodalUniverseDataset`;
- `astroclip.data.augment`: batched torch image augmentations;
- `astroclip.data.embeddings`: `write_embeddings` / `read_embeddings`;
- `astroclip.data.hdf5`: HDF5 helpers.

The names below are imported from their modules on first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["paired", "layouts", "datasets", "augment", "embeddings", "hdf5"],
    submod_attrs={
        "paired": ["PairedDatasetWriter", "read_paired_dataset"],
        "datasets": ["PairedDataset", "MultimodalUniverseDataset", "convert_to_paired"],
        "embeddings": ["write_embeddings", "read_embeddings", "embeddings_format"],
        "augment": ["Augment", "alignment_augment", "pretraining_augment"],
    },
)
