"""Matplotlib figures of the paper; every function returns a `~matplotlib.figure.Figure`.

The names below are imported from their modules on first use (matplotlib is
imported only then).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["properties", "retrieval", "spectra", "survey", "training"],
    submod_attrs={
        "properties": ["plot_predicted_vs_true", "plot_embedding_map", "project_embeddings"],
        "retrieval": ["retrieval_neighbours", "plot_retrieval"],
        "spectra": [
            "plot_reconstruction", "plot_mask_filling", "plot_attention_maps",
            "plot_spectrum_attention",
        ],
        "survey": [
            "plot_mock_images", "plot_mock_spectra", "plot_colour_redshift", "plot_size_mass",
            "plot_stack_comparison", "plot_coadd_comparison", "plot_feature_zoom",
        ],
        "training": ["read_training_log", "plot_training_curves", "plot_cross_modal_retrievals"],
    },
)
