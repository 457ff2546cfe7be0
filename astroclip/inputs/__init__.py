"""Astropy/specutils objects -> arrays on the models' grids (no torch models here).

- `astroclip.inputs.grid`: the DESI wavelength grid, bands, units and image
  constants (the one place for them);
- `astroclip.inputs.units`: flux, wavelength and uncertainty unit algebra;
- `astroclip.inputs.resample`: flux-conserving resampling;
- `astroclip.inputs.spectra`: `prepare_spectra` (the spectrum pipeline);
- `astroclip.inputs.images`: `prepare_images`, `color_map`, `center_crop`;
- `astroclip.inputs.desi`: `read_desi_coadd`, `join_redshifts`.

The names below are imported from their modules on first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["grid", "units", "resample", "spectra", "images", "desi"],
    submod_attrs={
        "spectra": ["PreparedSpectra", "prepare_spectra"],
        "images": [
            "PreparedImages", "prepare_images", "color_map", "read_image_file", "normalize_band",
            "center_crop",
        ],
        "desi": ["read_desi_coadd", "join_redshifts"],
        "resample": ["resample_flux_conserving"],
        "units": ["wavelength_angstrom", "flux_factor"],
    },
)
