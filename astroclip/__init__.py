"""astroclip: cross-modal foundation models for galaxies.

The public API is importable from the top level; submodules are imported only
when one of their names is first used, so ``import astroclip`` stays light.
"""

import importlib

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - not installed from a git checkout
    __version__ = "0.0.0"

# public name -> module that defines it
_API = {
    "prepare_spectra": "astroclip.inputs.spectra",
    "resample_flux_conserving": "astroclip.inputs.resample",
    "PreparedSpectra": "astroclip.inputs.spectra",
    "read_desi_coadd": "astroclip.inputs.desi",
    "join_redshifts": "astroclip.inputs.desi",
    "prepare_images": "astroclip.inputs.images",
    "PreparedImages": "astroclip.inputs.images",
    "color_map": "astroclip.inputs.images",
    "PairedDatasetWriter": "astroclip.data.paired",
    "read_paired_dataset": "astroclip.data.paired",
    "PairedDataset": "astroclip.data.datasets",
    "MultimodalUniverseDataset": "astroclip.data.datasets",
    "convert_to_paired": "astroclip.data.datasets",
    "simulate_survey": "astroclip.simulate",
    "MockSurveyDataset": "astroclip.simulate",
    "simulate_catalog": "astroclip.simulate",
    "pretrain_spectra": "astroclip.training.spectra",
    "pretrain_images": "astroclip.training.images",
    "align": "astroclip.training.align",
    "AstroCLIP": "astroclip.models.clip",
    "embed_spectrum": "astroclip.api",
    "embed_image": "astroclip.api",
    "embed_catalog": "astroclip.api",
    "load_model": "astroclip.api",
    "list_models": "astroclip.api",
    "register_model": "astroclip.registry",
    "SimilarityIndex": "astroclip.search",
    "cross_modal_search": "astroclip.search",
    "photometry_baseline": "astroclip.evaluation",
    "evaluate_properties": "astroclip.evaluation",
    "evaluate_embeddings": "astroclip.evaluation",
    "knn_regression": "astroclip.evaluation",
    "fewshot_regression": "astroclip.evaluation",
    "r2_table": "astroclip.evaluation",
    "conf": "astroclip._config",
}

__all__ = sorted(_API)


def __getattr__(name):
    try:
        module = _API[name]
    except KeyError:
        raise AttributeError(f"module 'astroclip' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
