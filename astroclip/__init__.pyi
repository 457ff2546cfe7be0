"""The public names of astroclip: the one table, read by the lazy loader and type checkers.

``astroclip/__init__.py`` hands this file to ``lazy_loader.attach_stub``: each
name below is imported from its module when it is first used, and IDEs and
type checkers read the same table.  Add a public name here, nowhere else.
"""

from ._config import conf as conf
from .api import (
    embed_catalog as embed_catalog,
    embed_image as embed_image,
    embed_spectrum as embed_spectrum,
    load_model as load_model,
)
from .data.datasets import (
    MultimodalUniverseDataset as MultimodalUniverseDataset,
    PairedDataset as PairedDataset,
    convert_to_paired as convert_to_paired,
)
from .data.paired import (
    PairedDatasetWriter as PairedDatasetWriter,
    read_paired_dataset as read_paired_dataset,
)
from .evaluation import (
    evaluate_embeddings as evaluate_embeddings,
    evaluate_properties as evaluate_properties,
    fewshot_regression as fewshot_regression,
    knn_regression as knn_regression,
    photometry_baseline as photometry_baseline,
    r2_table as r2_table,
)
from .inputs.desi import (
    join_redshifts as join_redshifts,
    read_desi_coadd as read_desi_coadd,
)
from .inputs.images import (
    PreparedImages as PreparedImages,
    color_map as color_map,
    prepare_images as prepare_images,
)
from .inputs.resample import resample_flux_conserving as resample_flux_conserving
from .inputs.spectra import (
    PreparedSpectra as PreparedSpectra,
    prepare_spectra as prepare_spectra,
)
from .models.clip import AstroCLIP as AstroCLIP
from .models.factory import (
    create_model as create_model,
    list_models as list_models,
    register_model as register_model,
)
from .search import (
    SimilarityIndex as SimilarityIndex,
    cross_modal_search as cross_modal_search,
)
from .simulate import (
    MockSurveyDataset as MockSurveyDataset,
    simulate_catalog as simulate_catalog,
    simulate_survey as simulate_survey,
)
from .training.align import align as align
from .training.images import pretrain_images as pretrain_images
from .training.spectra import pretrain_spectra as pretrain_spectra

__version__: str

__all__ = [
    "AstroCLIP",
    "MockSurveyDataset",
    "MultimodalUniverseDataset",
    "PairedDataset",
    "PairedDatasetWriter",
    "PreparedImages",
    "PreparedSpectra",
    "SimilarityIndex",
    "align",
    "color_map",
    "conf",
    "convert_to_paired",
    "create_model",
    "cross_modal_search",
    "embed_catalog",
    "embed_image",
    "embed_spectrum",
    "evaluate_embeddings",
    "evaluate_properties",
    "fewshot_regression",
    "join_redshifts",
    "knn_regression",
    "list_models",
    "load_model",
    "photometry_baseline",
    "prepare_images",
    "prepare_spectra",
    "pretrain_images",
    "pretrain_spectra",
    "r2_table",
    "read_desi_coadd",
    "read_paired_dataset",
    "register_model",
    "resample_flux_conserving",
    "simulate_catalog",
    "simulate_survey",
]
