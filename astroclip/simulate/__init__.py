"""The offline mock DESI x Legacy Survey galaxy survey.

Physically consistent galaxies (population resampled from real SDSS galaxies,
DESI spectra with emission lines and realistic noise, DECam g, r, z photometry,
Legacy-Survey-like bulge + disc images) with known truth, for tests, the
quickstart and pipeline validation.

* `simulate_survey` writes N galaxies to the paired HDF5 training-set format;
* `MockSurveyDataset` makes item ``i`` on the fly (a torch Dataset);
* `simulate_catalog` gives the truth catalogue alone (no pixels);
* `simulate_spectra` gives spectra only (and their noiseless versions), in memory.
"""

from .survey import (LABEL_NAMES, SurveyConfig, generate_chunk, simulate_catalog, simulate_spectra,
                     simulate_survey)

__all__ = ["simulate_survey", "simulate_catalog", "simulate_spectra", "MockSurveyDataset",
           "SurveyConfig", "generate_chunk", "LABEL_NAMES"]


def __getattr__(name):
    # the torch Dataset is imported lazily: torch is slow to import
    if name == "MockSurveyDataset":
        from .dataset import MockSurveyDataset

        return MockSurveyDataset
    raise AttributeError(f"module 'astroclip.simulate' has no attribute {name!r}")
