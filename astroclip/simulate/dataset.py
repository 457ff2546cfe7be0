"""A torch Dataset that simulates mock-survey galaxies on the fly."""

import numpy as np
import torch

from .survey import LABEL_NAMES, SurveyConfig, _generate, survey_splits

__all__ = ["MockSurveyDataset"]


class MockSurveyDataset(torch.utils.data.Dataset):
    """Mock DESI x Legacy Survey galaxies generated on demand, item ``i`` from ``(seed, i)``.

    Items are interchangeable with those of `astroclip.data.datasets.PairedDataset`:
    dicts with ``"targetid"`` (int64 0-d tensor, equal to ``i``), ``"spectrum"`` and
    ``"spectrum_ivar"`` (float32 (7781,)), ``"image"`` (float32 (3, S, S), nanomaggies)
    and one float32 0-d tensor per label (``"Z"``, ``"LOG_MSTAR"``, ...).  Item ``i`` is
    identical to row ``i`` of the file written by `astroclip.simulate.simulate_survey`
    with the same seed and options.

    Parameters
    ----------
    n : int
        Number of galaxies (the length of the dataset).
    seed : int, optional
        Random seed of the survey.
    labels : sequence of str, optional
        Label columns to put in the items (all of `astroclip.simulate.LABEL_NAMES` by
        default).
    split : {"train", "val", "test"} or int, optional
        Keep only the galaxies of this split (indices are then those of the split).
    images : bool, optional
        Put the ``"image"`` in the items (False: spectra only, faster).
    model_flux : bool, optional
        Also put ``"spectrum_model"`` (float32 (7781,)) in the items: the noiseless
        fibre spectrum that ``"spectrum"`` observes with noise (the target of
        denoising masked pretraining, `astroclip.pretrain_spectra` with
        ``target="model"``).
    **options
        `astroclip.simulate.SurveyConfig` options (zmax, rmax, image_size, ...).

    Examples
    --------
    >>> from astroclip.simulate import MockSurveyDataset
    >>> ds = MockSurveyDataset(10, seed=0, image_size=32, labels=["Z"])
    >>> item = ds[3]
    >>> int(item["targetid"]), tuple(item["image"].shape), sorted(item)
    (3, (3, 32, 32), ['Z', 'image', 'spectrum', 'spectrum_ivar', 'targetid'])
    """

    def __init__(self, n, *, seed=0, labels=None, split=None, images=True, model_flux=False,
                 **options):
        from .population import population_model
        from .survey import _check_n

        self.n = _check_n(n)
        self.config = SurveyConfig.from_options(seed=seed, **options)
        if labels is None:
            labels = LABEL_NAMES
        elif isinstance(labels, str):
            labels = (labels,)
        unknown = [name for name in labels if name not in LABEL_NAMES]
        if unknown:
            raise ValueError(f"unknown label(s) {unknown}; choose among {list(LABEL_NAMES)}")
        self.labels = tuple(labels)
        self.images = bool(images)
        self.model_flux = bool(model_flux)
        # build the population before DataLoader workers fork, and check the limits
        limits = self.config.limits
        population_model().selection(limits["zmin"], limits["zmax"], limits["rmin"],
                                     limits["rmax"], self.config.continuum)
        if self.config.continuum == "ssp":
            from .ssp import highres_templates

            highres_templates()
        self._index = None
        if split is not None:
            from ..data.hdf5 import split_codes

            code = int(split_codes(split))
            self._index = np.flatnonzero(survey_splits(self.config, self.n) == code)

    def __len__(self):
        return self.n if self._index is None else self._index.size

    def __getitem__(self, i):
        length = len(self)
        if not -length <= i < length:
            raise IndexError(f"index {i} is out of range for a mock survey of {length} galaxies")
        i = int(i) % length
        if self._index is not None:
            i = int(self._index[i])
        arrays, truth = _generate(self.config, i, i + 1, images=self.images,
                                  model_flux=self.model_flux)
        item = {
            "targetid": torch.tensor(int(truth["TARGETID"][0]), dtype=torch.int64),
            "spectrum": torch.from_numpy(arrays["flux"][0]),
            "spectrum_ivar": torch.from_numpy(arrays["ivar"][0]),
        }
        if self.images:
            item["image"] = torch.from_numpy(arrays["image"][0])
        if self.model_flux:
            item["spectrum_model"] = torch.from_numpy(arrays["flux_model"][0])
        for name in self.labels:
            item[name] = torch.tensor(float(truth[name][0]), dtype=torch.float32)
        return item

    def catalog(self):
        """Truth catalogue of all the galaxies of the dataset (no pixels)."""
        from .survey import simulate_catalog

        cat = simulate_catalog(self.n, seed=self.config.seed,
                               **{k: v for k, v in vars(self.config).items() if k != "seed"})
        return cat if self._index is None else cat[self._index]
